"""Every relay-start gets its relay-stop: when either end is revoked, and at shutdown."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from signaling.testing import RunningServer, running_server
from tests.signaling.conftest import Client, Harness


def events(srv: RunningServer) -> list[dict[str, object]]:
    text = (srv.config.data_dir / "audit.jsonl").read_text()
    return [json.loads(x) for x in text.splitlines()]


def pairs(entries: list[dict[str, object]], event: str) -> set[tuple[object, object]]:
    return {(e["src"], e["dst"]) for e in entries if e["event"] == event}


async def _relay_both_ways(pat: Client, doc: Client) -> None:
    await pat.ws.send_bytes(b"\x04doc0" + b"p" * 40)
    assert await doc.recv_bytes() == b"\x03pat" + b"p" * 40
    await doc.ws.send_bytes(b"\x03pat" + b"d" * 40)
    assert await pat.recv_bytes() == b"\x04doc0" + b"d" * 40


async def test_relay_stop_both_ways_after_revocation(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path) as srv:
        h = Harness(srv, http)
        pat, _ = await h.join("s1", "patient", "pat")
        doc, _ = await h.join(
            "s1", "clinician", "doc0", token=srv.mint("s1", "clinician", jti="j-doc")
        )
        await doc.recv_type("peer-waiting")
        await doc.send(type="admit", endpoint_id="pat")
        await pat.recv_type("admitted")
        await _relay_both_ways(pat, doc)
        srv.revoke("j-doc")
        code, _ = await doc.closed()
        assert code == 4410
        assert (await pat.recv_type("peer-left"))["endpoint_id"] == "doc0"
        found = events(srv)
        stops = [e for e in found if e["event"] == "relay-stop"]
        assert pairs(found, "relay-stop") == {("pat", "doc0"), ("doc0", "pat")}
        # counts as relayed (source envelope + frame)
        assert {(e["src"], e["frames"], e["bytes"]) for e in stops} == {
            ("pat", 1, 44),
            ("doc0", 1, 45),
        }
        # the pair ended once: no second relay-stop when the patient leaves later
        await pat.send(type="leave")
        await pat.closed()
        assert len([e for e in events(srv) if e["event"] == "relay-stop"]) == 2


async def test_relay_stop_at_shutdown(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path) as srv:
        pat, (doc,) = await Harness(srv, http).consult()
        await _relay_both_ways(pat, doc)
    found = events(srv)
    assert (
        pairs(found, "relay-start")
        == pairs(found, "relay-stop")
        == {
            ("pat", "doc0"),
            ("doc0", "pat"),
        }
    )
    names = [e["event"] for e in found]
    assert names.index("stop") > max(i for i, n in enumerate(names) if n == "relay-stop")
