"""Endpoints and sessions as the hub keeps them, and closing a WebSocket without hanging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from signaling.tokens import Grant

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
    def __init__(self, session: Session, grant: Grant, endpoint_id: str, ip: str) -> None:
        self.session = session
        self.id = endpoint_id
        self.id_bytes = endpoint_id.encode()
        self.prefix = bytes([len(self.id_bytes)]) + self.id_bytes
        self.role = grant.role
        self.jti = grant.root_jti  # the join token this endpoint descends from
        self.resume_at: float | None = None  # monotonic time its last resume token was sent
        self.ip = ip
        self.admitted = grant.role != "patient"
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

    def info(self) -> dict[str, Any]:
        return {"endpoint_id": self.id, "role": self.role, "admitted": self.admitted}


class Session:
    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.endpoints: dict[str, Endpoint] = {}
        self.by_bytes: dict[bytes, Endpoint] = {}

    def others(self, ep: Endpoint) -> list[Endpoint]:
        return [e for e in self.endpoints.values() if e is not ep]

    def patient(self) -> Endpoint | None:
        return next((e for e in self.endpoints.values() if e.role == "patient"), None)
