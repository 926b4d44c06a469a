"""A relay-only clinician written from docs/protocol.md (plain aiohttp WebSocket, the core only
for the crypto) that never answers the offer gets vitals right after admission (issue #11.3):
the patient starts the E2E handshake on the relay as soon as both are present and admitted."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp

from p2pmed.core import events as ev
from p2pmed.core.identity import Identity
from p2pmed.core.session import Session, SessionConfig
from p2pmed.transport.relay import decode_envelope, encode_envelope
from tests.node.conftest import start_inproc


async def test_relay_only_client_gets_vitals_soon_after_admission(server) -> None:  # type: ignore[no-untyped-def]
    offers = 0
    admitted_at: float | None = None
    first_vitals: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    session: Session | None = None
    patient_id = ""
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_json(
            {"type": "join", "token": server.mint("s1", "clinician"), "endpoint_id": "relayclin"}
        )
        joined = await ws.receive_json(timeout=10)
        assert joined["type"] == "joined"
        patient = await start_inproc(server.join_url(server.mint("s1", "patient")), "patient")

        async def pump() -> None:
            while session is not None:
                now = time.time()
                timer = session.get_timer()
                if timer is not None and timer <= now:
                    session.handle_timer(now)
                for _, frame in session.datagrams_to_send(now):
                    await ws.send_bytes(encode_envelope(patient_id, frame))
                while (event := session.next_event()) is not None:
                    if isinstance(event, ev.MessageReceived) and not first_vitals.done():
                        first_vitals.set_result(time.monotonic())
                await asyncio.sleep(0.005)

        async def read() -> None:
            nonlocal offers, admitted_at, session, patient_id
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY and session is not None:
                    _src, frame = decode_envelope(msg.data)
                    session.receive(frame, "relay", time.time())
                    continue
                data = msg.json()
                if data["type"] == "peer-waiting" and data["role"] == "patient":
                    patient_id = data["endpoint_id"]
                    now = time.time()
                    session = Session(
                        SessionConfig(joined["session"], False, Identity.generate()), now=now
                    )
                    session.add_path("relay", now)
                    tasks.append(asyncio.ensure_future(pump()))
                    admitted_at = time.monotonic()
                    await ws.send_json({"type": "admit", "endpoint_id": patient_id})
                elif data["type"] == "offer":
                    offers += 1  # never answered: this client has no WebRTC

        tasks = [asyncio.ensure_future(read())]
        try:
            got = await asyncio.wait_for(first_vitals, 30)
        finally:
            for t in tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await patient.stop()
    assert admitted_at is not None
    delay = got - admitted_at
    print(f"first vitals {delay * 1000:.0f} ms after admission; offers left unanswered: {offers}")
    assert delay < 10.0  # generous: the bar is 2 s, the old code took 30-40 s or never
