"""Client side of the signaling WebSocket: join, JSON messages, relay frames, reconnects.

The client keeps one WebSocket to `{server}/ws`. When it drops (server restart, network), it
reconnects with backoff and joins again with the same endpoint id, which takes over the old place.
Outgoing messages are queued and written by one task, so callers never block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from p2pmed.transport.relay import ENDPOINT_ID, EnvelopeError, decode_envelope

log = logging.getLogger("p2pmed.signaling_client")

MAX_QUEUE_BYTES = 8 * 1024 * 1024
# What the node accepts from the server. The server's own limit is 64 KiB per message; an SDP
# is a few KiB. Anything bigger or deeper is rejected and counted (hostile or broken server).
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_JSON_CHARS = 256 * 1024
MAX_JSON_DEPTH = 16
CERT_RETRY = 60.0  # an untrusted certificate after we had joined: retry this slowly
# Refusals that no retry can cure (besides every "token-..." code). Before the first join every
# refusal is final, so `p2pmed node` fails with the server's reason, but BUSY_CODES; after it,
# the others (rate limit, capacity, "patient-present" while an old connection lingers) are
# retried.
FATAL_CODES = frozenset({"wrong-session", "role-mismatch", "forbidden"})
# A limit or capacity of the moment (4429, 4503): retried with backoff before the first join
# too, as an unreachable server is, within the caller's join timeout. Final, they stopped a
# node for good (a service manager does not restart a refused token): a ward's gateways
# rejoining at once from one address after a power cut hit the per-address join limit.
BUSY_CODES = frozenset({"too-many-joins", "rate-limited", "server-full", "session-full"})
REVOKED_CLOSE = 4410  # the server closed us because our token was revoked


class JoinUrlError(ValueError):
    """The join URL cannot be used; the message says why."""


class SignalingCertificateError(RuntimeError):
    """The server's TLS certificate is not trusted here: not transient, retrying cannot help."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(
            f"the signaling server {server} presented a TLS certificate this machine does not "
            f"trust ({reason}); if it comes from a private CA, pass --ca-file PATH (PEM) or set "
            "SSL_CERT_FILE to a bundle that includes it"
        )
        self.server = server


