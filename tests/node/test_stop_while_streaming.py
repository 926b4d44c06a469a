"""A session that is closing (the peer's CLOSE arrived, or our own stop) refuses messages,
and the link is marked closed only on a later loop turn. The patient's source loop must skip
such a link, not die with an internal error: that would end the stream for every other
clinician (seen in CI, on the upgrade test's teardown, while the source caught up)."""

from __future__ import annotations

from p2pmed.core.frame import MessageClass
from p2pmed.node import clock
from p2pmed.vitals.codec import Numerics
from tests.node.conftest import start_inproc


async def test_a_closing_session_does_not_stop_the_stream_to_the_others(server) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(server.join_url(server.mint("s1", "patient")), "patient")
    leaving = await start_inproc(server.join_url(server.mint("s1", "clinician")), "leaving")
    staying = await start_inproc(server.join_url(server.mint("s1", "clinician")), "staying")
    try:
        for c in (leaving, staying):
            await c.w.wait_count("message", 5)
        link = patient.node.peers[leaving.node.endpoint_id]
        # what a CLOSE does to the session, in the same loop turn as the source loop's send
        link.session.close(clock.now(), 0, "leaving")
        assert not link.established
        msg = Numerics(int(clock.now() * 1e6), "p1", hr_x10=720)
        patient.node.app.broadcast(MessageClass.HIGH, msg)  # type: ignore[attr-defined]
        mine = await staying.w.wait_for(lambda e: e.get("t_us") == msg.timestamp_us)
        assert mine["values"]["hr"] == 72.0
        seen = len(staying.w.of("message"))
        await staying.w.wait_count("message", seen + 20)  # the source loop goes on
        assert not patient.w.of("error"), patient.w.of("error")
    finally:
        for n in (staying, leaving, patient):
            await n.stop()
