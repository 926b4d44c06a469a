"""The aiohttp application: factory, routes, middlewares, start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import sqlite3
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from signaling import closecodes as cc
from signaling import gcwatch, logs
from signaling.audit import AUDIT_FILE, AuditError, AuditLog
from signaling.bindings import BINDINGS, BindingStore
from signaling.cluster import on_bus, on_frames
from signaling.config import Config
from signaling.datadir import DataDirError, DataDirInUse, DataDirLock, secure_data_dir
from signaling.hub import Hub, shut
from signaling.keys import KeyFileError, audit_key, load_secret
from signaling.listen import ConnectionGuard, GuardedSite, log_refusal
from signaling.metrics import Metrics
from signaling.origins import normalize
from signaling.proxies import TrustedProxies
from signaling.replies import send_now
from signaling.sweep import WALK_EVERY
from signaling.tokens import (
    REVOCATIONS,
    RevocationStore,
    TokenError,
    Verifier,
    previous_token_key,
    token_key,
)
from signaling.turncreds import credentials
from signaling.wards import ClusterWards

CONFIG = web.AppKey("config", Config)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
GUARD = web.AppKey("guard", ConnectionGuard)
LOCK = web.AppKey("lock", DataDirLock)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'self'; form-action 'none'"
)


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    if not resp.prepared:
        h = resp.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Cache-Control", "no-store")
        if request.secure:
            h.setdefault("Strict-Transport-Security", "max-age=31536000")
    return resp


@web.middleware
async def origin_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp does not check the Origin of WebSocket upgrades; this does (CSWSH)."""
    if request.path == "/ws":
        origin = request.headers.get("Origin")
        if origin is not None:
            try:
                ok = normalize(origin) in request.app[CONFIG].origins()
            except ValueError:  # "null" (sandboxed frames, file://) and other non-origins
                ok = False
            if not ok:
                hub = request.app[HUB]
                hub.replies.reject(
                    "origin", hub.client_ip(request), origin=urlsplit(origin).netloc[:100]
                )
                return json_error(403, "origin", "Origin not allowed for WebSocket upgrade")
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        logs.log.exception("handler-error", extra={"fields": {"path": request.path}})
        return json_error(500, "internal", "internal error")


async def ws_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[HUB].handle(request)


async def join_page(request: web.Request) -> web.StreamResponse:
    index = request.app[CONFIG].web_dir / "index.html"
    if not index.is_file():
        return json_error(404, "no-page", "web/index.html is not installed")
    resp = web.FileResponse(index)
    resp.headers["Content-Security-Policy"] = CSP
    # the station page shows each bed as this page in a same-origin frame (web/js/station.js)
    resp.headers["X-Frame-Options"] = "SAMEORIGIN"
    return resp


async def healthz(request: web.Request) -> web.StreamResponse:
    return await healthz_of(request.app)


async def healthz_of(app: web.Application) -> web.StreamResponse:
    hub = app[HUB]
    # a cluster server cut from Redis refuses joins: the load balancer should send them
    # elsewhere (its joined endpoints stay connected)
    down = hub.closing or not hub.store.available()
    status = "shutting-down" if hub.closing else "ok" if not down else "store-unavailable"
    # no walk over the endpoints: the load balancer asks twice a second
    return web.json_response(
        {"status": status, "sessions": hub.store.session_count(), "endpoints": len(hub.local)},
        status=503 if down else 200,
    )


async def turn_credentials(request: web.Request) -> web.StreamResponse:
    config, hub = request.app[CONFIG], request.app[HUB]
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    ip = hub.client_ip(request)
    if scheme.lower() != "bearer" or not token.strip():
        hub.replies.reject("token-missing", ip, path="/turn-credentials")
        return json_error(401, "token-missing", "Authorization: Bearer <join token> required")
    try:
        grant = hub.verifier.verify(token.strip())
    except TokenError as e:
        hub.replies.reject(f"token-{e.reason}", ip, path="/turn-credentials")
        return json_error(401, f"token-{e.reason}", str(e))
    if not config.turn_secret or not config.turn_urls:
        # no TURN here is a normal setup (direct paths and the WebSocket relay remain), not an
        # error: a 503 showed as a console error on every page load
        return web.json_response({"iceServers": [], "ttl": 0})
    user, password = credentials(config.turn_secret, grant.jti, config.turn_ttl)
    request.app[METRICS].turn_credentials.inc()
    hub.audit.append("turn-credentials", session=grant.session, role=grant.role, jti=grant.jti)
    return web.json_response(
        {
            "iceServers": [{"urls": config.turn_urls, "username": user, "credential": password}],
            "ttl": config.turn_ttl,
        }
    )


