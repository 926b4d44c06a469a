"""A peer that stops answering for a while (SIGSTOP: a frozen process, as under host load or
a radio burst) costs the direct path only for the stall, not a renegotiation, as long as it
comes back within `direct_grace`; after that the node negotiates a new peer connection."""

from __future__ import annotations

import asyncio
import signal

from tests.node.conftest import Watcher, check_stream, start_inproc, start_proc


async def _stall(server, pause: float, grace: float) -> Watcher:  # type: ignore[no-untyped-def]
    """Freeze the clinician for `pause` s mid-stream; return the patient's events up to the
    shutdown (closing the nodes loses the direct path too, by design)."""
    patient = await start_inproc(
        server.join_url(server.mint("s1", "patient")), "patient", direct_grace=grace
    )
    clinician = await start_proc(server.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        await clinician.w.wait_for("path", active="direct")
        await clinician.w.wait_count("message", 20, kind="waveform")
        mark = len(patient.w.events)
        clinician.proc.send_signal(signal.SIGSTOP)
        try:
            await patient.w.wait_for("direct-stalled", after=mark)
            await asyncio.sleep(pause)
        finally:
            clinician.proc.send_signal(signal.SIGCONT)
        await patient.w.wait_for("path", active="direct", after=mark)
        n = len(clinician.w.events)
        await clinician.w.wait_for("message", path="direct", after=n)
        await clinician.w.wait_count("message", len(clinician.w.of("message")) + 20)
        rejected = patient.w.of("rejected") + clinician.w.of("rejected")  # before the shutdown
        before_stop = list(patient.w.events)
    finally:
        await patient.stop()
        await clinician.stop()
    peer = next(e for e in patient.w.of("sent") if e.get("peer"))["peer"]
    check_stream(patient.w.of("sent", peer=peer), clinician.w.of("message"))
    assert not rejected
    w = Watcher("patient")
    for e in before_stop:
        w.add(e)
    return w


async def test_short_stall_keeps_the_peer_connection(server) -> None:  # type: ignore[no-untyped-def]
    w = await _stall(server, pause=1.5, grace=30.0)
    assert w.of("direct-recovered")
    assert not w.of("direct-lost")
    assert [e["generation"] for e in w.of("direct-open")] == [1]


async def test_stall_past_the_grace_negotiates_a_new_connection(server) -> None:  # type: ignore[no-untyped-def]
    w = await _stall(server, pause=3.0, grace=1.0)
    lost = w.of("direct-lost")
    assert lost and "no heartbeat answer" in lost[0]["reason"]
    assert [e["generation"] for e in w.of("direct-open")][:2] == [1, 2]
