"""TURN servers from GET /turn-credentials are used: with --ice-relay-only the direct path
can only form through a real coturn on loopback."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
from collections.abc import AsyncIterator

import pytest

from signaling.testing import RunningServer, running_server
from tests.node.conftest import check_stream, start_inproc


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def turn_server(tmp_path) -> AsyncIterator[RunningServer]:  # type: ignore[no-untyped-def]
    assert shutil.which("turnserver"), "coturn (turnserver) is required"
    secret = secrets.token_urlsafe(24)
    port = free_udp_port()
    # allow-loopback-peers is for this loopback test only; production configs never have it
    proc = await asyncio.create_subprocess_exec(
        "turnserver",
        "-n",
        "--listening-ip=127.0.0.1",
        f"--listening-port={port}",
        "--relay-ip=127.0.0.1",
        "--min-port=49500",
        "--max-port=49600",
        "--use-auth-secret",
        f"--static-auth-secret={secret}",
        "--realm=p2pmed.test",
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--fingerprint",
        "--log-file=stdout",
        "--pidfile",
        str(tmp_path / "turn.pid"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            while b"Total General servers" not in (line := await proc.stdout.readline()):
                assert line, "turnserver exited"
            await asyncio.sleep(0.3)
        drain = asyncio.ensure_future(proc.stdout.read())  # keep coturn's log pipe flowing
        async with running_server(
            tmp_path / "server",
            turn_secret=secret,
            turn_urls=[f"turn:127.0.0.1:{port}?transport=udp"],
        ) as srv:
            yield srv
    finally:
        proc.terminate()
        await proc.wait()
        if "drain" in locals():
            await drain


async def test_direct_path_through_turn_only(turn_server) -> None:  # type: ignore[no-untyped-def]
    srv = turn_server
    patient = await start_inproc(
        srv.join_url(srv.mint("s1", "patient")), "patient", ice_relay_only=True
    )
    clinician = await start_inproc(
        srv.join_url(srv.mint("s1", "clinician")), "clinician", ice_relay_only=True
    )
    try:
        assert patient.w.of("joined")[0]["ice_servers"] == 1
        await clinician.w.wait_for("path", active="direct")
        await clinician.w.wait_count("message", 10, path="direct")
        for node in (patient.node, clinician.node):
            link = next(iter(node.peers.values()))
            assert link.direct is not None
            gatherer = link.direct.pc.sctp.transport.transport.iceGatherer
            kinds = {c.type for c in gatherer.getLocalCandidates()}
            assert kinds == {"relay"}  # every local candidate is a TURN allocation
    finally:
        await clinician.stop()
        await patient.stop()
    check_stream(patient.w.of("sent", peer=clinician.node.endpoint_id), clinician.w.of("message"))
