"""Every frame a node drops is reported with a reason (issue #11.4): a byte-identical replay of
one of the session's own frames on the path that delivered it, and frames of 64,577 and 65,000
bytes that a server relays, each give a `rejected` event and a count; the session goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from p2pmed.core.frame import MAX_FRAME, FrameType
from p2pmed.transport.relay import decode_envelope, encode_envelope
from tests.node.conftest import start_inproc
from tests.security.hostile_proxy import HostileProxy


@pytest.fixture
async def proxy(server) -> AsyncIterator[HostileProxy]:  # type: ignore[no-untyped-def]
    p = HostileProxy(server.ws_url)
    await p.start()
    yield p
    await p.close()


async def test_replayed_and_oversized_frames_are_reported(server, proxy) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(proxy.join_url(server.mint("s1", "patient")), "patient")
    clinician = await start_inproc(proxy.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        await clinician.w.wait_count("message", 5)
        pid = patient.node.endpoint_id
        cid = clinician.node.endpoint_id
        pings = [
            frame
            for src, data in proxy.relay_log
            if src == pid and (frame := decode_envelope(data)[1])[1] == FrameType.PING
        ]
        received = len(clinician.w.of("message"))
        await proxy.inject(cid, encode_envelope(pid, pings[-1]))  # the latest: still "recent"
        for size in (MAX_FRAME + 1, 65_000):
            assert size > MAX_FRAME
            await proxy.inject(cid, encode_envelope(pid, bytes(size)))
        await clinician.w.wait_for("rejected", kind="crypto", reason="replay", path="relay")
        await clinician.w.wait_for("rejected", kind="frame", reason="oversized", count=2)
        assert clinician.node.rejected["frame/oversized"] == 2
        await clinician.w.wait_count("message", received + 20)
        assert not clinician.w.of("session-closed")
    finally:
        await clinician.stop()
        await patient.stop()
