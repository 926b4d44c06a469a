"""A completed new handshake from another key never replaces a live session (trust gate).

A hostile signaling server runs a full, correctly signed handshake with the clinician while
claiming to be the patient, but signs with its own identity key. The clinician's candidate
session completes; before it may replace the established one the trust store is asked: the
key is not the pinned patient's, so the candidate is dropped with the identity-changed alarm
and the real session keeps delivering (no session-reset, no session-closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from p2pmed.core.frame import HANDSHAKE_TYPES
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


async def test_signed_handshake_with_another_key_keeps_the_live_session(
    server, proxy, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(
        proxy.join_url(server.mint("s1", "patient")), "patient", data_dir=str(tmp_path / "p")
    )
    clinician = await start_inproc(
        proxy.join_url(server.mint("s1", "clinician")), "clinician", data_dir=str(tmp_path / "c")
    )
    try:
        await clinician.w.wait_for("handshake")
        await clinician.w.wait_count("message", 5)
        pid = patient.node.endpoint_id
        cid = clinician.node.endpoint_id
        link = clinician.node.peers[pid]
        real = link.session
        mark = len(clinician.w.events)
        seen = len(proxy.relay_log)
        # the attacker's own handshake, signed with its own key, claiming to be the patient
        attacker = Identity.generate()
        forged = Session(SessionConfig(patient.node.session_id, True, attacker), now=1.0)
        forged.add_path("relay", 1.0)
        forged.connect(1.0)

        async def drive() -> None:
            nonlocal seen
            while True:
                for _path, frame in forged.datagrams_to_send(1.0):
                    await proxy.inject(cid, encode_envelope(pid, frame))
                for src, data in proxy.relay_log[seen:]:
                    _dst, frame = decode_envelope(data)
                    if src == cid and frame[1] in HANDSHAKE_TYPES:
                        forged.receive(frame, "relay", 1.0)
                seen = len(proxy.relay_log)
                while (event := forged.next_event()) is not None:
                    if type(event).__name__ == "HandshakeCompleted":
                        return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(drive(), 20)  # the attacker's side of the handshake completed
        alarm = await clinician.w.wait_for("technical-alarm", code="identity-changed", after=mark)
        assert alarm["fingerprint"] == attacker.fingerprint()
        received = len(clinician.w.of("message"))
        await clinician.w.wait_count("message", received + 20)  # the real session goes on
        after = clinician.w.events[mark:]
        assert not [e for e in after if e["event"] in ("session-reset", "session-closed")]
        assert link.session is real and link.established and not link.closed
        assert link.candidate is None
    finally:
        await clinician.stop()
        await patient.stop()
