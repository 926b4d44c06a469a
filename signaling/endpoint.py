"""An endpoint's connection side on this server, and closing a WebSocket without hanging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from signaling.state.store import Member

CLOSE_TIMEOUT = 2.0  # seconds to wait for the peer's close frame


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


async def shut(ws: web.WebSocketResponse, code: int, reason: bytes) -> None:
    """Close without waiting for buffered data to drain (a stalled client could hold it
    forever), then give the client CLOSE_TIMEOUT to answer the close frame."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, message=reason, drain=False), CLOSE_TIMEOUT + 1)


class Closing(Exception):
    def __init__(self, code: int, err: str, message: str) -> None:
        super().__init__(message)
        self.code, self.err, self.message = code, err, message


class Endpoint:
    """What this server keeps of an endpoint it holds: the connection, the outbound queue and
    the relay counters. Its session record (role, join token, admission) is the store's; this
    keeps the store's latest answer in `member`, replaced after each store write, never
    changed in place."""

    def __init__(self, member: Member, ip: str) -> None:
        self.member = member
        self.session = member.session
        self.id = member.endpoint_id
        self.id_bytes = self.id.encode()
        self.prefix = bytes([len(self.id_bytes)]) + self.id_bytes
        self.role = member.role
        self.resume_at: float | None = None  # monotonic time its last resume token was sent
        self.ip = ip
        self.ws: web.WebSocketResponse | None = None
        self.disconnected_at: float | None = None
        self.last_activity = time.monotonic()
        self.gone = False
        # (perf_counter time queued if sampled for the latency metric, else None; item)
        self.queue: deque[tuple[float | None, bytes | str]] = deque()
        self.qframes = 0
        self.qbytes = 0
        self.wake = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()
        self.writer: asyncio.Task[None] | None = None
        self.sending = False  # a reader is sending directly to this endpoint right now
        self.buffered: Callable[[], int] | None = None  # the socket's write buffer size
        self.transport: asyncio.Transport | None = None
        # fast-path relay frames (already enveloped) written in one go per loop iteration
        self.batch: list[bytes] = []
        self.batch_bytes = 0
        self.batch_t: float | None = None  # perf_counter time the batch started
        self.relay_pairs: dict[str, list[int]] = {}

    @property
    def admitted(self) -> bool:
        return self.member.admitted

    @property
    def jti(self) -> str:
        return self.member.jti
