"""Renegotiation after a clinician restart: an offer that went out while the clinician was
dead is dropped as soon as the server reports the clinician back, and a new one goes out at
once, instead of waiting for ANSWER_TIMEOUT."""

from __future__ import annotations

from typing import Any

from tests.node.conftest import start_proc


def _index(events: list[dict[str, Any]], start: int, event: str, **match: Any) -> int:
    for i in range(start, len(events)):
        e = events[i]
        if e["event"] == event and all(e.get(k) == v for k, v in match.items()):
            return i
    raise AssertionError(f"no {event} {match} after index {start}")


async def test_stale_offer_dropped_when_clinician_comes_back(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p_url = server.join_url(server.mint("s1", "patient"))
    c_url = server.join_url(server.mint("s1", "clinician"))
    patient = await start_proc(p_url, "patient", "--data-dir", str(tmp_path / "p"))
    c1 = await start_proc(c_url, "clinician-1", "--data-dir", str(tmp_path / "c"))
    c2 = None
    try:
        await c1.w.wait_for("path", active="direct")
        await c1.w.wait_count("message", 5)
        c1.kill()
        await c1.stop()
        mark = len(patient.w.events)
        await patient.w.wait_for("path-down", path="direct", after=mark)
        # the patient re-offers while the clinician is dead: nobody will answer this one
        stale = await patient.w.wait_for("direct-offer", after=mark)
        c2 = await start_proc(c_url, "clinician-2", "--data-dir", str(tmp_path / "c"))
        await c2.w.wait_for("peer", state="restored")
        await c2.w.wait_for("path", active="direct")
        await patient.w.wait_for("path", active="direct", after=mark)
    finally:
        await patient.stop()
        if c2 is not None:
            await c2.stop()
    ev = patient.w.events
    i_stale = ev.index(stale)
    i_back = _index(ev, i_stale, "peer", state="back")
    i_drop = _index(ev, i_back, "direct-failed", reason="offer abandoned: peer reconnected")
    i_offer = _index(ev, i_drop, "direct-offer")
    i_open = _index(ev, i_offer, "direct-open")
    assert ev[i_offer]["generation"] > stale["generation"]
    assert ev[i_open]["generation"] == ev[i_offer]["generation"]
    # the stale offer was not waited out: no answer timeout, no backoff wait before re-offering
    between = ev[i_stale:i_open]
    assert not [e for e in between if e["event"] == "direct-failed" and "Timeout" in e["reason"]]
    assert not [e for e in ev[i_back:i_offer] if e["event"] == "direct-retry"]
    assert not patient.w.of("fingerprint-mismatch") and not c2.w.of("fingerprint-mismatch")
    assert not c2.w.of("handshake")  # the session resumed
