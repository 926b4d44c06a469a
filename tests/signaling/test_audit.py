"""Audit log: hash chain, signed checkpoints, tamper detection naming the line, restarts."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signaling.audit import AuditError, AuditLog, verify_log
from signaling.audithead import head_path
from signaling.testing import running_server
from tests.signaling.conftest import Harness

KEY = Ed25519PrivateKey.generate()


def write_log(path: Path, n: int = 10, every: int = 4) -> None:
    log = AuditLog(path, KEY, checkpoint_every=every)
    for i in range(n):
        log.append("join", session="s1", endpoint_id=f"e{i}", role="clinician")
    log.close()


def edit_line(path: Path, line_no: int, **changes: object) -> None:
    lines = path.read_text().splitlines()
    entry = json.loads(lines[line_no - 1])
    entry.update(changes)
    lines[line_no - 1] = json.dumps(entry, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")


def test_chain_and_checkpoints_verify(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p)
    res = verify_log(p, KEY.public_key())
    assert res.ok and res.lines == 13 and res.checkpoints == 3  # 2 periodic + 1 at close
    entries = [json.loads(x) for x in p.read_text().splitlines()]
    assert [e["seq"] for e in entries] == list(range(1, 14))
    assert all(e["prev"] == entries[i - 1]["hash"] for i, e in enumerate(entries) if i)
    assert entries[-1]["event"] == "checkpoint" and "sig" in entries[-1]


def test_tampered_middle_line_named(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p)
    edit_line(p, 6, endpoint_id="mallory")
    res = verify_log(p, KEY.public_key())
    assert not res.ok and res.bad_line == 6 and "altered" in res.problem


def test_line_nested_too_deep_named(tmp_path: Path) -> None:
    """A line no JSON decoder can read (nested deeper than it recurses) is named, as any
    line that is not JSON; the server refuses to continue such a log, and its signed head
    rewritten that way is refused too."""
    p = tmp_path / "audit.jsonl"
    write_log(p)
    lines = p.read_text().splitlines()
    deep = "[" * 60_000 + "]" * 60_000
    p.write_text("\n".join([*lines[:5], deep, *lines[6:]]) + "\n")
    res = verify_log(p, KEY.public_key())
    assert not res.ok and res.bad_line == 6 and "not valid JSON" in res.problem
    p.write_text("\n".join([*lines, deep]) + "\n")
    with pytest.raises(AuditError, match="not an audit entry"):
        AuditLog(p, KEY)
    p.write_text("\n".join(lines) + "\n")
    head = tmp_path / "audit.head"
    assert head_path(p) == head and head.exists()
    head.write_text(deep)
    with pytest.raises(AuditError, match="not an audit head"):
        AuditLog(p, KEY)


def test_tampered_line_with_recomputed_hash_named(tmp_path: Path) -> None:
    from signaling.audit import entry_hash

    p = tmp_path / "audit.jsonl"
    write_log(p)
    lines = p.read_text().splitlines()
    e = json.loads(lines[6])
    e["role"] = "observer"
    e["hash"] = entry_hash(e)
    lines[6] = json.dumps(e)
    p.write_text("\n".join(lines) + "\n")
    res = verify_log(p, KEY.public_key())
    assert not res.ok and res.bad_line == 8 and "chain" in res.problem


def test_tampered_last_line_named(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p)
    edit_line(p, 13, entries=99)
    res = verify_log(p, KEY.public_key())
    assert not res.ok and res.bad_line == 13


def test_deleted_and_truncated_lines(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p)
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    res = verify_log(p, KEY.public_key())
    assert not res.ok and res.bad_line == 4 and "seq" in res.problem
    write_log(p2 := tmp_path / "b.jsonl")
    p2.write_text(p2.read_text()[:-20])
    res = verify_log(p2, KEY.public_key())
    assert not res.ok and res.bad_line == 13


def test_other_key_and_unsigned_tail(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p)
    res = verify_log(p, Ed25519PrivateKey.generate().public_key())
    assert not res.ok and res.bad_line == 5 and "signature" in res.problem
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:-1]) + "\n")  # as if the server were still running
    res = verify_log(p, KEY.public_key())
    assert not res.ok and res.bad_line == 11 and "checkpoint" in res.problem
    assert verify_log(p, KEY.public_key(), allow_unsigned_tail=True).ok


def test_log_refuses_to_resume_after_torn_write(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p)
    p.write_text(p.read_text()[:-5])
    with pytest.raises(AuditError):
        AuditLog(p, KEY)


async def test_restart_keeps_revocations_and_continues_chain(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    from signaling.keys import load_public

    data = tmp_path / "data"
    async with running_server(data) as srv:
        _doc, _ = await Harness(srv, http).join("s1", "clinician", "doc")
        token = srv.mint("s1", "clinician", jti="gone", ttl=3600)
        srv.revoke("gone")
        kept = srv.mint("s1", "observer", ttl=3600)
    first = (data / "audit.jsonl").read_text().splitlines()
    async with running_server(data) as srv:
        h = Harness(srv, http)
        c = await h.connect()
        await c.send(type="join", token=token, endpoint_id="x")
        code, seen = await c.closed()
        assert code == 4401 and seen[-1]["code"] == "token-revoked"
        await h.join("s1", "observer", "obs", token=kept)  # the signing key survived too
    lines = (data / "audit.jsonl").read_text().splitlines()
    assert lines[: len(first)] == first
    assert json.loads(lines[len(first)])["prev"] == json.loads(first[-1])["hash"]
    res = verify_log(data / "audit.jsonl", load_public(data / "audit-key.pub"))
    assert res.ok, res
    events = [json.loads(x)["event"] for x in lines]
    assert events.count("start") == 2 and events.count("stop") == 2
    assert "join" in events and "reject" in events and "shutdown" in events
