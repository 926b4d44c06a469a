"""The terminal central station (`p2pmed node --join <station URL>`) against real patient node
processes on a real signaling server: every bed live, a late bed appears, a killed bed comes
back with nothing lost, acknowledge reaches the right bed only, revocation ends every bed."""

from __future__ import annotations

import json
from typing import Any

from signaling.testing import RunningServer
from tests.node.conftest import NodeProc, check_stream, start_proc


def station_url(server: RunningServer, ward: str) -> tuple[str, str]:
    token = server.mint(f"ward.{ward}", "station", ward=ward)
    return server.join_url(token), server.hub.verifier.verify(token).jti


async def bed(server: RunningServer, ward: str, name: str, tmp: Any, *args: str) -> NodeProc:
    url = server.join_url(server.mint(name, "patient", ward=ward))
    return await start_proc(url, name, "--data-dir", str(tmp / name), *args)


async def test_station_watches_the_ward(server: RunningServer, tmp_path: Any) -> None:
    url, _ = station_url(server, "A")
    b1 = await bed(server, "A", "b1", tmp_path, "--scenario", "alarm")
    b2 = await bed(server, "A", "b2", tmp_path, "--scenario", "normal")
    b2_again = b3 = None
    st = await start_proc(url, "station", "--data-dir", str(tmp_path / "st"), commands=True)
    try:
        joined = await st.w.wait_for("joined", role="station")
        assert joined["ward"] == "A"
        for b in ("b1", "b2"):
            await st.w.wait_for("message", bed=b, kind="numerics")
        # a bed that joins later appears
        b3 = await bed(server, "A", "b3", tmp_path, "--scenario", "alarm")
        await st.w.wait_for("bed", bed="b3")
        await st.w.wait_for("message", bed="b3", kind="numerics")
        # every bed node is the station's one endpoint and identity
        sid = joined["endpoint_id"]
        for p in (b1, b2, b3):
            assert (await p.w.wait_for("handshake"))["peer"] == sid
        fps = {e["fingerprint"] for p in (b1, b2, b3) for e in p.w.of("identity-pinned")}
        assert fps == {joined["fingerprint"]}
        # acknowledge one alarm of b1: it reaches b1, never b3 (which has alarms too)
        alarm = await st.w.wait_for("alarm", bed="b1")
        await st.w.wait_for("alarm", bed="b3")
        assert st.proc.stdin is not None
        st.proc.stdin.write(f"ack b1 {alarm['alarm_id']}\n".encode())
        ack = await b1.w.wait_for("alarm-ack", alarm_id=alarm["alarm_id"])
        assert ack["by"] == sid
        await st.w.wait_for("ack-sent", bed="b1", alarm_id=alarm["alarm_id"])
        # a bed killed: link lost, then back with nothing lost
        await st.w.wait_count("message", 10, bed="b2")
        b2.kill()
        await b2.stop()
        await st.w.wait_for("bed", bed="b2", state="link-lost")
        n = len(st.w.events)
        b2_again = await bed(server, "A", "b2", tmp_path, "--scenario", "normal")
        await st.w.wait_for("bed", bed="b2", state="live", after=n)
        await st.w.wait_for("message", bed="b2", after=n)
        await st.w.wait_count("message", len(st.w.of("message", bed="b2")) + 20, bed="b2")
        assert not b3.w.of("alarm-ack") and not b2.w.of("alarm-ack")
    finally:
        for p in (b1, b2, b3, b2_again):
            if p is not None:
                await p.stop()
        assert await st.stop() == 0
    for e in st.w.events:  # --json: every bed node event says its bed
        if e["event"] in ("message", "alarm", "handshake", "path"):
            assert e["bed"] in ("b1", "b2", "b3"), e
    sent = b2.w.of("sent", peer=sid) + b2_again.w.of("sent", peer=sid)
    first: dict[str, int] = {}
    for e in b2_again.w.of("sent", peer=sid):
        first.setdefault(e["cls"], e["id"])
    check_stream(sent, st.w.of("message", bed="b2"), unlogged_below=first)
    for b, p in (("b1", b1), ("b3", b3)):
        check_stream(p.w.of("sent", peer=sid), st.w.of("message", bed=b))
    assert not st.w.of("waveform-gap")


async def test_revoking_the_station_ends_every_bed(server: RunningServer, tmp_path: Any) -> None:
    url, jti = station_url(server, "A")
    beds = [await bed(server, "A", f"b{i}", tmp_path) for i in range(2)]
    other = await bed(server, "B", "x1", tmp_path)  # ward B: never seen by A's station
    fhir = tmp_path / "fhir"
    st = await start_proc(
        url, "station", "--data-dir", str(tmp_path / "st"), "--fhir-out", str(fhir)
    )
    try:
        for i in range(2):
            await st.w.wait_for("message", bed=f"b{i}", kind="numerics")
            await st.w.wait_for("patient-status", bed=f"b{i}")
        sid = (await st.w.wait_for("joined", role="station"))["endpoint_id"]
        server.revoke(jti)
        for p in beds:
            await p.w.wait_for("peer", peer=sid, state="revoked")
        await st.w.wait_for("revoked")
        assert await st.stop() == 5
        assert {e["bed"] for e in st.w.of("bed")} == {"b0", "b1"}
        assert not other.w.of("handshake")
        for i in range(2):  # --fhir-out: one file per bed, each of its own patient
            lines = (fhir / f"b{i}.ndjson").read_text().splitlines()
            subjects = {json.loads(x)["subject"]["reference"] for x in lines}
            pid = beds[i].w.of("joined")[0]["endpoint_id"]
            assert subjects == {f"Patient/{pid}"}
    finally:
        for p in (*beds, other):
            await p.stop()


async def test_station_killed_and_restarted(server: RunningServer, tmp_path: Any) -> None:
    """Each bed's session resumes from the station's data dir: nothing lost, none twice."""
    url, _ = station_url(server, "A")
    beds = [await bed(server, "A", f"b{i}", tmp_path) for i in range(2)]
    st2 = None
    st1 = await start_proc(url, "station-1", "--data-dir", str(tmp_path / "st"))
    try:
        for i in range(2):
            await st1.w.wait_count("message", 20, bed=f"b{i}")
        st1.kill()
        await st1.stop()
        st2 = await start_proc(url, "station-2", "--data-dir", str(tmp_path / "st"))
        for i in range(2):
            await st2.w.wait_for("peer", bed=f"b{i}", state="restored")
            await st2.w.wait_count("message", 20, bed=f"b{i}")
        assert not st2.w.of("handshake")  # the same sessions, resumed
    finally:
        for p in beds:
            await p.stop()
        if st2 is not None:
            await st2.stop()
    sid = st1.w.of("joined")[0]["endpoint_id"]
    assert st2.w.of("joined")[0]["endpoint_id"] == sid
    for i, p in enumerate(beds):
        got = st1.w.of("message", bed=f"b{i}") + st2.w.of("message", bed=f"b{i}")
        check_stream(p.w.of("sent", peer=sid), got)