async def _sweeper(app: web.Application) -> None:
    hub, config = app[HUB], app[CONFIG]
    # a cluster closes a revoked endpoint within 1 s wherever it is: the revoking server
    # must notice `p2pmed token revoke` (a SQLite write) well within that
    top = 1.0 if config.redis_url is None else 0.25
    tick = max(0.05, min(top, config.idle_timeout / 4, config.reconnect_grace / 4))
    every = max(tick, min(WALK_EVERY, config.idle_timeout / 4, config.reconnect_grace / 4))
    last_cp = asyncio.get_running_loop().time()
    walked: float | None = None
    # not `while True`: on Python 3.11 asyncio.wait_for (in close_ws) can swallow the
    # cancellation at shutdown, and the loop would then run forever with the server waiting
    while not hub.closing:
        with contextlib.suppress(TimeoutError):  # a revocation from the cluster wakes it
            await asyncio.wait_for(hub.sweep_now.wait(), tick)
        hub.sweep_now.clear()
        try:
            t = asyncio.get_running_loop().time()
            walk = walked is None or t - walked >= 0.9 * every  # timers may fire a bit early
            if walk:
                walked = t
            more = True
            while more:
                closes, more = await hub.sweeper.sweep(walk=walk)
                for ws, code, err, msg in closes:
                    await hub.replies.close_ws(ws, code, err, msg)
                if more:
                    await asyncio.sleep(0.005)
            now = asyncio.get_running_loop().time()
            hub.audit.release()  # what a full disk held back, once it takes it
            if hub.audit.dirty() and now - last_cp >= config.audit_checkpoint_interval:
                hub.audit.checkpoint()
                hub.bindings.prune()
                last_cp = now
            # the head may only name entries already on disk: after a power loss the log
            # must not end before its head (that is what truncation looks like)
            pos = hub.audit.position()
            fd = hub.audit.sync_fd()
            if fd is not None:
                await asyncio.to_thread(hub.audit.sync, fd)
            head = hub.audit.head_bytes(pos)
            if head is not None:
                await asyncio.to_thread(hub.audit.store_head, pos[0], head)
        except Exception:
            logs.log.exception("sweep-error")


async def _reap(hub: Hub, reaper: Any) -> None:
    while not hub.closing:
        await asyncio.sleep(1.0)
        try:
            await reaper.run()
        except Exception:
            logs.log.exception("reap-error")


