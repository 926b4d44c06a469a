"""A patient endpoint for page tests: the real Python Session over the real signaling relay.

It joins the signaling server as the patient, runs the handshake as initiator when the clinician
page is admitted, and moves frames through the relay envelope only (no direct path).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from p2pmed.core import events as ev
from p2pmed.core import frame
from p2pmed.core.frame import MessageClass
from p2pmed.core.identity import Identity
from p2pmed.core.session import Session, SessionConfig
from p2pmed.transport.relay import decode_envelope, encode_envelope


class RelayPatient:
    def __init__(
        self,
        ws_url: str,
        token: str,
        endpoint_id: str = "pat-sim",
        identity: Identity | None = None,
    ) -> None:
        self.ws_url = ws_url
        self.token = token
        self.endpoint_id = endpoint_id
        self.identity = identity or Identity.generate()
        self.session: Session | None = None
        self.peer: str | None = None
        self.events: list[Any] = []
        self.paused = False  # stop moving frames both ways (relay outage)
        self.mutate: Callable[[bytes], bytes] | None = None  # applied once to the next DATA frame
        self.joined: dict[str, Any] = {}
        self.leave_on_exit = False  # say `leave` instead of just dropping the connection
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RelayPatient:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self.ws_url)
        await self._ws.send_json(
            {"type": "join", "token": self.token, "endpoint_id": self.endpoint_id}
        )
        self.joined = await self._ws.receive_json(timeout=5)
        assert self.joined["type"] == "joined", self.joined
        self._tasks = [asyncio.create_task(self._reader()), asyncio.create_task(self._driver())]
        # back in a session that admitted us before: the clinician is already there
        if not self.joined.get("waiting"):
            for p in self.joined.get("peers", []):
                if p.get("role") == "clinician":
                    self._start(p["endpoint_id"])
        return self

    def _start(self, peer: str) -> None:
        self.peer = peer
        now = time.time()
        self.session = Session(
            SessionConfig(
                session_id=self.joined["session"], initiator=True, identity=self.identity
            ),
            now=now,
        )
        self.session.add_path("relay", now, preferred=True)
        self.session.connect(now)

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._ws is not None:
            if self.leave_on_exit and not self._ws.closed:
                await self._ws.send_json({"type": "leave"})
            await self._ws.close()
        if self._http is not None:
            await self._http.close()

    async def _reader(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = msg.json()
                if data.get("type") == "peer-joined" and data.get("role") == "clinician":
                    self._start(data["endpoint_id"])
            elif msg.type == aiohttp.WSMsgType.BINARY and self.session and not self.paused:
                _, data = decode_envelope(msg.data)
                self.session.receive(data, "relay", time.time())

    async def _driver(self) -> None:
        assert self._ws is not None
        while True:
            s = self.session
            if s is not None and self.peer is not None:
                now = time.time()
                t = s.get_timer()
                if t is not None and t <= now:
                    s.handle_timer(now)
                for _, data in s.datagrams_to_send(now):
                    if self.paused:
                        continue
                    if self.mutate is not None and data[1] == frame.FrameType.DATA:
                        data, self.mutate = self.mutate(data), None
                    try:
                        await self._ws.send_bytes(encode_envelope(self.peer, data))
                    except ConnectionError:  # the server closed us (left, revoked)
                        return
                while (e := s.next_event()) is not None:
                    self.events.append(e)
            await asyncio.sleep(0.005)

    def send(self, cls: MessageClass, data: bytes) -> int:
        assert self.session is not None
        return self.session.send(cls, data, time.time())

    @property
    def established(self) -> bool:
        return any(isinstance(e, ev.HandshakeCompleted) for e in self.events)

    @property
    def closed(self) -> ev.SessionClosed | None:
        return next((e for e in self.events if isinstance(e, ev.SessionClosed)), None)

    def received(self) -> list[ev.MessageReceived]:
        return [e for e in self.events if isinstance(e, ev.MessageReceived)]

    async def wait(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not cond():
            if loop.time() > end:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.02)


def flip_ciphertext_bit(data: bytes) -> bytes:
    """Tamper with an encrypted frame and fix its CRC, so only the AEAD can notice."""
    b = bytearray(data)
    b[frame.HEADER_SIZE] ^= 0x01
    body = bytes(b[:-4])
    return body + frame.crc32(body).to_bytes(4, "big")
