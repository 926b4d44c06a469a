"""The server's disk fills up (its data dir: audit log, token bindings). A join it cannot
record is refused with `reconnect` (reason store-unavailable), as when Redis is away, not
answered `internal-error` with a traceback; no half-added endpoint stays behind to block
the same endpoint's join once space is back; and the audit log gets no torn line or gap.

Real server on loopback, real tmpfs mounted by the test (root, as CI runs) and filled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signaling import audit
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


def test_an_audit_entry_is_written_whole_or_held(tmp_path: Path) -> None:
    """`record` (a join) writes now or raises; `append` holds what the disk refuses and
    writes it, in order and with its own time, before the next entry once it can."""
    key = Ed25519PrivateKey.generate()
    with small_disk(tmp_path / "disk") as disk:
        path = disk.mount / "audit.log"
        log = AuditLog(path, key, checkpoint_every=3)
        log.append("join", note="before")
        size, seq = path.stat().st_size, log.seq
        disk.fill()
        for _ in range(2):
            with pytest.raises(OSError):
                log.record("join", note="x" * 20000)  # more than the page it ends in
        for i in range(5):  # also past a checkpoint that cannot be written
            log.append("leave", note="y" * 20000, n=i)
        log.checkpoint()
        assert path.stat().st_size == size and log.seq == seq and log.held == 5
        with pytest.raises(OSError):  # not before what is held
            log.record("join", note="small")
        disk.free()
        log.append("join", note="after")
        assert log.held == 0
        log.close()
        res = verify_log(path, key.public_key())
        entries = [json.loads(x) for x in path.read_text().splitlines()]
    assert res.ok, res
    body = [e for e in entries if e["event"] != "checkpoint"]
    assert [(e["event"], e.get("n")) for e in body] == [
        ("join", None),
        *[("leave", i) for i in range(5)],
        ("join", None),
    ]
    times = [e["ts"] for e in body]
    assert times == sorted(times)


def test_audit_entries_over_the_bound_are_counted_as_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "MAX_HELD", 3)
    key = Ed25519PrivateKey.generate()
    with small_disk(tmp_path / "disk") as disk:
        path = disk.mount / "audit.log"
        log = AuditLog(path, key)
        disk.fill()
        for i in range(5):
            log.append("leave", note="y" * 20000, n=i)
        assert log.held == 4  # three entries and the count of those not held
        disk.free()
        log.append("join")
        log.close()
        entries = [json.loads(x) for x in path.read_text().splitlines()]
        assert verify_log(path, key.public_key()).ok
    body = [(e["event"], e.get("n"), e.get("entries")) for e in entries]
    assert body[:5] == [
        ("leave", 0, None),
        ("leave", 1, None),
        ("leave", 2, None),
        ("audit-dropped", None, 2),
        ("join", None, None),
    ]


async def held_metric(http: aiohttp.ClientSession, url: str | None) -> float:
    assert url is not None
    async with http.get(url + "/metrics") as r:
        text = await r.text()
    line = next(x for x in text.splitlines() if x.startswith("p2pmed_audit_held_entries "))
    return float(line.split()[1])


def end_on_a_page(log: AuditLog, path: Path) -> None:
    """Pad the log with entries until it ends on a page boundary (tmpfs: 4 KiB), so that the
    next entry needs a new page (a full tmpfs takes small writes into a page it has)."""
    size = path.stat().st_size
    log.append("test-pad", note="x")
    grown = path.stat().st_size
    need = -grown % 4096
    if need < grown - size:
        need += 4096
    log.append("test-pad", note="x" * (need - (grown - size) + 1))
    assert path.stat().st_size % 4096 == 0


async def test_a_consultation_goes_on_while_the_audit_cannot_be_written(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Relaying, a leave and its notices while the disk is full: nothing of the consultation
    waits for the disk. Their audit entries are held and written, in order, once it can be."""
    with small_disk(tmp_path / "disk") as disk:
        data = disk.mount / "srv"
        async with running_server(data, metrics_port=0) as srv:
            h = Harness(srv, http)
            pat, (doc,) = await h.consult()
            end_on_a_page(srv.hub.audit, data / "audit.jsonl")
            disk.fill()  # no await since: the next entry needs a page the disk does not have
            for i in range(3):  # the first frame of each direction starts a relay pair
                await pat.ws.send_bytes(b"\x04doc0" + bytes([i]) * 40)
                assert await doc.recv_bytes() == b"\x03pat" + bytes([i]) * 40
                await doc.ws.send_bytes(b"\x03pat" + bytes([i]) * 40)
                assert await pat.recv_bytes() == b"\x04doc0" + bytes([i]) * 40
            await pat.send(type="leave")
            assert (await doc.recv_type("peer-left"))["endpoint_id"] == "pat"
            assert srv.hub.audit.held >= 3  # relay-start both ways, the leave
            assert await held_metric(http, srv.metrics_url) == srv.hub.audit.held
            disk.free()
            # the next entry writes what was held before it
            other, _ = await h.join("s2", "clinician", "doc9")
            assert srv.hub.audit.held == 0
            assert await held_metric(http, srv.metrics_url) == 0
            await other.send(type="leave")
        said = [(r.getMessage(), r.levelname) for r in caplog.records]
        assert ("audit-held", "ERROR") in said and ("audit-writable", "WARNING") in said
        path = data / "audit.jsonl"
        entries = [json.loads(x) for x in path.read_text().splitlines()]
        names = [e["event"] for e in entries]
        starts = [i for i, n in enumerate(names) if n == "relay-start"]
        assert len(starts) == 2
        leave = names.index("leave")
        assert starts[1] < leave < names.index("join", leave)  # in the order they happened
        verify = subprocess.run(
            [sys.executable, "-m", "p2pmed", "audit", "verify", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_a_join_the_audit_log_refuses_is_refused_and_leaves_nothing_behind(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join's own audit entry cannot be written (its binding could): the join is
    refused like any store failure, and the endpoint it added is removed again, so the same
    endpoint joins once the log takes entries. (The disk cannot be made to refuse the log
    and take the binding on cue, so the log's refusal is injected here.)"""
    async with running_server(tmp_path / "srv") as srv:
        h = Harness(srv, http)
        doc, _ = await h.join("s1", "clinician", "doc")
        token = srv.mint("s1", "patient")
        real = srv.hub.audit.record

        def refuse(event: str, **fields: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(srv.hub.audit, "record", refuse)
        c = await h.connect()
        await c.send(type="join", token=token, endpoint_id="pat")
        got = await c.recv()
        assert got["type"] == "reconnect" and got["reason"] == "store-unavailable", got
        assert srv.hub.endpoint("s1", "pat") is None
        monkeypatch.setattr(srv.hub.audit, "record", real)
        _, joined = await h.join("s1", "patient", "pat", token=token)
        assert joined["endpoint_id"] == "pat"
        assert (await doc.recv_type("peer-waiting"))["endpoint_id"] == "pat"
