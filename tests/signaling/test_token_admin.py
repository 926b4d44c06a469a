"""`p2pmed token revoke` says whether an id was ever issued; `token list --session` and
`token revoke --session` work on what the data dir knows (real server, real CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from signaling.testing import running_server
from signaling.tokens import REVOCATIONS, RevocationStore
from tests.signaling.conftest import Harness
from tests.signaling.test_cli import cli


def mint(data: Path, session: str, role: str) -> dict[str, str]:
    r = cli(
        "token",
        "--server",
        "http://127.0.0.1:1",
        "--data-dir",
        str(data),
        "--session",
        session,
        "--role",
        role,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def revoked(data: Path, jti: str) -> bool:
    store = RevocationStore(data / REVOCATIONS)
    try:
        return store.is_revoked(jti)
    finally:
        store.close()


def token_list(data: Path, session: str) -> list[dict[str, object]]:
    r = cli("token", "list", "--session", session, "--data-dir", str(data), "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(x) for x in r.stdout.splitlines()]


async def test_revoke_says_whether_issued(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    data = tmp_path / "data"
    async with running_server(data) as srv:
        r = cli("token", "revoke", "deadbeef", "--data-dir", str(data))
        assert r.returncode == 2 and "no token deadbeef was issued" in r.stderr, r.stderr
        assert not revoked(data, "deadbeef")
        r = cli("token", "revoke", "deadbeef", "--force", "--data-dir", str(data))
        assert r.returncode == 0 and "never issued" in r.stdout and revoked(data, "deadbeef")
        t = mint(data, "s1", "patient")
        r = cli("token", "revoke", t["jti"], "--data-dir", str(data))
        assert r.returncode == 0 and f"revoked {t['jti']} (session s1, patient)" in r.stdout
        # minted without being recorded (an older version, or a test helper): known once
        # it has joined, from the audit log
        old = srv.mint("s1", "clinician", jti="old-jti")
        await Harness(srv, http).join("s1", "clinician", "doc", token=old)
        r = cli("token", "revoke", "old-jti", "--data-dir", str(data))
        assert r.returncode == 0 and "seen joining in the audit log" in r.stdout, r.stdout
        for args in (["x", "--session", "s1"], []):
            r = cli("token", "revoke", *args, "--data-dir", str(data))
            assert r.returncode == 2 and "not both" in r.stderr
        # a session id left in the environment never means "revoke the whole session"
        r = cli("token", "revoke", "--data-dir", str(data), env={"P2PMED_SESSION": "s1"})
        assert r.returncode == 2


async def test_list_and_revoke_by_session(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    data = tmp_path / "data"
    async with running_server(data) as srv:
        pat = mint(data, "s1", "patient")
        doc = mint(data, "s1", "clinician")
        other = mint(data, "s2", "clinician")
        h = Harness(srv, http)
        c, _ = await h.join("s1", "clinician", "doc-1", token=doc["token"])
        rows = {r["jti"]: r for r in token_list(data, "s1")}
        assert set(rows) == {pat["jti"], doc["jti"]}
        assert rows[doc["jti"]]["endpoint"] == "doc-1" and rows[doc["jti"]]["role"] == "clinician"
        assert rows[pat["jti"]]["endpoint"] is None
        assert {r["status"] for r in rows.values()} == {"active"}
        r = cli("token", "list", "--session", "s1", "--data-dir", str(data))
        assert r.returncode == 0 and "endpoint doc-1" in r.stdout
        r = cli("token", "revoke", "--session", "s1", "--data-dir", str(data))
        assert r.returncode == 0 and "session s1: 2 revoked, 0 already revoked" in r.stdout
        code, _ = await c.closed()  # the running server closes the connected endpoint
        assert code == 4410
        assert {r["status"] for r in token_list(data, "s1")} == {"revoked"}
        assert [r["status"] for r in token_list(data, "s2")] == ["active"]
        assert not revoked(data, other["jti"])
        r = cli("token", "revoke", "--session", "nobody", "--data-dir", str(data))
        assert r.returncode == 2 and "no tokens were issued for session nobody" in r.stderr
        r = cli("token", "list", "--session", "bad id", "--data-dir", str(data))
        assert r.returncode == 2 and "session must be" in r.stderr


async def test_revoke_by_session_reads_past_a_damaged_audit_line(tmp_path: Path) -> None:
    """`token revoke --session` in an incident must not stop at a damaged audit log: a line
    nested deeper than the JSON decoder recurses, or JSON that is not an object (each names
    the session and a join, so the lookup reads it) is skipped like any line that is not
    JSON, and the session's tokens are revoked. Before: a traceback, nothing revoked."""
    data = tmp_path / "data"
    async with running_server(data):  # makes the data dir and its token key
        pat = mint(data, "s1", "patient")
        doc = mint(data, "s1", "clinician")
    deep = '{"event":"join","session":"s1","x":' + "[" * 60_000 + "]" * 60_000 + "}"
    listed = '[{"event":"join","session":"s1","jti":"x"}]'  # JSON, not an entry
    with (data / "audit.jsonl").open("a") as f:
        f.write(deep + "\n" + listed + "\n")
    r = cli("token", "revoke", "--session", "s1", "--data-dir", str(data))
    assert r.returncode == 0 and "session s1: 2 revoked" in r.stdout, r.stderr[-2000:]
    assert revoked(data, pat["jti"]) and revoked(data, doc["jti"])
    r = cli("token", "list", "--session", "s1", "--data-dir", str(data))
    assert r.returncode == 0 and "Traceback" not in r.stderr
