"""A revoked node exits on purpose (EXIT_REVOKED): its paths going away on the way out (the
server removed the relay, the patient tore the direct path down) raise no technical alarm."""

from __future__ import annotations

import asyncio
from pathlib import Path

from p2pmed.node.revocation import EXIT_REVOKED
from signaling.testing import server_process
from tests.node.conftest import start_proc
from tests.node.test_revocation_paths import _cli, _mint


async def test_revoked_clinician_raises_no_path_alarm_while_exiting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with server_process(data) as srv:
        ptok = await _mint(srv.url, data, "patient")
        ctok = await _mint(srv.url, data, "clinician")
        patient = await start_proc(ptok["url"], "patient", "--data-dir", str(tmp_path / "p"))
        clinician = await start_proc(ctok["url"], "clinician", "--data-dir", str(tmp_path / "c"))
        try:
            await clinician.w.wait_for("path", active="direct")
            await clinician.w.wait_count("message", 20, path="direct")
            await _cli("token", "revoke", ctok["jti"], "--data-dir", str(data))
            code = await asyncio.wait_for(clinician.proc.wait(), 30)
            await clinician.stop()  # collects its output
            assert code == EXIT_REVOKED, clinician.stderr.decode()[-2000:]
        finally:
            await clinician.stop()
            await patient.stop()
    revoked = clinician.w.events.index(clinician.w.of("revoked")[0])
    after = clinician.w.events[revoked:]
    assert not [e for e in after if e["event"] == "technical-alarm"], after