class SignalingRefused(RuntimeError):
    """The server refused this endpoint for good (bad or expired token, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"signaling server refused to join: {code}: {message}")
        self.code = code


@dataclass(frozen=True)
class JoinUrl:
    server: str  # http(s)://host:port[/prefix]
    token: str

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.server.startswith("https:") else "ws"
        return scheme + self.server[self.server.index(":") :] + "/ws"


def parse_join_url(url: str) -> JoinUrl:
    """`{server}/join#token=T` -> JoinUrl. Raises JoinUrlError with a clear message."""
    if not isinstance(url, str) or not url.strip():
        raise JoinUrlError("join URL is empty")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise JoinUrlError(f"join URL must start with http:// or https://, got {url!r}")
    if not parts.hostname:
        raise JoinUrlError(f"join URL has no host: {url!r}")
    try:
        _ = parts.port
    except ValueError:
        raise JoinUrlError(f"join URL has an invalid port: {url!r}") from None
    if not parts.path.endswith("/join"):
        raise JoinUrlError(f"join URL path must end with /join, got {parts.path or '/'!r}")
    fragment = parts.fragment
    token = ""
    for item in fragment.split("&"):
        key, _, value = item.partition("=")
        if key == "token":
            token = value
    if not token:
        raise JoinUrlError("join URL has no token: expected '#token=...' after /join")
    if len(token) > 4096 or any(c.isspace() for c in token):
        raise JoinUrlError("join URL token is malformed")
    base = f"{parts.scheme}://{parts.netloc}{parts.path[: -len('/join')]}"
    return JoinUrl(server=base, token=token)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _depth(obj: object) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                stack.extend((x, d + 1) for x in item)
    return deepest


MessageHandler = Callable[[dict[str, Any]], None]
RelayHandler = Callable[[str, bytes], None]
StateHandler = Callable[[bool], None]


class SignalingClient:
    def __init__(
        self,
        join: JoinUrl,
        endpoint_id: str,
        *,
        on_message: MessageHandler,
        on_relay: RelayHandler,
        on_state: StateHandler,
        max_backoff: float = 2.0,
        resume_token: str | None = None,
        on_resume_token: Callable[[str], None] | None = None,
        on_rejected: Callable[[str, str], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not ENDPOINT_ID.match(endpoint_id):
            raise ValueError(f"invalid endpoint id {endpoint_id!r}")
        self.join = join
        self.endpoint_id = endpoint_id
        self._on_message = on_message
        self._on_relay = on_relay
        self._on_state = on_state
        self._max_backoff = max_backoff
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._http: aiohttp.ClientSession | None = None
        self._queue: deque[str | bytes] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._joined = False
        self._closing = False
        self.revoked = False  # the server revoked our token: never reconnect
        self.paused: set[str] = set()  # peers the server asked us to stop relaying to
        self.envelopes_rejected = 0
        self.rejected: dict[str, int] = {}  # server messages refused, by reason
        # the last try's BUSY_CODES refusal of a first join ("code: text"); None when the last
        # try ended otherwise
        self.busy: str | None = None
        self._busy_count = 0
        self.crashes = 0  # connection loops that ended with an unexpected exception
        self._on_rejected = on_rejected
        self._ssl = ssl_context  # None: the default trust store (honours SSL_CERT_FILE)
        self.connects = 0
        self.joined_info: dict[str, Any] = {}
        self.first_join: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        # The server's resume token for this endpoint: used instead of the join token from the
        # next connection on, so the node can rejoin after its join token expired.
        self.resume_token = resume_token
        self._on_resume_token = on_resume_token

    @property
    def connected(self) -> bool:
        return self._joined

    # ---- sending (never blocks; drops when disconnected) ----
    def send_json(self, msg: dict[str, Any]) -> bool:
        return self._enqueue(json.dumps(msg, separators=(",", ":")))

    def send_binary(self, data: bytes) -> bool:
        return self._enqueue(data)

    def send_relay_allowed(self, peer_id: str) -> bool:
        return self._joined and peer_id not in self.paused

    def _enqueue(self, item: str | bytes) -> bool:
        if not self._joined or self._queued_bytes + len(item) > MAX_QUEUE_BYTES:
            return False
        self._queue.append(item)
        self._queued_bytes += len(item)
        self._wake.set()
        return True

    def _take_resume_token(self, token: object) -> None:
        if isinstance(token, str) and 0 < len(token) <= 4096 and token != self.resume_token:
            self.resume_token = token
            if self._on_resume_token is not None:
                self._on_resume_token(token)

    # ---- HTTP helpers ----
    async def turn_servers(self) -> list[dict[str, Any]]:
        """ICE servers from GET /turn-credentials; [] when the server offers none or fails."""
        assert self._http is not None
        try:
            async with self._http.get(
                self.join.server + "/turn-credentials",
                headers={"Authorization": f"Bearer {self.resume_token or self.join.token}"},
                timeout=aiohttp.ClientTimeout(total=3),
            ) as resp:
                if resp.status != 200:
                    log.info("no TURN credentials (HTTP %s)", resp.status)
                    return []
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("no TURN credentials: %s", exc)
            return []
        servers = body.get("iceServers") if isinstance(body, dict) else None
        return [s for s in servers or [] if isinstance(s, dict) and s.get("urls")]

    # ---- connection loop ----
    async def run(self) -> None:
        """Connect, join and serve until close(); reconnect with backoff on any drop."""
        connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
        self._http = aiohttp.ClientSession(connector=connector)
        backoff = 0.1
        try:
            while not self._closing:
                try:
                    delay = await self._connect_once()
                except Exception as exc:  # supervisor: log, count, reconnect
                    self.crashes += 1
                    log.error("signaling connection failed unexpectedly", exc_info=exc)
                    self._reject("internal", f"{type(exc).__name__}: {exc}"[:200])
                    delay = None
                if self._closing:
                    break
                if delay is None:
                    delay = backoff
                    backoff = min(self._max_backoff, backoff * 2)
                else:
                    backoff = 0.1
                await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
        finally:
            await self._http.close()

    async def _connect_once(self) -> float | None:
        """One connection's life. Returns the server's requested delay before reconnecting."""
        assert self._http is not None
        try:
            ws = await self._http.ws_connect(
                self.join.ws_url,
                heartbeat=5.0,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                max_msg_size=MAX_MESSAGE_BYTES,
            )
        except aiohttp.ClientConnectorCertificateError as exc:
            reason = getattr(exc.certificate_error, "verify_message", "") or str(
                exc.certificate_error
            )
            err = SignalingCertificateError(self.join.server, reason)
            if not self.first_join.done():
                self._fail(err)
                return None
            # joined before: the certificate changed under us. Not a blip; try again slowly.
            log.error("%s", err)
            self._reject("tls", str(err))
            return CERT_RETRY
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if (
                not self.first_join.done()
                and isinstance(exc, aiohttp.WSServerHandshakeError)
                and exc.status in (403, 404)
            ):
                self._fail(SignalingRefused(f"http-{exc.status}", str(exc.message)))
                return None
            log.debug("signaling connect failed: %s", exc)
            self.busy = None  # the last try did not reach the server: say that, not an old refusal
            return None
        self._ws = ws
        busy_before = self._busy_count
        self.connects += 1
        writer = asyncio.create_task(self._writer(ws))
        reconnect_after: float | None = None
        token = self.resume_token or self.join.token
        try:
            await ws.send_json({"type": "join", "token": token, "endpoint_id": self.endpoint_id})
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = self._parse(msg.data)
                    if data is None:
                        continue
                    action = self._handle(data, token)
                    if action == "break":
                        break
                    if isinstance(action, float):
                        reconnect_after = action
                        if data.get("type") != "reconnect":
                            break
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    try:
                        peer, frame = decode_envelope(msg.data)
                    except EnvelopeError:
                        self.envelopes_rejected += 1
                        self._reject("envelope", "relay envelope from the server is malformed")
                        continue
                    try:
                        self._on_relay(peer, frame)
                    except Exception as exc:  # one bad frame must not end the connection
                        log.warning("relay frame handler failed", exc_info=exc)
                        self._reject("handler", f"relay frame: {type(exc).__name__}")
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    ws_error = msg.data if isinstance(msg.data, BaseException) else ws.exception()
                    if isinstance(ws_error, aiohttp.WebSocketError) and (
                        ws_error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
                    ):
                        self._reject("size", f"message larger than {MAX_MESSAGE_BYTES} bytes")
                    else:
                        self._reject("protocol", f"WebSocket error: {ws_error!r}")
                    break
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    break
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("signaling connection lost: %s", exc)
        finally:
            if ws.close_code == REVOKED_CLOSE and not self.revoked:  # the error was lost
                self._revoked({"type": "error", "code": "token-revoked", "message": "close 4410"})
            was_joined = self._joined
            self._joined = False
            if self._busy_count == busy_before:
                self.busy = None
            self._queue.clear()
            self._queued_bytes = 0
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            with contextlib.suppress(Exception):
                await ws.close()
            self._ws = None
            if was_joined:
                self._on_state(False)
        return reconnect_after

    def _parse(self, text: str) -> dict[str, Any] | None:
        """A JSON object from the server, or None (rejected and counted)."""
        if len(text) > MAX_JSON_CHARS:
            self._reject("size", f"JSON message of {len(text)} characters")
            return None
        try:
            data = json.loads(text)
        except RecursionError:
            self._reject("depth", "JSON nested too deeply")
            return None
        except ValueError:
            self._reject("json", "message is not JSON")
            return None
        if not isinstance(data, dict):
            self._reject("type", f"message is a JSON {type(data).__name__}, not an object")
            return None
        if _depth(data) > MAX_JSON_DEPTH:
            self._reject("depth", "JSON nested too deeply")
            return None
        if not isinstance(data.get("type"), str):
            self._reject("type", "message has no string 'type'")
            return None
        return data

    def _handle(self, data: dict[str, Any], token: str) -> str | float | None:
        """Act on one server message. Returns "break" to drop the connection, a float to
        reconnect after that many seconds, else None. A message with fields of the wrong type,
        or a handler that raises, is rejected and counted; the connection goes on."""
        kind = data["type"]
        try:
            if kind in ("joined", "resume-token"):
                self._take_resume_token(data.get("resume_token") or data.get("token"))
            if kind == "joined":
                self._joined = True
                self.paused.clear()
                self.joined_info = data
                if not self.first_join.done():
                    self.first_join.set_result(data)
                self._on_state(True)
            elif kind == "reconnect":
                after = data.get("after_ms", 500)
                if not _is_number(after):
                    self._reject("field", "reconnect: after_ms is not a number")
                    after = 500
                self._on_message(data)
                return max(0.0, min(30.0, float(after) / 1000.0))
            elif kind == "backpressure":
                peer = data.get("to")
                if not isinstance(peer, str):
                    self._reject("field", "backpressure: 'to' is not a string")
                    return None
                if data.get("paused"):
                    self.paused.add(peer)
                else:
                    self.paused.discard(peer)
            elif kind == "error" and self._joined and data.get("code") == "token-revoked":
                self._revoked(data)
                return "break"
            elif kind == "error" and not self._joined:
                code = str(data.get("code", "error"))[:100]
                token_error = code.startswith("token-")
                if token_error and token != self.join.token:
                    # the resume token was refused (it expired while we were away, or was
                    # revoked): the join token decides
                    log.info("resume token refused (%s); trying the join token", code)
                    self.resume_token = None
                    return 0.0
                if self.first_join.done() and not token_error and code not in FATAL_CODES:
                    log.info("rejoin refused for now (%s); retrying", code)
                    return "break"
                if code in BUSY_CODES:
                    self.busy = f"{code}: {str(data.get('message', ''))[:200]}"
                    self._busy_count += 1
                    log.info("join refused for now (%s); retrying", code)
                    return "break"
                self._on_message(data)
                self._fail(SignalingRefused(code, str(data.get("message", ""))[:500]))
                return "break"
            self._on_message(data)
        except Exception as exc:  # a hostile or buggy message must not end signaling
            log.warning("server message %r: handler failed", kind[:40], exc_info=exc)
            self._reject("handler", f"{kind[:40]}: {type(exc).__name__}")
        return None

    def _revoked(self, data: dict[str, Any]) -> None:
        """Our token was revoked while connected (error token-revoked, close 4410): final.
        The node hears it as that error (also when a rejoin is refused for it)."""
        self.revoked = True
        self._closing = True
        try:
            self._on_message(data)
        except Exception as exc:
            log.warning("revocation handler failed", exc_info=exc)
            self._reject("handler", f"token-revoked: {type(exc).__name__}")

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self._on_rejected is not None:
            with contextlib.suppress(Exception):
                self._on_rejected(reason, detail)

    def _fail(self, exc: Exception) -> None:
        if not self.first_join.done():
            self.first_join.set_exception(exc)
        self._closing = True

    async def _writer(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                item = self._queue.popleft()
                self._queued_bytes -= len(item)
                if isinstance(item, str):
                    await ws.send_str(item)
                else:
                    await ws.send_bytes(item)

    async def close(self) -> None:
        self._closing = True
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.send_json({"type": "leave"})
            with contextlib.suppress(Exception):
                await ws.close()
