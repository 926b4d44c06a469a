"""Run `p2pmed node ...` with timestamps at each stage of the device path (an experiment
harness, not the product): bench/device_bench.py --stages starts its patient and clinician
nodes through this file instead of `python -m p2pmed`.

    DEVICE_STAGES_OUT=out.json python bench/device_stages.py node ...

Patches, in this process only, and writes at exit one JSON document (times are time.time()
seconds, comparable across processes on one machine):

    patient    one row per device batch: [key, read, batch, commit0, commit1, tx, ack, end,
               parsed]
               key = the batch's first metric time (us; device_bench's OBX-14 names its
               message), read = the MLLP frame read (before the parse), batch = the patient
               node starts mapping it, commit0/1 = the first group commit in the batch's
               work (start, end: the WAL write and its fsync), tx = the
               first frame handed to a transport, ack = the HL7 ACK ready to write (after the
               batch is durable), end = the batch's mapping and sending returned, parsed =
               python-hl7 returned the (last) message's parse tree (before p2pmed maps it)
    clinician  one row per NUMERICS: [key, frame, message]: frame = the last DATA frame
               handed to the session driver before it, message = ClinicianApp.on_message
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT: dict[str, list[Any]] = {"patient": [], "clinician": []}
_now = time.time
_state: dict[str, Any] = {"read": None, "batch": None, "last_frame": None}
_pending: list[list[Any]] = []  # patient rows whose ACK time may come after the batch


def _patch() -> None:
    from p2pmed.devices import hl7
    from p2pmed.devices import reading as rd
    from p2pmed.node import clinician, driver, patient, peer, persist
    from p2pmed.vitals.codec import Numerics

    orig_handle = hl7.Hl7Source._handle
    orig_parse = hl7.parse_hl7

    def parse_hl7(text: str) -> Any:
        out = orig_parse(text)
        _state["read"][2] = _now()
        return out

    hl7.parse_hl7 = parse_hl7

    async def handle(self: Any, raw: bytes) -> Any:
        read = _state["read"] = [_now(), None, None]  # [read, ACK ready to write, parsed]
        out = await orig_handle(self, raw)
        read[1] = _now()
        return out

    hl7.Hl7Source._handle = handle  # type: ignore[method-assign]

    orig_batch = patient.PatientApp._device_batch

    def device_batch(self: Any, batch: list[Any]) -> None:
        key = next((r.time_us for r in batch if isinstance(r, rd.Metric)), None)
        row = [key, _state["read"], _now(), None, None, None, None, None, None]
        _state["batch"] = row
        try:
            orig_batch(self, batch)
        finally:
            row[7] = _now()
            if key is not None:
                _pending.append(row)

    patient.PatientApp._device_batch = device_batch  # type: ignore[method-assign]

    orig_flush = persist.GroupCommit.flush

    def flush(self: Any, *a: Any, **kw: Any) -> Any:
        t0 = _now()
        out = orig_flush(self, *a, **kw)
        row = _state["batch"]
        if row is not None and row[3] is None and row[7] is None:
            row[3], row[4] = t0, _now()
        return out

    persist.GroupCommit.flush = flush  # type: ignore[method-assign]

    orig_tx = peer.PeerLink.transmit

    def transmit(self: Any, path_id: str, frame: bytes) -> None:
        row = _state["batch"]
        if row is not None and row[5] is None and len(frame) > 1 and frame[1] == 1:
            row[5] = _now()
        orig_tx(self, path_id, frame)

    peer.PeerLink.transmit = transmit  # type: ignore[method-assign]

    orig_recv = driver.SessionDriver.receive

    def receive(self: Any, frame: bytes, path_id: str) -> None:
        _state["last_frame"] = _now()
        orig_recv(self, frame, path_id)

    driver.SessionDriver.receive = receive  # type: ignore[method-assign]

    orig_msg = clinician.ClinicianApp.on_message

    def on_message(self: Any, link: Any, event: Any) -> None:
        t = _now()
        orig_msg(self, link, event)
        if isinstance(self.numerics, Numerics) and self.numerics is not _state.get("seen"):
            _state["seen"] = self.numerics
            OUT["clinician"].append([self.numerics.timestamp_us, _state["last_frame"], t])

    clinician.ClinicianApp.on_message = on_message  # type: ignore[method-assign]


def _dump() -> None:
    for row in _pending:
        if isinstance(row[1], list):
            row[1], row[6], row[8] = row[1]
    OUT["patient"] = _pending
    path = os.environ.get("DEVICE_STAGES_OUT")
    if path:
        Path(path).write_text(json.dumps(OUT))


if __name__ == "__main__":
    _patch()
    atexit.register(_dump)
    from p2pmed.cli import main

    sys.exit(main(sys.argv[1:]))
