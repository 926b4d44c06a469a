"""The signed audit head: a log cut back to a signed checkpoint, or with its tail deleted,
no longer verifies, and the server refuses to start on it (real processes)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signaling.audit import AuditError, AuditLog, verify_log
from signaling.audithead import read_head
from signaling.testing import free_port, server_process, start_process
from tests.security.test_sec_token_reuse import _mint
from tests.signaling.conftest import Client, settle
from tests.signaling.test_cli import cli

KEY = Ed25519PrivateKey.generate()


def write_log(path: Path, n: int = 10, every: int = 4) -> None:
    log = AuditLog(path, KEY, checkpoint_every=every)
    for i in range(n):
        log.append("join", session="s1", endpoint_id=f"e{i}", role="clinician")
    log.close()


def keep_lines(path: Path, n: int) -> None:
    path.write_text("\n".join(path.read_text().splitlines()[:n]) + "\n")


def last_checkpoint_before_end(path: Path) -> int:
    events = [json.loads(x)["event"] for x in path.read_text().splitlines()]
    return max(i for i, e in enumerate(events[:-1], start=1) if e == "checkpoint")


def test_truncation_to_a_checkpoint_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p)  # 13 entries, checkpoints at 5, 10 and 13 (close)
    head = read_head(tmp_path / "audit.head", KEY.public_key())
    assert head is not None and head.seq == 13
    keep_lines(p, 10)
    # the chain alone cannot tell: it ends on a good signed checkpoint
    assert verify_log(p, KEY.public_key()).ok
    res = verify_log(p, KEY.public_key(), head=head)
    assert not res.ok and "truncated" in res.problem and "13" in res.problem
    with pytest.raises(AuditError, match="truncated"):
        AuditLog(p, KEY)


def test_deleted_tail_and_edit_detected(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    log = AuditLog(p, KEY, checkpoint_every=100)
    for i in range(6):
        log.append("join", endpoint_id=f"e{i}")
    pos = log.position()
    log.store_head(pos[0], log.head_bytes(pos) or b"")  # as the sweeper does
    head = read_head(log.head_path, KEY.public_key())
    assert head is not None and head.seq == 6
    keep_lines(p, 4)  # the last two entries deleted (a crashed server's unsigned tail)
    res = verify_log(p, KEY.public_key(), allow_unsigned_tail=True, head=head)
    assert not res.ok and "truncated" in res.problem
    with pytest.raises(AuditError, match="truncated"):
        AuditLog(p, KEY)
    # the head's own entry rewritten (hash recomputed so the tail looks consistent)
    write_log(q := tmp_path / "b.jsonl", n=3, every=100)
    lines = q.read_text().splitlines()
    from signaling.audit import entry_hash

    last = json.loads(lines[-1])
    last["entries"] = 99
    del last["sig"]
    last["hash"] = entry_hash(last)
    q.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    with pytest.raises(AuditError, match="rewritten"):
        AuditLog(q, KEY)
    # a forged head (not signed by the audit key) is refused too
    h = json.loads((tmp_path / "b.head").read_text())
    h["seq"] = 1
    (tmp_path / "b.head").write_text(json.dumps(h))
    with pytest.raises(AuditError, match="signature"):
        AuditLog(q, KEY)


async def test_server_refuses_truncated_log_and_verify_fails(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = data / "audit.jsonl"
    async with aiohttp.ClientSession() as http:
        async with server_process(data) as srv:  # a first run: its stop is signed
            assert await srv.stop() == 0
        mport = free_port()
        env = {"P2PMED_LOG_LEVEL": "warning", "P2PMED_METRICS_PORT": str(mport)}
        async with server_process(data, env=env) as srv:
            c = Client(await http.ws_connect(srv.ws_url))
            await c.send(type="join", token=_mint(data, "s1", "clinician"), endpoint_id="d")
            await c.recv_type("joined")

            async def head_seq() -> float:
                async with http.get(f"http://127.0.0.1:{mport}/metrics") as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith("p2pmed_audit_head_seq "):
                            return float(line.split()[1])
                return 0.0

            seen = [0.0]

            async def poll() -> bool:
                seen[0] = await head_seq()
                return seen[0] >= 2  # start, session-start, join...

            for _ in range(400):  # the head is written about once a second
                if await poll():
                    break
                await asyncio.sleep(0.05)
            assert seen[0] >= 2
            assert await srv.stop() == 0
        r = cli("audit", "verify", str(log))
        assert r.returncode == 0 and "signed head" in r.stdout, r.stderr
        saved = tmp_path / "saved.jsonl"
        shutil.copy(log, saved)
        keep_lines(log, last_checkpoint_before_end(log))  # cut back to a signed checkpoint
        r = cli("audit", "verify", str(log))
        assert r.returncode == 1 and "truncated" in r.stderr, (r.stdout, r.stderr)
        r = cli("audit", "verify", str(log), "--head", str(data / "audit.head"))
        assert r.returncode == 1 and "truncated" in r.stderr
        proc, log_path, _ = await start_process(data)
        assert await proc.wait() == 2
        err = log_path.read_text()
        assert "truncated" in err and "Traceback" not in err and len(err.splitlines()) == 1
        # what the head cannot see: the log cut and an older (genuine) head put back.
        # The metric's value recorded elsewhere still catches it (--min-seq).
        shutil.copy(saved, log)
        n = len(saved.read_text().splitlines())
        r = cli("audit", "verify", str(log), "--min-seq", str(n))
        assert r.returncode == 0, r.stderr
        r = cli("audit", "verify", str(log), "--min-seq", str(n + 1))
        assert r.returncode == 1 and "--min-seq" in r.stderr


async def test_sigkill_leaves_a_startable_log(tmp_path: Path) -> None:
    # the head only names entries already fsynced, so a crash never looks like truncation
    data = tmp_path / "data"
    async with aiohttp.ClientSession() as http:
        async with server_process(data) as srv:
            for i in range(3):
                c = Client(await http.ws_connect(srv.ws_url))
                await c.send(type="join", token=_mint(data, "s1", "observer"), endpoint_id=f"o{i}")
                await c.recv_type("joined")
            await settle(lambda: (data / "audit.head").exists())
            await srv.stop(signal.SIGKILL)
        async with server_process(data) as srv:
            assert await srv.stop() == 0
    r = cli("audit", "verify", str(data / "audit.jsonl"))
    assert r.returncode == 0, r.stderr


async def test_missing_head_is_a_warning(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p)
    (tmp_path / "audit.head").unlink()
    (tmp_path / "audit-key.pub").write_bytes(
        __import__("signaling.keys", fromlist=["public_pem"]).public_pem(KEY.public_key())
    )
    r = cli("audit", "verify", str(p))
    assert r.returncode == 0 and "truncation not checked" in r.stderr
    r = cli("audit", "verify", str(p), "--head", str(tmp_path / "nope.head"))
    assert r.returncode == 2 and "no such file" in r.stderr
    log = AuditLog(p, KEY)
    assert log.head_missing
    log.close()
    assert read_head(tmp_path / "audit.head", KEY.public_key()) is not None
