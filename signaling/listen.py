"""The listening socket and what happens before a request reaches aiohttp.

Slowloris: a connection that is open but has not joined costs a file descriptor and holds
nothing of value. Before this guard, 1,124 half-open connections from one address (server
at ulimit -n 1024) made new clients wait. Now:
  - connections from one client IP that have not joined are capped (Limits.pending_per_ip),
    counted at accept time, before any HTTP parsing; one over the cap gets a plain
    HTTP 429 `too-many-connections` and is closed;
  - a connection that has not completed a request within Limits.handshake_timeout is
    closed (aiohttp's keepalive timer, which runs from accept; it was 75 s, or an hour
    in an AppRunner), as is a TLS handshake that takes longer;
  - an upgraded WebSocket that does not send `join` within Limits.join_timeout is closed
    by the hub.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from signaling import logs

# (ip, limit, first refusal since under the cap); limit is "pending-per-ip" or "unjoined"
Refused = Callable[[str, str, bool], None]


def _refusal() -> bytes:
    body = json.dumps(
        {"error": "too-many-connections", "message": "too many unjoined connections"}
    ).encode()
    head = (
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nRetry-After: 5\r\n\r\n"
    )
    return head.encode() + body


REFUSAL = _refusal()


class ConnectionGuard:
    """Counts connections per client IP until they join; refuses those over the per-IP
    cap, and any over the total cap (many addresses; it keeps file descriptors for the
    joined endpoints and the server's own files)."""

    def __init__(
        self, limit: int, total_limit: int, exempt: Callable[[str], bool] | None = None
    ) -> None:
        self.limit = limit
        self.total_limit = total_limit
        # a trusted proxy (proxies.py) carries many clients: only the total cap counts it
        self.exempt = exempt
        self.unjoined: dict[str, int] = {}
        self._ip: dict[asyncio.BaseTransport, str] = {}  # unjoined transports
        self._over: set[str] = set()
        self.on_refused: Refused | None = None

    def total(self) -> int:
        return len(self._ip)

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        n = self.unjoined.get(ip, 0)
        if len(self._ip) >= self.total_limit:
            return self._refuse(ip, "unjoined", "")
        if n >= self.limit and not (self.exempt is not None and self.exempt(ip)):
            return self._refuse(ip, "pending-per-ip", ip)
        self.unjoined[ip] = n + 1
        self._ip[transport] = ip
        return True

    def _refuse(self, ip: str, limit: str, key: str) -> bool:
        first = key not in self._over
        self._over.add(key)
        if self.on_refused is not None:
            self.on_refused(ip, limit, first)
        return False

    def joined(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection carries a joined endpoint now: it no longer counts."""
        ip = self._ip.pop(transport, None) if transport is not None else None
        if ip is None:
            return
        left = self.unjoined[ip] - 1
        if left > 0:
            self.unjoined[ip] = left
        else:
            del self.unjoined[ip]
        if left < self.limit:
            self._over.discard(ip)
        if len(self._ip) < self.total_limit:
            self._over.discard("")

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, factory())


class _Guarded(asyncio.Protocol):
    """Forwards every callback to aiohttp's protocol, once the guard has admitted it."""

    __slots__ = ("guard", "inner", "transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner: asyncio.Protocol | None = inner
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.guard.admit(transport):
            self.inner = None
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(REFUSAL)
            transport.close()
            return
        assert self.inner is not None
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.joined(self.transport)  # no longer counts either way
        if self.inner is not None:
            self.inner.connection_lost(exc)


class GuardedSite(web.SockSite):
    """aiohttp's SockSite with the guard in front and a bounded TLS handshake."""

    def __init__(
        self, runner: web.BaseRunner, sock: socket.socket, guard: ConnectionGuard, **kw: Any
    ) -> None:
        self._handshake_timeout = kw.pop("handshake_timeout", 5.0)
        super().__init__(runner, sock, **kw)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        extra: dict[str, Any] = {}
        if self._ssl_context is not None:
            extra["ssl_handshake_timeout"] = self._handshake_timeout
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.wrap(server),
            sock=self._sock,
            ssl=self._ssl_context,
            backlog=self._backlog,
            **extra,
        )


class PortInUse(Exception):
    pass


def _listener(port: int) -> str:
    """Best effort: which process listens on TCP `port` (from /proc; only processes this
    user may inspect). '' if unknown."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return ""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    return f"pid {proc.name}: {cmd.strip()[:120]}"
        except OSError:
            continue
    return ""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts (so a port in use fails
    before the audit log says `start`)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and not host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            who = _listener(port)
            by = f" (by {who})" if who else ""
            raise PortInUse(f"port {port} on {host or '*'} is already in use{by}") from None
        raise
    return sock


def log_refusal(limit: str) -> None:
    logs.event("connections-refused", reason=limit)
