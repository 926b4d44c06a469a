"""Wards in the signaling server: the station's bed list, bed tokens, states, limits,
isolation between wards, revocation of a station (real server, real WebSocket clients)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from signaling.config import Limits
from signaling.testing import running_server
from signaling.tokens import TokenError
from tests.station.conftest import Client, Ward


def audit(srv_dir: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (srv_dir / "audit.jsonl").read_text().splitlines()]


async def test_station_sees_beds_and_their_states(ward: Ward) -> None:
    bed1 = await ward.join(ward.bed("A", "bed1"), "pat1")
    first = await bed1.recv_type("joined")
    assert first["waiting"] is True
    resume = first["resume_token"]  # a bed's resume tokens name its ward too
    assert ward.srv.hub.verifier.verify(resume).ward == "A"
    st = await ward.join(ward.station("A"), "st1")
    joined = await st.recv_type("joined")
    assert joined["role"] == "station" and joined["session"] == "ward.A"
    snap = await st.recv_type("ward")
    assert snap["ward"] == "A"
    [b] = snap["beds"]
    assert (b["session"], b["state"], b["patient"]) == ("bed1", "waiting", "pat1")
    # the bed token is a clinician token for bed1, for the station's endpoint only
    grant = ward.srv.hub.verifier.verify(b["token"])
    assert (grant.session, grant.role, grant.endpoint, grant.ward) == (
        "bed1",
        "clinician",
        "st1",
        "A",
    )
    doc = await ward.join(b["token"], "st1")
    await doc.recv_type("joined")
    await doc.recv_type("peer-waiting", endpoint_id="pat1")
    await doc.send(type="admit", endpoint_id="pat1")
    await bed1.recv_type("admitted")
    assert (await st.recv_type("bed", session="bed1"))["state"] == "live"
    # a bed that joins later appears
    bed2 = await ward.join(ward.bed("A", "bed2"), "pat2")
    await bed2.recv_type("joined")
    late = await st.recv_type("bed", session="bed2")
    assert late["state"] == "waiting" and late["token"]
    # link lost (the socket drops) and back: admission kept
    await bed1.ws.close()
    assert (await st.recv_type("bed", session="bed1"))["state"] == "link-lost"
    bed1 = await ward.join(ward.bed("A", "bed1"), "pat1")
    assert (await bed1.recv_type("joined"))["waiting"] is False
    assert (await st.recv_type("bed", session="bed1"))["state"] == "live"
    await bed1.send(type="leave")
    assert (await st.recv_type("bed", session="bed1"))["state"] == "ended"
    # the bed's node comes back later with its resume token: a bed of the ward again
    bed1 = await ward.join(resume, "pat1")
    await bed1.recv_type("joined")
    assert (await st.recv_type("bed", session="bed1"))["state"] == "waiting"
    await bed1.send(type="leave")
    assert (await st.recv_type("bed", session="bed1"))["state"] == "ended"
    # a second connection of the station gets the whole ward again
    st2 = await ward.join(ward.station("A"), "st2")
    snap2 = await st2.recv_type("ward")
    assert {b["session"]: b["state"] for b in snap2["beds"]} == {
        "bed1": "ended",
        "bed2": "waiting",
    }
    events = audit(ward.srv.config.data_dir)
    names = [e["event"] for e in events]
    assert "station-login" in names
    beds = [e for e in events if e["event"] == "ward-bed"]
    assert [(e["ward"], e["session"]) for e in beds] == [("A", "bed1"), ("A", "bed2")]
    [adm] = [e for e in events if e["event"] == "ward-admit"]
    assert (adm["ward"], adm["session"], adm["endpoint_id"], adm["by"]) == (
        "A",
        "bed1",
        "pat1",
        "st1",
    )


async def test_wards_are_isolated(ward: Ward) -> None:
    a1 = await ward.join(ward.bed("A", "a1"), "pa1")
    await a1.recv_type("joined")
    stb = await ward.join(ward.station("B"), "stb")
    assert (await stb.recv_type("ward"))["beds"] == []
    b1 = await ward.join(ward.bed("B", "b1"), "pb1")
    await b1.recv_type("joined")
    assert (await stb.recv_type("bed"))["session"] == "b1"  # never a1
    # a bed token belongs to its station's endpoint only
    sta = await ward.join(ward.station("A"), "sta")
    token = (await sta.recv_type("ward"))["beds"][0]["token"]
    thief = await ward.join(token, "stb")
    assert (await thief.refused()) == ("token-endpoint", 4401)
    # a bed session belongs to one ward
    other = await ward.join(ward.bed("B", "a1"), "pb9")
    assert (await other.refused())[0] == "bed-other-ward"
    plain = await ward.join(ward.srv.mint("a1", "patient"), "pb8")
    assert (await plain.refused())[0] == "bed-other-ward"
    assert ward.srv.metric("p2pmed_rejected_joins_total", reason="bed-other-ward") == 2
    # a station token names its ward: it cannot be pointed at another
    c = await ward.join(ward.station("B"), "stb2")
    await c.ws.close()
    cross = Client(await ward.http.ws_connect(ward.srv.ws_url))
    await cross.send(type="join", token=ward.station("B"), endpoint_id="stb3", session="a1")
    assert (await cross.refused())[0] == "wrong-session"


async def test_ward_limits(tmp_path: Path) -> None:
    lim = Limits(max_beds_per_ward=2, max_stations_per_ward=1)
    async with running_server(tmp_path / "d", limits=lim) as srv, aiohttp.ClientSession() as http:
        w = Ward(srv, http)
        for i in range(2):
            c = await w.join(w.bed("A", f"b{i}"), f"p{i}")
            await c.recv_type("joined")
        full = await w.join(w.bed("A", "b2"), "p2")
        assert (await full.refused()) == ("ward-beds-full", 4503)
        other = await w.join(w.bed("B", "b2"), "p2")  # another ward has room
        await other.recv_type("joined")
        st = await w.join(w.station("A"), "s1")
        await st.recv_type("ward")
        st2 = await w.join(w.station("A"), "s2")
        assert (await st2.refused()) == ("ward-stations-full", 4503)
        assert srv.metric("p2pmed_rejected_joins_total", reason="ward-beds-full") == 1
        assert srv.metric("p2pmed_limit_violations_total", limit="beds-per-ward") == 1
        assert srv.metric("p2pmed_limit_violations_total", limit="stations-per-ward") == 1


async def test_revoking_the_station_token_closes_every_bed_endpoint(ward: Ward) -> None:
    srv = ward.srv
    token = ward.station("A")
    jti = srv.hub.verifier.verify(token).jti
    beds, docs = [], []
    for i in range(2):
        p = await ward.join(ward.bed("A", f"b{i}"), f"p{i}")
        await p.recv_type("joined")
        beds.append(p)
    st = await ward.join(token, "st")
    snap = await st.recv_type("ward")
    for b in snap["beds"]:
        d = await ward.join(b["token"], "st")
        await d.recv_type("joined")
        await d.send(type="admit", endpoint_id=b["patient"])
        docs.append(d)
    for p in beds:
        await p.recv_type("admitted")
    srv.revoke(jti)
    for c in [st, *docs]:
        assert (await c.refused()) == ("token-revoked", 4410)
    for p in beds:
        assert (await p.recv_type("peer-revoked"))["endpoint_id"] == "st"
    # the bed tokens descend from the station token: refused now
    again = await ward.join(snap["beds"][0]["token"], "st")
    assert (await again.refused())[0] == "token-revoked"


def test_token_claims() -> None:
    from signaling.tokens import mint, verify

    key = b"k" * 32
    kw = {"issuer": "i", "audience": "a"}
    tok, g = mint(key, session="ward.W", role="station", ttl=60, **kw)
    assert g.ward == "W"
    assert verify(tok, key, max_ttl=3600, leeway=5, **kw).ward == "W"
    tok, _ = mint(key, session="bed1", role="patient", ttl=60, ward="W", **kw)
    assert verify(tok, key, max_ttl=3600, leeway=5, **kw).ward == "W"
    with pytest.raises(ValueError):
        mint(key, session="ward.W", role="patient", ttl=60, **kw)  # no "." in a bed
    with pytest.raises(ValueError):
        mint(key, session="ward.W", role="station", ttl=60, ward="X", **kw)
    import jwt

    bad = jwt.encode(
        {
            "iss": "i",
            "aud": "a",
            "sub": "ward.W",
            "role": "station",
            "jti": "j",
            "iat": 1,
            "nbf": 1,
            "exp": 2**31,
            "ward": "X",
        },
        key,
        algorithm="HS256",
        headers={"typ": "p2pmed-join+jwt"},
    )
    with pytest.raises(TokenError):
        verify(bad, key, max_ttl=2**32, leeway=5, **kw)


def test_token_cli(tmp_path: Path) -> None:
    from signaling.tokens import token_key

    data = tmp_path / "d"
    data.mkdir()
    token_key(data, create=True)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "p2pmed", "token", "--server", "http://127.0.0.1:1"]
        cmd += ["--data-dir", str(data), "--json", *args]
        return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)

    st = run("--ward", "W3", "--role", "clinician")
    assert st.returncode == 0, st.stderr
    out = json.loads(st.stdout)
    assert (out["session"], out["role"], out["ward"]) == ("ward.W3", "station", "W3")
    bed = json.loads(run("--ward", "W3", "--role", "patient", "--session", "b1").stdout)
    assert (bed["session"], bed["role"], bed["ward"]) == ("b1", "patient", "W3")
    for bad in (
        ("--ward", "W3", "--role", "observer", "--session", "b1"),
        ("--ward", "W3", "--role", "clinician", "--session", "b1"),
        ("--ward", "W3", "--role", "patient"),
        ("--ward", "no.dots", "--role", "clinician"),
    ):
        r = run(*bad)
        assert r.returncode == 2 and "error" in r.stderr, bad


def test_ward_limit_flags(tmp_path: Path) -> None:
    from p2pmed.cli import build_parser
    from signaling.cli import _build_config

    flags = ["--max-beds-per-ward", "16", "--max-stations-per-ward", "2"]
    args = build_parser().parse_args(["signaling", "--data-dir", str(tmp_path), *flags])
    lim = _build_config(args).limits
    assert (lim.max_beds_per_ward, lim.max_stations_per_ward) == (16, 2)
    bad = subprocess.run(
        [*[sys.executable, "-m", "p2pmed", "signaling"], "--max-beds-per-ward", "0"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert bad.returncode == 2 and "must be positive" in bad.stderr
