"""The signaling server restarts while two nodes stream directly: the stream goes on."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time

from signaling.testing import running_server
from tests.node.conftest import check_stream, start_inproc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_server_restart_does_not_interrupt_direct_stream(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    data = tmp_path / "server"
    async with running_server(data, port=port) as srv:
        p_url = srv.join_url(srv.mint("s1", "patient"))
        c_url = srv.join_url(srv.mint("s1", "clinician"))
        patient = await start_inproc(p_url, "patient")
        clinician = await start_inproc(c_url, "clinician")
        await clinician.w.wait_for("path", active="direct")
        await clinician.w.wait_count("message", 10, kind="waveform")
    try:
        # the server is gone: both nodes lose signaling and the relay, not the direct path
        down = await clinician.w.wait_for("signaling", state="down")
        mark = clinician.w.events.index(down)
        await patient.w.wait_for("signaling", state="down")
        during = await clinician.w.wait_for("message", after=mark, path="direct")
        assert during
        n_during = len(clinician.w.of("message"))
        async with running_server(data, port=port):
            up = await clinician.w.wait_for("signaling", state="up", after=mark)
            after_up = clinician.w.events.index(up)
            await patient.w.wait_for("signaling", state="up")
            # the clinician admits the patient again; the relay path comes back
            await clinician.w.wait_for("path-up", path="relay", after=after_up)
            await clinician.w.wait_for("message", after=len(clinician.w.events))
            assert not [
                e
                for e in clinician.w.events[mark:]
                if e["event"] == "path-down" and e.get("path") == "direct"
            ]
    finally:
        await patient.stop()
        await clinician.stop()
    assert len(clinician.w.of("message")) > n_during
    check_stream(patient.w.of("sent", peer=clinician.node.endpoint_id), clinician.w.of("message"))
    assert not clinician.w.of("waveform-gap")


async def test_nodes_rejoin_after_their_join_tokens_expired(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Join tokens that expire 2 s after the join: the server restarts later, and a node is
    restarted from its data dir later still. Both rejoin with the server's resume tokens."""
    port = free_port()
    data = tmp_path / "server"
    async with running_server(data, port=port, clock_leeway=0.0) as srv:
        soon = time.time() - 60.0 + 2.0  # minted "58 s ago" with a 60 s lifetime
        p_url = srv.join_url(srv.mint("s1", "patient", ttl=60.0, now=soon))
        c_url = srv.join_url(srv.mint("s1", "clinician", ttl=60.0, now=soon))
        patient = await start_inproc(p_url, "patient", data_dir=str(tmp_path / "p"))
        clinician = await start_inproc(c_url, "clinician")
        await clinician.w.wait_for("path", active="direct")
        while time.time() < soon + 60.0 + 0.5:  # both join tokens have expired
            await asyncio.sleep(0.1)
    p2 = None
    try:
        mark, p_mark = len(clinician.w.events), len(patient.w.events)
        async with running_server(data, port=port, clock_leeway=0.0):
            await clinician.w.wait_for("signaling", state="up", after=mark)
            await patient.w.wait_for("signaling", state="up", after=p_mark)
            await clinician.w.wait_for("path-up", path="relay", after=mark)
            token_file = tmp_path / "p" / "resume_token"
            assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
            await patient.stop()  # a node restarted with its data dir, join token long expired
            n = len(clinician.w.events)
            p2 = await start_inproc(p_url, "patient-2", data_dir=str(tmp_path / "p"))
            assert p2.w.of("joined")
            await clinician.w.wait_for("message", after=n)
    finally:
        if p2 is not None:
            await p2.stop()
        await patient.stop()
        await clinician.stop()
    assert not [e for e in clinician.w.of("error") if str(e.get("code", "")).startswith("token")]
