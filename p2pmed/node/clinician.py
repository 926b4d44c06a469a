"""Clinician (and observer) role: receive vitals, show them, export FHIR, acknowledge alarms."""

from __future__ import annotations

import json
import logging
import sys
import time
import zlib
from collections import deque
from typing import IO, TYPE_CHECKING, Any

from p2pmed.core import events as ev
from p2pmed.core.errors import ProtocolError
from p2pmed.core.frame import MessageClass
from p2pmed.node.patient import summary
from p2pmed.vitals import codec, fhir, status
from p2pmed.vitals.codec import Alarm, AlarmAck, AlarmState, Message, Numerics, Waveform
from p2pmed.vitals.status import PatientStatus, Stream

if TYPE_CHECKING:
    from p2pmed.node.node import Node
    from p2pmed.node.peer import PeerLink

log = logging.getLogger("p2pmed.node.clinician")

TRACE_SECONDS = 4.0
UNIDENTIFIED = "unidentified patient"


def label_of(st: PatientStatus | None) -> str:
    return st.label if st is not None and st.label else UNIDENTIFIED


class ClinicianApp:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.numerics: Numerics | None = None
        self.trace: deque[float] = deque(maxlen=2000)
        self.trace_signal = ""
        self.alarms: dict[int, Alarm] = {}  # open alarms by id
        self.acked: dict[int, str] = {}  # alarm id -> who acknowledged
        self.status: dict[str, PatientStatus] = {}  # patient endpoint id -> its last status
        self.waiting: list[str] = []
        self._admit_sent: set[str] = set()  # per signaling connection: admit once
        self.last_seq: dict[str, int] = {}  # waveform signal -> next expected sample seq
        self.gaps = 0
        self.received = 0
        self._fhir: IO[str] | None = None
        self._ui: Any = None
        out = node.config.fhir_out
        if out == "-":
            self._fhir = sys.stdout
        elif out:
            self._fhir = open(out, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the app

    # ---- App protocol ----
    def on_joined(self) -> None:
        if self.node.config.ui:
            from p2pmed.ui import TerminalUI

            self._ui = TerminalUI(self)

    def on_peer_waiting(self, peer_id: str, role: str) -> None:
        self.node.events.emit("peer-waiting", peer=peer_id, role=role)
        if self.node.role != "clinician":
            return
        if self.node.config.auto_admit:
            self.admit(peer_id)
        elif peer_id not in self.waiting:
            self.waiting.append(peer_id)

    def on_peer_left(self, peer_id: str) -> None:
        # the server forgets the admission with the endpoint: when it joins again (a patient
        # node stopped and started), it waits to be admitted again
        self._admit_sent.discard(peer_id)
        if peer_id in self.waiting:
            self.waiting.remove(peer_id)

    def on_signaling(self, up: bool) -> None:
        if not up:
            self._admit_sent.clear()  # a restarted server has forgotten every admission

    def admit(self, peer_id: str) -> None:
        if peer_id in self.waiting:
            self.waiting.remove(peer_id)
        if peer_id in self._admit_sent:
            return
        self._admit_sent.add(peer_id)
        self.node.signaling.send_json({"type": "admit", "endpoint_id": peer_id})
        self.node.events.emit("admit", peer=peer_id)

    def on_established(self, link: PeerLink) -> None:
        return None

    def on_message(self, link: PeerLink, event: ev.MessageReceived) -> None:
        msg: Message | PatientStatus
        try:
            if status.is_status(event.data):  # CONTROL command the codec does not know yet
                msg = status.decode(event.data)
            else:
                msg = codec.decode(event.data)
        except ProtocolError as exc:
            self.node.on_app_rejected(link, exc)
            return
        self.received += 1
        now = time.time()
        info = summary(msg)
        if isinstance(msg, Numerics):
            st = self.status.get(link.peer_id)
            info["hr_source"] = st.hr_source or None if st is not None else None
        if self.node.events.json_out or self.node.events.listeners:
            self.node.events.emit(
                "message",
                peer=link.peer_id,
                id=event.message_id,
                cls=event.cls.name,
                seq=event.seq,
                path=event.path_id,
                len=len(event.data),
                crc=zlib.crc32(event.data),
                latency_ms=round((now - event.sent_timestamp_us / 1e6) * 1000, 3),
                replayed=event.path_id == "store",
                **info,
            )
        if isinstance(msg, PatientStatus):
            self._on_status(link, msg)
        elif isinstance(msg, Numerics):
            self.numerics = msg
            self._export(fhir.numerics_to_observations(msg))
        elif isinstance(msg, Waveform):
            expected = self.last_seq.get(msg.signal)
            if expected is not None and msg.first_seq != expected:
                self.gaps += 1
                self.node.events.emit(
                    "waveform-gap", signal=msg.signal, expected=expected, got=msg.first_seq
                )
            self.last_seq[msg.signal] = msg.seq_end()
            if msg.signal != "PLETH":
                self.trace_signal = msg.signal
                self.trace.extend(s * msg.scale for s in msg.samples)
            self._export([fhir.waveform_to_observation(msg, link.peer_id)])
        elif isinstance(msg, Alarm):
            if msg.state is AlarmState.CLEARED:
                self.alarms.pop(msg.alarm_id, None)
            else:
                self.alarms[msg.alarm_id] = msg
            self.node.events.emit(
                "alarm",
                peer=link.peer_id,
                alarm_id=msg.alarm_id,
                condition=msg.condition,
                priority=msg.priority.name,
                state=msg.state.name,
                category=msg.category.name,
                value=msg.value,
                latency_ms=round((now - event.sent_timestamp_us / 1e6) * 1000, 3),
            )
            if self._ui is not None:
                self._ui.bell()
        elif isinstance(msg, AlarmAck):  # another clinician acknowledged
            self.acked[msg.alarm_id] = msg.who
            self.node.events.emit("alarm-acked-elsewhere", alarm_id=msg.alarm_id, by=msg.who)

    def _on_status(self, link: PeerLink, st: PatientStatus) -> None:
        before = self.status.get(link.peer_id)
        self.status[link.peer_id] = st
        self.node.events.emit(
            "patient-status",
            peer=link.peer_id,
            label=st.label or None,
            shown_as=label_of(st),
            stream=st.stream.name,
            hr_source=st.hr_source or None,
            subject=st.subject or None,
        )
        if st.stream is Stream.ENDED and (before is None or before.stream is not Stream.ENDED):
            # the recording is over; the link is still up (a lost link is a "path"/"closed")
            self.node.events.emit("stream-ended", peer=link.peer_id, label=label_of(st))
            if self._ui is not None:
                self._ui.bell()

    def _export(self, observations: list[dict[str, Any]]) -> None:
        if self._fhir is None:
            return
        for obs in observations:
            self._fhir.write(json.dumps(obs, separators=(",", ":")) + "\n")
        self._fhir.flush()

    def acknowledge(self, alarm_id: int | None = None) -> int:
        """Send ALARM_ACK for one alarm (or every unacknowledged open alarm); returns how many."""
        if self.node.role != "clinician":
            return 0
        ids = (
            [alarm_id] if alarm_id is not None else [a for a in self.alarms if a not in self.acked]
        )
        count = 0
        for aid in ids:
            for link in self.node.peers.values():
                if link.established:
                    ack = AlarmAck(aid, int(time.time() * 1e6), self.node.endpoint_id)
                    link.send(MessageClass.CRITICAL, codec.encode(ack))
                    self.acked[aid] = self.node.endpoint_id
                    self.node.events.emit("ack-sent", peer=link.peer_id, alarm_id=aid)
                    count += 1
        return count

    def on_acked(self, link: PeerLink, event: ev.MessageAcked) -> None:
        return None

    def on_closed(self, link: PeerLink) -> None:
        return None

    def command(self, cmd: dict[str, Any]) -> None:
        name = cmd.get("cmd")
        if name == "ack":
            aid = cmd.get("alarm_id")
            self.acknowledge(int(aid) if isinstance(aid, int) else None)
        elif name == "admit-all":
            for peer in list(self.waiting):
                self.admit(peer)

    async def run(self) -> None:
        if self._ui is not None:
            await self._ui.run()

    async def close(self) -> None:
        if self._ui is not None:
            self._ui.restore()
        if self._fhir is not None and self._fhir is not sys.stdout:
            self._fhir.close()
