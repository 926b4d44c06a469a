"""Rotating the token key without an outage (docs/operations.md, "Rotating the token key"):
after the rotation the server signs with the new key and still accepts tokens signed with
the previous one, until the operator removes it. Real server processes on loopback, the
manual's commands run as written (tests/deploy/manual.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling import closecodes as cc
from signaling.testing import server_process, start_process
from signaling.tokens import TokenError, Verifier, mint, token_key
from tests.deploy.manual import Site, blocks, run_block

TIMEOUT = 10.0  # only guards against a hang


def _mint(data: Path, session: str, role: str) -> str:
    return _mint_with(token_key(data, create=False), session, role)


def _mint_with(key: bytes, session: str, role: str) -> str:
    token, _ = mint(
        key,
        session=session,
        role=role,
        ttl=600,
        issuer="p2pmed-signaling",
        audience="p2pmed-join",
    )
    return token


def test_the_previous_key_only_verifies() -> None:
    old, new, other = os.urandom(32), os.urandom(32), os.urandom(32)
    kw: dict[str, Any] = {
        "issuer": "p2pmed-signaling",
        "audience": "p2pmed-join",
        "max_ttl": 86400,
        "leeway": 5,
    }
    rotating = Verifier(new, previous=old, **kw)
    assert rotating.verify(_mint_with(old, "s1", "patient")).session == "s1"
    assert rotating.verify(_mint_with(new, "s2", "patient")).session == "s2"
    assert rotating.key == new  # what the server mints its resume tokens with
    for verifier, token in (
        (Verifier(new, **kw), _mint_with(old, "s1", "patient")),  # overlap ended
        (rotating, _mint_with(other, "s3", "patient")),
    ):
        with pytest.raises(TokenError) as e:
            verifier.verify(token)
        assert e.value.reason == "signature"


async def _join(ws_url: str, token: str, endpoint_id: str) -> tuple[int | None, dict[str, Any]]:
    """Join; (None, the joined message) or (the close code, the error message)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        await ws.send_json({"type": "join", "token": token, "endpoint_id": endpoint_id})
        first: dict[str, Any] = {}
        while True:
            msg = await ws.receive(timeout=TIMEOUT)
            if msg.type == aiohttp.WSMsgType.TEXT:
                m = json.loads(msg.data)
                if m["type"] == "joined":
                    await ws.send_json({"type": "leave"})
                    return None, m
                first = first or m
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                return int(msg.data), first  # the code the server sent
            else:
                return ws.close_code, first


def _env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if k.startswith("P2PMED_")}


async def test_old_tokens_join_during_the_rotation_and_stop_after_it(tmp_path: Path) -> None:
    site = Site(tmp_path / "host", 8443, 3478, 9464)
    data = site.root / "var" / "lib" / "p2pmed-signaling"
    env_file = site.root / "etc" / "p2pmed" / "signaling.env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("# server settings\n")
    env_file.chmod(0o600)
    steps = blocks()

    async with server_process(data) as srv:
        old = _mint(data, "s1", "clinician")
        unused = _mint(data, "s2", "clinician")  # handed out, not used before the rotation
        code, joined = await _join(srv.ws_url, old, "doc")
        assert code is None
        old_resume = joined["resume_token"]
        assert await srv.stop() == 0
    old_key = (data / "token-key").read_bytes()

    await run_block(site, steps["rotate-token-key"])
    async with server_process(data, env=_env(env_file)) as srv:
        assert (data / "token-key").read_bytes() != old_key  # the server made a new key
        assert (data / "token-key.previous").read_bytes() == old_key
        code, rejoined = await _join(srv.ws_url, old_resume, "doc")  # a node coming back
        assert code is None
        assert (await _join(srv.ws_url, unused, "doc2"))[0] is None
        new = _mint(data, "s3", "clinician")
        assert (await _join(srv.ws_url, new, "doc3"))[0] is None
        new_resume = rejoined["resume_token"]  # signed with the new key
        assert await srv.stop() == 0
    entries = [json.loads(x) for x in srv.log().splitlines() if x.startswith("{")]
    (config,) = [e for e in entries if e["event"] == "config"]
    assert config["previous_key"] is True

    await run_block(site, steps["finish-token-key-rotation"])
    assert "TOKEN_KEY_PREVIOUS" not in env_file.read_text()
    assert not (data / "token-key.previous").exists()
    async with server_process(data, env=_env(env_file)) as srv:
        for token, eid in ((old, "doc"), (old_resume, "doc"), (unused, "doc2")):
            code, err = await _join(srv.ws_url, token, eid)
            assert code == cc.UNAUTHORIZED and err["code"] == "token-signature", (code, err)
        assert (await _join(srv.ws_url, new, "doc3"))[0] is None
        assert (await _join(srv.ws_url, new_resume, "doc"))[0] is None
        assert await srv.stop() == 0


async def _refused(data: Path, *args: str) -> str:
    proc, log, _ = await start_process(data, *args)
    assert await proc.wait() == 2
    text = log.read_text()
    assert "Traceback" not in text
    return text


async def test_start_refuses_a_previous_key_that_cannot_work(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with server_process(data) as srv:
        assert await srv.stop() == 0
    missing = tmp_path / "nowhere"
    assert "no such file" in await _refused(data, "--token-key-previous", str(missing))
    same = tmp_path / "same-key"
    same.write_bytes((data / "token-key").read_bytes())
    same.chmod(0o600)
    assert "is the current one" in await _refused(data, "--token-key-previous", str(same))
    loose = tmp_path / "loose-key"
    loose.write_text("00" * 32 + "\n")
    loose.chmod(0o644)
    assert "too open" in await _refused(data, "--token-key-previous", str(loose))
    short = tmp_path / "short-key"
    short.write_text("00" * 8 + "\n")
    short.chmod(0o600)
    assert "shorter than 32 bytes" in await _refused(data, "--token-key-previous", str(short))