async def _state(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    fixed = secure_data_dir(config.data_dir)
    lock = app.get(LOCK) or DataDirLock(config.data_dir)  # before anything is written
    if fixed:
        logs.event("data-dir-permissions-fixed", level=logging.WARNING, changed=fixed)
    tkey = server_token_key(config)
    previous = (
        None
        if config.token_key_previous is None
        else previous_token_key(config.token_key_previous, tkey)
    )
    server_id = config.server_id or f"{socket.gethostname()}:{config.port}"
    audit = AuditLog(
        config.data_dir / AUDIT_FILE,
        audit_key(config.data_dir),
        checkpoint_every=config.audit_checkpoint_every,
        server=server_id if config.redis_url else "",
    )
    revocations = RevocationStore(config.data_dir / REVOCATIONS)
    bindings = BindingStore(config.data_dir / BINDINGS)
    bindings.prune()
    verifier = Verifier(
        tkey,
        previous=previous,
        issuer=config.issuer,
        audience=config.audience,
        max_ttl=config.max_token_ttl,
        leeway=config.clock_leeway,
        revoked=revocations,
    )
    shared = None
    if config.redis_url is not None:
        from signaling.state.redis import RedisSessionStore  # only a cluster needs redis-py

        shared = RedisSessionStore(config.redis_url, server_id)
    hub = Hub(
        config,
        verifier=verifier,
        revocations=revocations,
        bindings=bindings,
        audit=audit,
        metrics=app[METRICS],
        store=shared,
        bus=shared,
    )
    app[HUB] = hub
    if shared is not None:

        async def handle(msg: dict[str, Any]) -> None:
            await on_bus(hub, msg)

        async def frames(payload: bytes) -> None:
            await on_frames(hub, payload)

        async def reregister() -> None:
            held = [e.member for e in hub.local.all() if not e.gone]
            n = await shared.register(held, config.max_token_ttl)
            if n:
                logs.event("store-reregistered", endpoints=n)
                audit.append("store-reregistered", endpoints=n)
            if isinstance(hub.joins.wards, ClusterWards):
                hub.joins.wards.reregister()  # its beds, and fresh snapshots to its stations

        shared.on_reconnect = reregister
        await shared.start(handle, frames)
    hub.guard = guard = app[GUARD]

    def refused(ip: str, limit: str, first: bool) -> None:
        app[METRICS].limit_violations.labels(limit).inc()
        app[METRICS].rejected_joins.labels(limit).inc()
        if first:  # once per episode: an attack must not turn into an audit-log flood
            audit.append("reject", reason=limit, ip=ip)
            log_refusal(limit)

    guard.on_refused = refused
    if audit.head_missing:
        logs.event("audit-head-missing", level=logging.WARNING, path=str(audit.head_path))
    audit.append("start", host=config.host, port=config.port, cluster=shared is not None)
    logs.event("start", host=config.host, port=config.port, tls=config.tls_cert is not None)
    logs.event("config", **config.summary())
    if config.turn_secret and not config.turn_urls:
        logs.event("turn-secret-unused", level=logging.WARNING, hint="set --turn-urls")
    gc_cb = gcwatch.watch(app[METRICS])
    sweeper = asyncio.get_running_loop().create_task(_sweeper(app))
    reaping: asyncio.Task[None] | None = None
    if shared is not None:
        from signaling.reaper import Reaper

        reaping = asyncio.get_running_loop().create_task(
            _reap(hub, Reaper(hub, shared, config.reconnect_grace))
        )
    try:
        yield
    finally:
        gcwatch.unwatch(gc_cb)
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        if reaping is not None:
            reaping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaping
        if hub.remote is not None:
            await hub.remote.close()
        if shared is not None:
            await shared.close()
        for e in hub.local.all():
            if e.writer is not None:
                e.writer.cancel()
        hub.relay.stop_all()
        audit.append("stop")
        audit.close()
        revocations.close()
        bindings.close()
        lock.release()
        logs.event("stop")


async def _shutdown(app: web.Application) -> None:
    """Tell every open WebSocket to reconnect later, then close it (1012)."""
    hub = app[HUB]
    hub.closing = True
    config = app[CONFIG]
    sockets = list(hub.connections)
    hub.audit.append("shutdown", connections=len(sockets))

    async def bye(ws: web.WebSocketResponse) -> None:
        after = config.shutdown_reconnect_ms + random.randint(
            0, config.shutdown_reconnect_spread_ms
        )
        await send_now(ws, {"type": "reconnect", "after_ms": after})
        hub.metrics.closes.labels(str(cc.SERVICE_RESTART)).inc()
        await shut(ws, cc.SERVICE_RESTART, b"restart")

    await asyncio.gather(*(bye(ws) for ws in sockets))


class StartupError(Exception):
    pass


def server_token_key(config: Config) -> bytes:
    """The key tokens are signed with: --token-key (a cluster's shared one), else the data
    dir's own (created on first start)."""
    if config.token_key is not None:
        return load_secret(config.token_key)
    return token_key(config.data_dir, create=True)


def check_redis(url: str) -> None:
    """Refuse to start when the cluster's Redis cannot be reached (one clear line)."""
    import redis

    from signaling.state.redis import redact

    try:
        client = redis.Redis.from_url(url, socket_timeout=3.0, socket_connect_timeout=3.0)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as e:
        raise StartupError(f"cannot reach Redis at {redact(url)}: {e}") from None


def preflight(config: Config) -> DataDirLock:
    """Lock and check the data dir before serving, so a bad start fails with one clear
    message; the lock is for create_app (held until the process ends)."""
    try:
        fixed = secure_data_dir(config.data_dir)
        lock = DataDirLock(config.data_dir)
    except (DataDirInUse, DataDirError) as e:
        raise StartupError(str(e)) from None
    except OSError as e:
        raise StartupError(str(e)) from None
    try:
        tkey = server_token_key(config)
        if config.token_key_previous is not None:
            previous_token_key(config.token_key_previous, tkey)
        audit_key(config.data_dir)
        AuditLog.check(config.data_dir / AUDIT_FILE, audit_key(config.data_dir).public_key())
        RevocationStore(config.data_dir / REVOCATIONS).close()
        BindingStore(config.data_dir / BINDINGS).close()
    except (OSError, KeyFileError, AuditError, sqlite3.Error, ValueError) as e:
        lock.release()
        raise StartupError(str(e)) from None
    if config.redis_url is not None:
        try:
            check_redis(config.redis_url)
        except StartupError:
            lock.release()
            raise
    if fixed:
        logs.event("data-dir-permissions-fixed", level=logging.WARNING, changed=fixed)
    return lock


def create_app(config: Config, lock: DataDirLock | None = None) -> web.Application:
    app = web.Application(
        middlewares=[errors, security_headers, origin_check],
        client_max_size=64 * 1024,
    )
    app[CONFIG] = config
    app[METRICS] = Metrics()
    proxies = TrustedProxies(config.trusted_proxies)
    app[GUARD] = ConnectionGuard(
        config.limits.pending_per_ip,
        config.limits.max_unjoined,
        exempt=proxies.trusts if proxies else None,
    )
    if lock is not None:
        app[LOCK] = lock
    app.cleanup_ctx.append(_state)
    app.on_shutdown.append(_shutdown)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/join", join_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/turn-credentials", turn_credentials)
    if config.web_dir.is_dir():
        app.router.add_static("/static/", config.web_dir, show_index=False, follow_symlinks=False)
    return app


