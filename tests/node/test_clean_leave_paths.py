"""A clinician that leaves cleanly never raises a communication-failure alarm at the patient,
even when the server's peer-left overtakes the clinician's CLOSE frame (issue #11.5)."""

from __future__ import annotations

import asyncio

from p2pmed.core.frame import FrameType
from tests.node.conftest import start_inproc
from tests.security.hostile_proxy import HostileProxy


async def test_peer_left_before_close_raises_no_alarm(server) -> None:  # type: ignore[no-untyped-def]
    proxy = HostileProxy(server.ws_url)
    await proxy.start()
    patient = await start_inproc(proxy.join_url(server.mint("s1", "patient")), "patient")
    clinician = await start_inproc(proxy.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        await clinician.w.wait_for("direct-bound")
        await clinician.w.wait_count("message", 5)
        link = patient.node.peers[clinician.node.endpoint_id]
        await link.cut_direct()  # only the relay is left
        await patient.w.wait_for("direct-lost")
        # the clinician's CLOSE frames are lost on the way (the frame type is in the clear
        # header): the server's peer-left comes first
        cid = clinician.node.endpoint_id
        proxy.drop = lambda src, frame: src == cid and frame[1] == FrameType.CLOSE
        await clinician.stop()
        left = await patient.w.wait_for("peer", state="left")
        await patient.w.wait_for("path", active=None, after=patient.w.events.index(left))
        # the relay path was the last one; give a false alarm time to show up (several
        # path-dead periods), then check none did
        await asyncio.sleep(3 * patient.node.config.path_dead_after)
        assert not patient.w.of("technical-alarm")
    finally:
        await patient.stop()
        await proxy.close()
