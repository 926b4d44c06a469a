"""Resume tokens: a joined endpoint can come back after its join token expired (server restart,
network drop), as itself only, and never after its join token was revoked."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from signaling import closecodes as cc
from signaling.testing import running_server
from signaling.tokens import ALGORITHM, TOKEN_TYPE, TokenError, token_key, verify
from tests.signaling.conftest import Harness


def _grant(srv, token: str):  # type: ignore[no-untyped-def]
    cfg = srv.config
    return verify(
        token,
        token_key(cfg.data_dir, create=False),
        issuer=cfg.issuer,
        audience=cfg.audience,
        max_ttl=cfg.max_token_ttl,
        leeway=0.0,
    )


def _short_lived(srv, session: str, role: str, seconds: float) -> str:  # type: ignore[no-untyped-def]
    """A join token that expires `seconds` from now (minted in the past: lifetime 60 s)."""
    return str(srv.mint(session, role, ttl=60.0, now=time.time() - 60.0 + seconds))


async def _refused(h: Harness, token: str, endpoint_id: str) -> tuple[int | None, str]:
    c = await h.connect()
    await c.send(type="join", token=token, endpoint_id=endpoint_id)
    code, seen = await c.closed()
    errors = [m["code"] for m in seen if m["type"] == "error"]
    return code, errors[0] if errors else ""


async def test_joined_carries_a_resume_token_bound_to_the_endpoint(h: Harness) -> None:
    join = h.srv.mint("s1", "patient")
    _, joined = await h.join("s1", "patient", "pat", token=join)
    g = _grant(h.srv, joined["resume_token"])
    assert (g.session, g.role, g.endpoint) == ("s1", "patient", "pat")
    assert g.root == _grant(h.srv, join).jti
    assert g.jti != g.root


async def test_resume_token_rejoins_after_the_join_token_expired(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path / "d", clock_leeway=0.0, reconnect_grace=60.0) as srv:
        h = Harness(srv, http)
        join = _short_lived(srv, "s1", "patient", 1.0)
        join_exp = _grant(srv, join).exp
        pat, joined = await h.join("s1", "patient", "pat", token=join)
        resume = joined["resume_token"]
        await pat.ws.close()
        while time.time() < join_exp + 0.1:
            await asyncio.sleep(0.1)
        assert await _refused(h, join, "pat") == (cc.UNAUTHORIZED, "token-expired")
        _, again = await h.join("s1", "patient", "pat", token=resume)
        assert again["endpoint_id"] == "pat"
        assert again["resume_token"] != resume  # a fresh one with every joined


async def test_resume_token_survives_a_server_restart(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path / "d") as srv:
        _, joined = await Harness(srv, http).join("s1", "clinician", "doc")
    async with running_server(tmp_path / "d") as srv2:  # same data dir: same key
        _, again = await Harness(srv2, http).join(
            "s1", "clinician", "doc", token=joined["resume_token"]
        )
        assert again["role"] == "clinician"


async def test_resume_token_is_only_for_its_own_endpoint(h: Harness) -> None:
    _, joined = await h.join("s1", "clinician", "doc")
    code, err = await _refused(h, joined["resume_token"], "someone-else")
    assert (code, err) == (cc.UNAUTHORIZED, "token-endpoint")


async def test_revoking_the_join_token_revokes_its_resume_tokens(h: Harness) -> None:
    join = h.srv.mint("s1", "clinician")
    doc, joined = await h.join("s1", "clinician", "doc", token=join)
    h.srv.revoke(_grant(h.srv, join).jti)
    code, _ = await doc.closed()  # the connected endpoint is logged off by the sweep
    assert code == cc.REVOKED
    assert await _refused(h, joined["resume_token"], "doc") == (cc.UNAUTHORIZED, "token-revoked")


async def test_resume_token_is_renewed_while_connected(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path / "d", resume_ttl=4.0, reconnect_grace=1.0) as srv:
        h = Harness(srv, http)
        doc, joined = await h.join("s1", "clinician", "doc")
        renewed = await doc.recv_type("resume-token")
        assert renewed["token"] != joined["resume_token"]
        g = _grant(srv, renewed["token"])
        assert g.endpoint == "doc" and g.exp > _grant(srv, joined["resume_token"]).exp - 1


def test_resume_claims_must_come_together(tmp_path: Path) -> None:
    key = b"k" * 32
    now = int(time.time())
    claims = {
        "iss": "i", "aud": "a", "sub": "s1", "role": "patient", "jti": "j1",
        "iat": now, "nbf": now, "exp": now + 60, "eid": "pat",
    }  # fmt: skip
    token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": TOKEN_TYPE})
    with pytest.raises(TokenError) as e:
        verify(token, key, issuer="i", audience="a", max_ttl=3600, leeway=0)
    assert e.value.reason == "claims"
    claims.update(root="j0", eid="../x")
    token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": TOKEN_TYPE})
    with pytest.raises(TokenError):
        verify(token, key, issuer="i", audience="a", max_ttl=3600, leeway=0)
