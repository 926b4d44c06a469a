"""TURN servers from GET /turn-credentials are used: with --ice-relay-only the direct path
can only form through a real coturn on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from signaling.testing import RunningServer, running_server
from tests.coturn import loopback_coturn
from tests.node.conftest import check_stream, start_inproc


@pytest.fixture
async def turn_server(tmp_path) -> AsyncIterator[RunningServer]:  # type: ignore[no-untyped-def]
    async with (
        loopback_coturn(tmp_path, 49500, 49600) as (secret, url),
        running_server(tmp_path / "server", turn_secret=secret, turn_urls=[url]) as srv,
    ):
        yield srv


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
