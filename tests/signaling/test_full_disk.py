"""The server's disk fills up (its data dir: audit log, token bindings). A join it cannot
record is refused with `reconnect` (reason store-unavailable), as when Redis is away, not
answered `internal-error` with a traceback; no half-added endpoint stays behind to block
the same endpoint's join once space is back; and the audit log gets no torn line or gap.

Real server on loopback, real tmpfs mounted by the test (root, as CI runs) and filled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signaling.audit import AuditLog, verify_log
from signaling.testing import running_server
from tests.signaling.conftest import Harness
from tests.smalldisk import small_disk


async def test_joins_refused_while_full_then_the_same_endpoint_joins(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        data = disk.mount / "srv"
        async with running_server(data) as srv:
            h = Harness(srv, http)
            doc, _ = await h.join("s1", "clinician", "doc")
            token = srv.mint("s1", "patient")
            disk.fill()
            for _ in range(3):
                c = await h.connect()
                await c.send(type="join", token=token, endpoint_id="pat")
                got = await c.recv()
                assert got["type"] == "reconnect", got
                assert got["reason"] == "store-unavailable"
            disk.free()
            _, joined = await h.join("s1", "patient", "pat", token=token)
            assert joined["endpoint_id"] == "pat"
            assert (await doc.recv_type("peer-waiting"))["endpoint_id"] == "pat"
        verify = subprocess.run(
            [sys.executable, "-m", "p2pmed", "audit", "verify", str(data / "audit.jsonl")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_audit_entry_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    with small_disk(tmp_path / "disk") as disk:
        path = disk.mount / "audit.log"
        log = AuditLog(path, key, checkpoint_every=3)
        log.append("join", note="before")
        size, seq = path.stat().st_size, log.seq
        disk.fill()
        for _ in range(5):  # also past a checkpoint that cannot be written
            with pytest.raises(OSError):
                log.append("join", note="x" * 20000)  # more than the page it ends in
        assert path.stat().st_size == size and log.seq == seq
        disk.free()
        for i in range(4):
            log.append("join", note=f"after {i}")
        log.close()
        res = verify_log(path, key.public_key())
    assert res.ok, res
    assert res.checkpoints >= 1 and res.lines == seq + 4 + res.checkpoints
