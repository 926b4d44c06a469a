"""Revocation on the server (issue #16.1): peers are told (`peer-revoked`, before
`peer-left`), confirm (`revocation-done`), and the audit log says when the last path really
closed (`revoke-complete`) or that a peer never confirmed (`revoke-timeout`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from signaling.testing import RunningServer, running_server
from tests.signaling.conftest import Harness, settle


def events(srv: RunningServer, name: str) -> list[dict[str, Any]]:
    text = (srv.config.data_dir / "audit.jsonl").read_text()
    return [e for e in map(json.loads, text.splitlines()) if e["event"] == name]


async def _consult(h: Harness, srv: RunningServer) -> tuple[Any, Any, Any]:
    pat, _ = await h.join("s1", "patient", "pat")
    doc, _ = await h.join("s1", "clinician", "doc0", token=srv.mint("s1", "clinician", jti="j0"))
    await doc.recv_type("peer-waiting")
    await doc.send(type="admit", endpoint_id="pat")
    await pat.recv_type("admitted")
    other, _ = await h.join("s1", "clinician", "doc1")  # no E2E session with doc0
    await pat.recv_type("peer-joined")
    await pat.recv_type("peer-joined")
    return pat, doc, other


async def test_peers_told_and_confirmation_audited(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path) as srv:
        h = Harness(srv, http)
        pat, doc, other = await _consult(h, srv)
        srv.revoke("j0")
        code, _ = await doc.closed()
        assert code == 4410
        seen = []
        while not seen or seen[-1]["type"] != "peer-left":
            seen.append(await pat.recv())
        kinds = [(m["type"], m.get("endpoint_id")) for m in seen if m["type"].startswith("peer")]
        assert kinds == [("peer-revoked", "doc0"), ("peer-left", "doc0")]
        assert (await other.recv_type("peer-revoked"))["endpoint_id"] == "doc0"
        assert not events(srv, "revoke-complete")  # the patient has not confirmed yet
        await pat.send(type="revocation-done", endpoint_id="doc0")
        await settle(lambda: events(srv, "revoke-complete"))
        (done,) = events(srv, "revoke-complete")
        assert done["endpoint_id"] == "doc0" and done["jti"] == "j0"
        assert done["peers"] == ["pat"] and done["late"] is False
        assert isinstance(done["elapsed_ms"], int) and done["elapsed_ms"] >= 0
        revoked = events(srv, "revoked")[0]
        assert revoked["seq"] < done["seq"]
        # a second confirmation, or one for an endpoint nobody revoked: a clear error
        await pat.send(type="revocation-done", endpoint_id="doc0")
        assert (await pat.recv_type("error"))["code"] == "not-revoked"
        await other.send(type="revocation-done", endpoint_id="pat")
        assert (await other.recv_type("error"))["code"] == "not-revoked"
        assert srv.metric("p2pmed_signaling_errors_total", code="not-revoked") == 2


async def test_unconfirmed_revocation_times_out_then_completes_late(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, revoke_timeout=0.5) as srv:
        h = Harness(srv, http)
        pat, _doc, _ = await _consult(h, srv)
        srv.revoke("j0")
        await pat.recv_type("peer-revoked")
        await settle(lambda: events(srv, "revoke-timeout"))
        (late,) = events(srv, "revoke-timeout")
        assert late["endpoint_id"] == "doc0" and late["unconfirmed"] == ["pat"]
        assert late["after_ms"] >= 500
        await pat.send(type="revocation-done", endpoint_id="doc0")
        await settle(lambda: events(srv, "revoke-complete"))
        (done,) = events(srv, "revoke-complete")
        assert done["late"] is True and done["elapsed_ms"] >= 500


async def test_revoked_patient_waiting_alone_completes_at_once(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path) as srv:
        h = Harness(srv, http)
        pat, _ = await h.join("s1", "patient", "pat", token=srv.mint("s1", "patient", jti="jp"))
        srv.revoke("jp")
        code, _ = await pat.closed()
        assert code == 4410
        await settle(lambda: events(srv, "revoke-complete"))
        (done,) = events(srv, "revoke-complete")
        assert done["peers"] == [] and done["endpoint_id"] == "pat"


async def test_peer_away_at_revocation_is_told_when_back(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A patient whose signaling was down at the revocation may still hold a direct path to
    the revoked clinician: it gets peer-revoked on its new connection, after its joined."""
    async with running_server(tmp_path) as srv:
        h = Harness(srv, http)
        pat, doc, _ = await _consult(h, srv)
        await pat.ws.close()
        await settle(lambda: srv.hub.endpoint("s1", "pat").ws is None)
        srv.revoke("j0")
        code, _ = await doc.closed()
        assert code == 4410
        pat2, joined = await h.join("s1", "patient", "pat")
        assert "doc0" not in [p["endpoint_id"] for p in joined["peers"]]
        assert (await pat2.recv_type("peer-revoked"))["endpoint_id"] == "doc0"
        await pat2.send(type="revocation-done", endpoint_id="doc0")
        await settle(lambda: events(srv, "revoke-complete"))
        assert events(srv, "revoke-complete")[0]["peers"] == ["pat"]
