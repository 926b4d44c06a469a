"""Every refused join or upgrade: clear error, close code, audit entry and metric."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import aiohttp
import pytest

from signaling.testing import RunningServer
from signaling.tokens import mint
from tests.signaling.conftest import Harness, settle


def audit_events(srv: RunningServer) -> list[dict[str, object]]:
    path = srv.config.data_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def refused(h: Harness, msg: dict[str, object]) -> tuple[int | None, dict[str, object]]:
    c = await h.connect()
    await c.ws.send_str(json.dumps(msg))
    code, seen = await c.closed()
    assert seen and seen[-1]["type"] == "error"
    return code, seen[-1]


def forged(srv: RunningServer) -> str:
    token, _ = mint(
        os.urandom(32),
        session="s1",
        role="clinician",
        ttl=60,
        issuer=srv.config.issuer,
        audience=srv.config.audience,
    )
    return token


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: "garbage", "token-malformed"),
        (lambda s: s.mint("s1", "clinician", now=time.time() - 7200, ttl=60), "token-expired"),
        (lambda s: s.mint("s1", "clinician", now=time.time() + 600), "token-not-yet-valid"),
        (forged, "token-signature"),
    ],
)
async def test_bad_tokens_refused(h: Harness, make: object, reason: str) -> None:
    token = make(h.srv)  # type: ignore[operator]
    code, err = await refused(h, {"type": "join", "token": token, "endpoint_id": "e1"})
    assert err["code"] == reason
    assert code == 4401
    assert h.srv.metric("p2pmed_rejected_joins_total", reason=reason) == 1
    ev = audit_events(h.srv)[-1]
    assert ev["event"] == "reject" and ev["reason"] == reason
    assert not await h.srv.hub.store.has_session("s1")


async def test_missing_token_field(h: Harness) -> None:
    c = await h.connect()
    await c.send(type="join", endpoint_id="e1")
    err = await c.recv()
    assert err["code"] == "bad-message" and "must contain ['token']" in err["message"]
    await c.send(type="join", token="", endpoint_id="e1")
    err = await c.recv()
    assert err["code"] == "bad-message" and "token" in err["message"]


async def test_revoked_token_refused_by_running_server(h: Harness) -> None:
    token = h.srv.mint("s1", "clinician", jti="jti-revoke-me")
    h.srv.revoke("jti-revoke-me")  # a separate connection to the store, as the CLI does
    code, err = await refused(h, {"type": "join", "token": token, "endpoint_id": "e1"})
    assert (code, err["code"]) == (4401, "token-revoked")
    assert h.srv.metric("p2pmed_rejected_joins_total", reason="token-revoked") == 1


async def test_revocation_kicks_connected_endpoint(h: Harness) -> None:
    pat, (doc,) = await h.consult()
    member = await h.srv.hub.store.member("s1", "doc0")
    assert member is not None
    h.srv.revoke(member.jti)
    code, seen = await doc.closed()
    assert code == 4410 and seen[-1]["code"] == "token-revoked"
    assert await pat.recv_type("peer-left") == {"type": "peer-left", "endpoint_id": "doc0"}


async def test_token_for_another_session(h: Harness) -> None:
    token = h.srv.mint("s2", "clinician")
    msg = {"type": "join", "token": token, "endpoint_id": "e1", "session": "s1"}
    code, err = await refused(h, msg)
    assert (code, err["code"]) == (4401, "wrong-session")
    assert h.srv.metric("p2pmed_rejected_joins_total", reason="wrong-session") == 1
    assert audit_events(h.srv)[-1]["reason"] == "wrong-session"


async def test_origin_allowlist(srv: RunningServer, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await http.ws_connect(srv.ws_url, origin="https://evil.example")
    assert e.value.status == 403
    assert srv.metric("p2pmed_rejected_joins_total", reason="origin") == 1
    assert audit_events(srv)[-1]["reason"] == "origin"
    # own origin and no Origin at all are accepted
    ws = await http.ws_connect(srv.ws_url, origin=srv.url)
    await ws.close()
    ws = await http.ws_connect(srv.ws_url)
    await ws.close()


async def test_configured_origin(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    from signaling.testing import running_server

    async with running_server(tmp_path, allowed_origins=["https://portal.example"]) as srv:
        ws = await http.ws_connect(srv.ws_url, origin="https://portal.example")
        await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(srv.ws_url, origin="https://portal.example.evil")


async def test_join_timeout(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    from signaling.config import Limits
    from signaling.testing import running_server

    async with running_server(tmp_path, limits=Limits(join_timeout=0.2)) as srv:
        c = await Harness(srv, http).connect()
        code, seen = await c.closed()
        assert code == 4408 and seen[-1]["code"] == "join-timeout"
        await settle(lambda: srv.metric("p2pmed_rejected_joins_total", reason="join-timeout") == 1)
