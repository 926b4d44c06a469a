"""Replayed handshake frames never tear down a live consultation (issue #10.3).

A hostile signaling server captures the session's own HS_COMMIT (and HS_REVEAL) on the relay
and replays them to the clinician long after establishment. The frames are unauthenticated:
they are counted as rejected with a reason, the established session keeps delivering, and no
session-reset happens. A new HS_COMMIT (another session's) only starts a candidate session that
nobody can complete, which never touches the running one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from p2pmed.core.frame import FrameType
from p2pmed.core.identity import Identity
from p2pmed.core.session import Session, SessionConfig
from p2pmed.transport.relay import decode_envelope, encode_envelope
from tests.node.conftest import start_inproc
from tests.security.hostile_proxy import HostileProxy


@pytest.fixture
async def proxy(server) -> AsyncIterator[HostileProxy]:  # type: ignore[no-untyped-def]
    p = HostileProxy(server.ws_url)
    await p.start()
    yield p
    await p.close()


def _captured(proxy: HostileProxy, src: str, ftype: FrameType) -> bytes:
    for source, data in proxy.relay_log:
        if source == src:
            _dst, frame = decode_envelope(data)
            if frame[1] == ftype:
                return frame
    raise AssertionError(f"no {ftype.name} from {src} on the relay")


async def test_replayed_handshake_frames_do_not_reset_a_live_session(server, proxy) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(proxy.join_url(server.mint("s1", "patient")), "patient")
    clinician = await start_inproc(proxy.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        await clinician.w.wait_for("handshake")
        await clinician.w.wait_count("message", 5)
        await asyncio.sleep(3.5)  # well after establishment: no "late copy" excuse
        pid = patient.node.endpoint_id
        cid = clinician.node.endpoint_id
        commit = _captured(proxy, pid, FrameType.HS_COMMIT)
        reveal = _captured(proxy, pid, FrameType.HS_REVEAL)
        mark = len(clinician.w.events)
        received = len(clinician.w.of("message"))
        for frame in (commit, reveal, commit, commit):
            await proxy.inject(cid, encode_envelope(pid, frame))
        await clinician.w.wait_for("rejected", kind="crypto", reason="handshake_replay", after=mark)
        await clinician.w.wait_count("message", received + 30)
        after = clinician.w.events[mark:]
        assert not [e for e in after if e["event"] in ("session-reset", "session-closed")]
        assert not [e for e in after if e["event"] == "handshake"]
        assert clinician.node.rejected["crypto/handshake_replay"] >= 3
        assert clinician.node.peers[pid].candidate is None  # its own commit: no candidate
    finally:
        await clinician.stop()
        await patient.stop()


async def test_foreign_commit_runs_a_candidate_that_never_replaces_the_session(
    server, proxy
) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(proxy.join_url(server.mint("s1", "patient")), "patient")
    clinician = await start_inproc(proxy.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        await clinician.w.wait_for("handshake")
        await clinician.w.wait_count("message", 5)
        pid = patient.node.endpoint_id
        cid = clinician.node.endpoint_id
        # an attacker's own signed-by-nobody-known handshake start, claiming to be the patient
        forged = Session(SessionConfig(patient.node.session_id, True, Identity.generate()), now=1.0)
        forged.add_path("relay", 1.0)
        forged.connect(1.0)
        commit = forged.datagrams_to_send(1.0)[0][1]
        mark = len(clinician.w.events)
        received = len(clinician.w.of("message"))
        await proxy.inject(cid, encode_envelope(pid, commit))
        link = clinician.node.peers[pid]
        await clinician.w.wait_count("message", received + 30)
        assert link.candidate is not None  # running alongside, waiting for a signed reveal
        after = clinician.w.events[mark:]
        assert not [e for e in after if e["event"] in ("session-reset", "session-closed")]
        # the candidate's HS_REPLY reached the patient, whose live session refused it
        await patient.w.wait_for("rejected", kind="state")
    finally:
        await clinician.stop()
        await patient.stop()
