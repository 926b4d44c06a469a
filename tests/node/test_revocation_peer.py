"""The patient ends a revoked clinician's session by itself (issue #16.1): a revoked clinician
that ignores its revocation (buggy or hostile: it keeps its direct path open and listens)
still stops receiving, because the patient closes the session and tears down the direct
path on `peer-revoked`. The patient refuses it until it joins again with a valid token."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from p2pmed.node import revocation
from signaling.testing import server_process
from tests.node.conftest import start_inproc, start_proc
from tests.node.test_revocation_paths import BOUND_S, _cli, _mint


async def test_patient_cuts_a_revoked_clinician_that_ignores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revocation, "self_revoked", lambda node, message: None)
    data = tmp_path / "data"
    async with server_process(data) as srv:
        ptok = await _mint(srv.url, data, "patient")
        ctok = await _mint(srv.url, data, "clinician")
        patient = await start_proc(ptok["url"], "patient", "--data-dir", str(tmp_path / "p"))
        doc = await start_inproc(ctok["url"], "doc", data_dir=str(tmp_path / "c"))
        doc2 = None
        try:
            cid = doc.node.endpoint_id
            await doc.w.wait_for("path", active="direct")
            await doc.w.wait_count("message", 20, path="direct")
            t_revoke = time.time()
            await _cli("token", "revoke", ctok["jti"], "--data-dir", str(data))
            done = await patient.w.wait_for("revocation-done", peer=cid, timeout=30)
            await doc.w.wait_for("session-closed", timeout=30)  # the patient's CLOSE came
            n = len(doc.w.of("message"))
            await asyncio.sleep(2.0)  # the direct path is gone: nothing more arrives
            assert len(doc.w.of("message")) == n
            last_in = max(e["ts"] for e in doc.w.of("message"))
            print(
                f"\n[ignoring clinician] last message {last_in - t_revoke:+.2f} s after revoke;"
                f" patient closed the session in {done['closed_ms']} ms"
            )
            assert last_in - t_revoke < BOUND_S
            assert patient.w.of("peer", peer=cid, state="revoked")
            await doc.stop()
            # a new valid token, same endpoint id (same data dir): a new join, accepted
            ctok2 = await _mint(srv.url, data, "clinician")
            doc2 = await start_inproc(ctok2["url"], "doc2", data_dir=str(tmp_path / "c"))
            assert doc2.node.endpoint_id == cid
            await doc2.w.wait_count("message", 5)
        finally:
            if doc2 is not None:
                await doc2.stop()
            await doc.stop()
            await patient.stop()
