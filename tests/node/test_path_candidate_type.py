"""The `path` event that makes the direct path active says which ICE candidate pair it runs
on: "relay" on both ends when --ice-relay-only forces it through a real coturn (the operator
can see that the path really goes through TURN), "host" on plain loopback."""

from __future__ import annotations

from typing import Any

from signaling.testing import running_server
from tests.coturn import loopback_coturn
from tests.node.conftest import InProcNode, start_inproc


async def direct_path_event(node: InProcNode) -> dict[str, Any]:
    return await node.w.wait_for("path", active="direct")


async def test_relay_only_direct_path_reports_relay_candidates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with (
        loopback_coturn(tmp_path, 49751, 49850) as (secret, url),
        running_server(tmp_path / "server", turn_secret=secret, turn_urls=[url]) as srv,
    ):
        patient = await start_inproc(
            srv.join_url(srv.mint("s1", "patient")), "patient", ice_relay_only=True
        )
        clinician = await start_inproc(
            srv.join_url(srv.mint("s1", "clinician")), "clinician", ice_relay_only=True
        )
        try:
            for node in (patient, clinician):
                event = await direct_path_event(node)
                assert event["local_candidate"] == "relay", event
                assert event["remote_candidate"] == "relay", event
        finally:
            await clinician.stop()
            await patient.stop()


async def test_loopback_direct_path_reports_host_candidates(server) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(server.join_url(server.mint("s2", "patient")), "patient")
    clinician = await start_inproc(server.join_url(server.mint("s2", "clinician")), "clinician")
    try:
        for node in (patient, clinician):
            event = await direct_path_event(node)
            assert event["local_candidate"] == "host", event
            # the answerer's checks may reach the offerer before its answer does: peer-reflexive
            assert event["remote_candidate"] in ("host", "prflx"), event
        # the relay path's events carry no candidate fields
        relay = patient.w.of("path", active="relay")
        assert relay and all("local_candidate" not in e for e in relay)
    finally:
        await clinician.stop()
        await patient.stop()