def create_metrics_app(main: web.Application) -> web.Application:
    """The metrics listener's application: /metrics and /healthz of `main`, nothing else."""
    app = web.Application(middlewares=[errors, security_headers], client_max_size=1024)

    async def metrics(request: web.Request) -> web.StreamResponse:
        body = generate_latest(main[METRICS].registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(request: web.Request) -> web.StreamResponse:
        return await healthz_of(main)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    return app


async def start_metrics_site(
    main: web.Application, config: Config, sock: socket.socket
) -> web.AppRunner:
    """Serve /metrics of `main` on `sock` (plain HTTP: keep it on loopback or a monitoring
    network the firewall restricts). Start it after `main`'s runner: it reads main's hub."""
    runner = web.AppRunner(
        create_metrics_app(main),
        access_log=None,
        shutdown_timeout=1.0,
        keepalive_timeout=config.limits.handshake_timeout,
    )
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def start_site(
    app: web.Application, config: Config, sock: socket.socket, ctx: ssl.SSLContext | None
) -> web.AppRunner:
    """Run `app` on the bound socket `sock` behind the connection guard; returns the runner
    (`await runner.cleanup()` shuts down gracefully)."""
    lim = config.limits
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=5.0, keepalive_timeout=lim.handshake_timeout
    )
    await runner.setup()
    site = GuardedSite(
        runner, sock, app[GUARD], ssl_context=ctx, handshake_timeout=lim.handshake_timeout
    )
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve(
    config: Config,
    sock: socket.socket,
    ctx: ssl.SSLContext | None,
    lock: DataDirLock,
    metrics_sock: socket.socket | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (the `signaling` command)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(config, lock)
    runner = await start_site(app, config, sock, ctx)
    mrunner = None
    freezer = loop.create_task(gcwatch.Freezer().run())
    try:
        if metrics_sock is not None:
            mrunner = await start_metrics_site(app, config, metrics_sock)
        await stop.wait()
    finally:
        freezer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await freezer
        if mrunner is not None:
            await mrunner.cleanup()
        await runner.cleanup()


def ssl_context(config: Config) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    return ctx


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
