"""The shared SessionStore of a cluster, in Redis, and the bus between its servers.

Keys (prefix `p2pmed:`; one Redis, or one shard per group of sessions, docs/scaling.md):
  sessions            SET of session ids
  s:{session}         HASH endpoint id -> JSON [join order, role, jti, admitted 0/1, server]
  o:{jti}             "session\\nendpoint" of the endpoint present now that descends from jti
  b:{jti}             the join token's binding, expiring with the token (+60 s)
  r:{jti}             revoked (expires after the longest token lifetime)
  ip:{address}        the per-IP join token bucket
  srv:{server}        a server's heartbeat (expires 3 s after its last beat)
  servers             SET of the servers that ever beat; held:{server} SET of what each
                      holds ("session\\nendpoint"); dead:{server} when first seen dead;
                      lock:{name} (reaper.py)
  seq                 the join-order counter
Channels: ctl:{server} (JSON messages for one server), rl:{server} (relay frames for it,
remote.py), revoked (jtis revoked anywhere).
Every write that checks something is one Lua script, so two servers cannot interleave.
A Redis error becomes StoreUnavailable: the server refuses joins until Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from signaling import logs
from signaling.state.batch import Batcher
from signaling.state.store import Member, Prejoin, Refused, StoreUnavailable

PREFIX = "p2pmed:"
BEAT = 1.0  # seconds between heartbeats
BEAT_TTL = 3  # a server whose heartbeat key expired is presumed dead
MAX_CONNECTIONS = 32  # per server, besides the pub/sub one

T = TypeVar("T")
Handler = Callable[[dict[str, Any]], Awaitable[None]]

_ADD = """
local p, sid, eid, role, jti = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local adm, srv = ARGV[6], ARGV[7]
local maxs, maxe = tonumber(ARGV[8]), tonumber(ARGV[9])
local h = p .. 's:' .. sid
local n = redis.call('HLEN', h)
if n == 0 then
  if redis.call('SCARD', p .. 'sessions') >= maxs then return 'server-full' end
else
  if redis.call('HEXISTS', h, eid) == 1 then return 'dup' end
  if n >= maxe then return 'session-full' end
  if role == 'patient' then
    for _, v in ipairs(redis.call('HVALS', h)) do
      if cjson.decode(v)[2] == 'patient' then return 'patient-present' end
    end
  end
end
local seq = redis.call('INCR', p .. 'seq')
redis.call('HSET', h, eid, cjson.encode({seq, role, jti, tonumber(adm), srv}))
redis.call('SADD', p .. 'sessions', sid)
redis.call('SET', p .. 'o:' .. jti, sid .. '\\n' .. eid)
redis.call('SADD', p .. 'held:' .. srv, sid .. '\\n' .. eid)
if n == 0 then return 'started' end
return 'ok'
"""

_ADD_JOIN = """
local p, sid, eid, role, jti = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local adm, srv = ARGV[6], ARGV[7]
local maxs, maxe, exp = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local me = sid .. '\\n' .. eid
local bkey = p .. 'b:' .. jti
if exp ~= '' then
  local b = redis.call('GET', bkey)
  if b and b ~= me then return {'token-in-use'} end
end
local h = p .. 's:' .. sid
local n = redis.call('HLEN', h)
if n == 0 then
  if redis.call('SCARD', p .. 'sessions') >= maxs then return {'server-full'} end
else
  if redis.call('HEXISTS', h, eid) == 1 then return {'dup'} end
  if n >= maxe then return {'session-full'} end
  if role == 'patient' then
    for _, v in ipairs(redis.call('HVALS', h)) do
      if cjson.decode(v)[2] == 'patient' then return {'patient-present'} end
    end
  end
end
local seq = redis.call('INCR', p .. 'seq')
redis.call('HSET', h, eid, cjson.encode({seq, role, jti, tonumber(adm), srv}))
redis.call('SADD', p .. 'sessions', sid)
redis.call('SET', p .. 'o:' .. jti, me)
redis.call('SADD', p .. 'held:' .. srv, me)
if exp ~= '' then redis.call('SET', bkey, me, 'NX', 'EXAT', exp) end
local out = redis.call('HGETALL', h)
if n == 0 then table.insert(out, 1, 'started') else table.insert(out, 1, 'ok') end
return out
"""

_REMOVE = """
local p, sid, eid, srv = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local h = p .. 's:' .. sid
local v = redis.call('HGET', h, eid)
if not v then return -1 end
local m = cjson.decode(v)
if srv ~= '' and m[5] ~= srv then return -1 end
redis.call('HDEL', h, eid)
redis.call('SREM', p .. 'held:' .. m[5], sid .. '\\n' .. eid)
local ok = p .. 'o:' .. m[3]
if redis.call('GET', ok) == sid .. '\\n' .. eid then redis.call('DEL', ok) end
if redis.call('HLEN', h) == 0 then
  redis.call('SREM', p .. 'sessions', sid)
  return 1
end
return 0
"""

_UPDATE = """
local p, sid, eid, mode, arg = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local h = p .. 's:' .. sid
local v = redis.call('HGET', h, eid)
if not v then return false end
local m = cjson.decode(v)
if mode == 'admit' then
  if m[4] == 1 then return false end
  m[4] = 1
elseif mode == 'rebind' then
  if m[3] ~= arg then
    redis.call('DEL', p .. 'o:' .. m[3])
    m[3] = arg
    redis.call('SET', p .. 'o:' .. arg, sid .. '\\n' .. eid)
  end
elseif mode == 'claim' then
  redis.call('SREM', p .. 'held:' .. m[5], sid .. '\\n' .. eid)
  redis.call('SADD', p .. 'held:' .. arg, sid .. '\\n' .. eid)
  m[5] = arg
end
v = cjson.encode(m)
redis.call('HSET', h, eid, v)
return v
"""

_PUT = """
local p, sid, eid, role, jti, adm, srv, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  ARGV[6], ARGV[7], tonumber(ARGV[8])
local h = p .. 's:' .. sid
if redis.call('HEXISTS', h, eid) == 1 then return 0 end
local seq = redis.call('INCR', p .. 'seq')
redis.call('HSET', h, eid, cjson.encode({seq, role, jti, tonumber(adm), srv}))
redis.call('SADD', p .. 'sessions', sid)
redis.call('SET', p .. 'o:' .. jti, sid .. '\\n' .. eid)
redis.call('SET', p .. 'b:' .. jti, sid .. '\\n' .. eid, 'NX', 'EX', ttl)
redis.call('SADD', p .. 'held:' .. srv, sid .. '\\n' .. eid)
return 1
"""

# the per-IP join token bucket: takes a token from the HASH `key` (rate, burst per IP);
# sets `ok` to 1 if it had one. Both scripts below start with it.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', key, 'tok', 't')
local tok = tonumber(b[1]) or burst
local last = tonumber(b[2]) or now
tok = math.min(burst, tok + (now - last) * rate)
local ok = 0
if tok >= 1 then
  tok = tok - 1
  ok = 1
end
redis.call('HSET', key, 'tok', tostring(tok), 't', tostring(now))
redis.call('EXPIRE', key, math.ceil(burst / rate) + 1)
"""

_BUCKET = (
    "local key, rate, burst = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])" + _TAKE + "return ok\n"
)

# what a join reads first (store.Prejoin), one round trip: the per-IP join bucket (as
# _BUCKET), whether any of the jtis is revoked, the endpoint's record, and who holds the
# root jti now and what it is bound to. Only the bucket writes.
_PREJOIN = (
    """
local p, ip, rate, burst = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local sid, eid, root = ARGV[5], ARGV[6], ARGV[7]
local key = p .. 'ip:' .. ip"""
    + _TAKE
    + """local revoked = 0
for i = 8, #ARGV do
  if redis.call('EXISTS', p .. 'r:' .. ARGV[i]) == 1 then revoked = 1 end
end
return {ok, revoked, redis.call('HGET', p .. 's:' .. sid, eid),
  redis.call('GET', p .. 'o:' .. root), redis.call('GET', p .. 'b:' .. root)}
"""
)


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    if u.password is None:
        return url
    host = u.hostname or ""
    netloc = f"{u.username or ''}:***@{host}" + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def _member(session: str, endpoint_id: str, raw: str | bytes) -> tuple[int, Member]:
    order, role, jti, admitted, server = json.loads(raw)
    return int(order), Member(session, endpoint_id, role, jti, bool(admitted), server)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _pair(raw: bytes | str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    s = raw.decode() if isinstance(raw, bytes) else raw
    session, _, endpoint = s.partition("\n")
    return session, endpoint


class RedisSessionStore:
    """SessionStore and Bus over one Redis; `start` subscribes and beats, `close` stops."""

    def __init__(self, url: str, server_id: str, prefix: str = PREFIX) -> None:
        self.url = url
        self.server_id = server_id
        self.p = prefix
        # a bounded pool: a join storm queues for a connection instead of opening hundreds
        # (each connect costs Redis and this server more than the commands it carries)
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=5.0,
            socket_timeout=5.0,
            socket_connect_timeout=3.0,
        )
        self.r: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._add = self.r.register_script(_ADD)
        self._add_join = self.r.register_script(_ADD_JOIN)
        self._remove = self.r.register_script(_REMOVE)
        self._update = self.r.register_script(_UPDATE)
        self._bucket = self.r.register_script(_BUCKET)
        self._put = self.r.register_script(_PUT)
        self._prejoin = self.r.register_script(_PREJOIN)
        scripts = (self._add, self._add_join, self._remove, self._update, self._prejoin)
        # the join path's commands (and the notices between servers) of one loop turn share
        # one round trip (batch.py); the rest (heartbeat, reaper, re-registration) do not
        sources = {x.sha: x.script for x in scripts}
        self.batch = Batcher(self.r, sources, self._unavailable)
        self._count = 0
        self.healthy = False
        self._tasks: list[asyncio.Task[None]] = []
        self._handler: Handler | None = None
        self._frames: Callable[[bytes], Awaitable[None]] | None = None
        self.on_reconnect: Callable[[], Awaitable[None]] | None = None

    async def _do(self, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except (RedisError, OSError) as e:
            raise self._unavailable(e) from None

    def _unavailable(self, e: BaseException) -> StoreUnavailable:
        self.healthy = False
        return StoreUnavailable(f"redis: {e}")

    async def _call(self, *command: Any) -> Any:
        """One command, sent with the others of this loop turn (batch.py)."""
        try:
            return await self.batch.call(*command)
        except StoreUnavailable as e:
            raise StoreUnavailable(str(e)) from None  # this caller's own traceback

    async def _script(self, script: Any, args: list[Any]) -> Any:
        return await self._call("EVALSHA", script.sha, 0, *args)

    # the server side: subscribe, beat

    async def start(
        self, handler: Handler, frames: Callable[[bytes], Awaitable[None]] | None = None
    ) -> None:
        self._handler = handler
        self._frames = frames
        for x in (self._add, self._add_join, self._remove, self._update, self._prejoin):
            await self._do(self.r.script_load(x.script))  # the batches send EVALSHA only
        await self._beat_once()
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        self._tasks = [
            loop.create_task(self._listen(ready)),
            loop.create_task(self._beat()),
        ]
        await ready

    async def close(self) -> None:
        await self.batch.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await self.r.delete(f"{self.p}srv:{self.server_id}")
        with contextlib.suppress(Exception):
            await self.r.aclose()

    async def _beat_once(self) -> None:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.set(f"{self.p}srv:{self.server_id}", "1", ex=BEAT_TTL)
            pipe.sadd(f"{self.p}servers", self.server_id)
            pipe.delete(f"{self.p}dead:{self.server_id}")  # alive again, if it was dead
            pipe.scard(f"{self.p}sessions")
            _, _, _, count = await self._do(pipe.execute())
        self._count = int(count)
        if not self.healthy:
            self.healthy = True
            logs.event("store-reachable", server=self.server_id)
            if self.on_reconnect is not None:
                await self.on_reconnect()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(BEAT)
            try:
                await self._beat_once()
            except StoreUnavailable as e:
                logs.event("store-unreachable", error=str(e)[:200])
            except Exception:
                logs.log.exception("store-beat-error")

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        channels = (
            f"{self.p}ctl:{self.server_id}",
            f"{self.p}revoked",
            f"{self.p}rl:{self.server_id}",
        )
        while True:
            ps = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                await ps.subscribe(*channels)
                if not ready.done():
                    ready.set_result(None)
                while True:
                    msg = await ps.get_message(timeout=1.0)
                    if msg is not None:
                        await self._dispatch(msg)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                self.healthy = False
                if not ready.done():
                    ready.set_exception(StoreUnavailable(f"redis: {e}"))
                    return
                logs.event("bus-lost", error=str(e)[:200])
            finally:
                with contextlib.suppress(Exception):
                    await ps.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
            await asyncio.sleep(0.2)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        assert self._handler is not None
        channel = msg["channel"].decode()
        data = msg["data"]
        try:
            if channel.startswith(f"{self.p}rl:"):
                if self._frames is not None:
                    await self._frames(data)
            elif channel.endswith(":revoked"):
                await self._handler({"op": "revoked", "jti": data.decode()})
            else:
                await self._handler(json.loads(data))
        except Exception:
            logs.log.exception("bus-message-error")

    async def send(self, server: str, msg: dict[str, Any]) -> None:
        await self._call("PUBLISH", f"{self.p}ctl:{server}", json.dumps(msg))

    async def register(self, members: list[Member], ttl: float) -> int:
        """Put back what this server holds that Redis lost (it restarted empty); entries
        present are left alone. Returns how many were missing."""
        n = 0
        for m in members:
            args: list[str | int] = [
                *(self.p, m.session, m.endpoint_id, m.role, m.jti),
                *(int(m.admitted), m.server, int(ttl)),
            ]
            n += int(await self._do(self._put(args=args)))
        return n

    # the reaper's view (reaper.py): servers whose heartbeat stopped, what they held

    async def dead_servers(self) -> list[str]:
        names = sorted(_text(x) for x in await self._do(self.r.smembers(f"{self.p}servers")))
        if not names:
            return []
        alive = await self._do(self.r.mget([f"{self.p}srv:{n}" for n in names]))
        return [n for n, a in zip(names, alive, strict=True) if a is None]

    async def dead_since(self, server: str, now: float) -> float:
        """When this cluster first saw `server` dead (wall clock, shared by the servers)."""
        key = f"{self.p}dead:{server}"
        await self._do(self.r.set(key, repr(now), nx=True, ex=86400))
        raw = await self._do(self.r.get(key))
        return now if raw is None else float(_text(raw))

    async def lock(self, name: str, ttl: int) -> bool:
        return bool(
            await self._do(self.r.set(f"{self.p}lock:{name}", self.server_id, nx=True, ex=ttl))
        )

    async def held_by(self, server: str) -> list[tuple[str, str]]:
        raw = await self._do(self.r.smembers(f"{self.p}held:{server}"))
        return sorted(p for p in (_pair(x) for x in raw) if p is not None)

    async def forget_server(self, server: str) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.srem(f"{self.p}servers", server)
            pipe.delete(f"{self.p}held:{server}", f"{self.p}dead:{server}")
            await self._do(pipe.execute())

    async def send_frames(self, server: str, payload: bytes) -> None:
        await self._do(self.r.publish(f"{self.p}rl:{server}", payload))

    async def alive(self, server: str) -> bool:
        return bool(await self._do(self.r.exists(f"{self.p}srv:{server}")))

    # SessionStore

    def session_count(self) -> int:
        return self._count

    def available(self) -> bool:
        return self.healthy

    async def has_session(self, session: str) -> bool:
        return bool(await self._call("EXISTS", f"{self.p}s:{session}"))

    async def members(self, session: str) -> list[Member]:
        raw = await self._call("HGETALL", f"{self.p}s:{session}")
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        got = sorted(_member(session, _text(k), v) for k, v in pairs)
        return [m for _, m in got]

    async def member(self, session: str, endpoint_id: str) -> Member | None:
        raw = await self._call("HGET", f"{self.p}s:{session}", endpoint_id)
        return None if raw is None else _member(session, endpoint_id, raw)[1]

    async def owner(self, jti: str) -> tuple[str, str] | None:
        return _pair(await self._call("GET", f"{self.p}o:{jti}"))

    async def add(
        self, member: Member, *, max_sessions: int, max_endpoints: int
    ) -> tuple[Refused | None, bool]:
        m = member
        args: list[str | int] = [
            *(self.p, m.session, m.endpoint_id, m.role, m.jti),
            *(int(m.admitted), m.server, max_sessions, max_endpoints),
        ]
        res = (await self._script(self._add, args)).decode()
        if res == "dup":
            raise ValueError(f"endpoint {m.endpoint_id!r} is already in the session")
        if res in ("ok", "started"):
            if res == "started":
                self._count += 1
            return None, res == "started"
        return Refused(res), False

    async def add_join(
        self, member: Member, *, max_sessions: int, max_endpoints: int, bind_exp: float | None
    ) -> tuple[Refused | None, bool, list[Member]]:
        m = member
        args: list[str | int] = [
            *(self.p, m.session, m.endpoint_id, m.role, m.jti),
            *(int(m.admitted), m.server, max_sessions, max_endpoints),
            "" if bind_exp is None else int(bind_exp) + 60,
        ]
        res = await self._script(self._add_join, args)
        status = _text(res[0])
        if status == "dup":
            raise ValueError(f"endpoint {m.endpoint_id!r} is already in the session")
        if status not in ("ok", "started"):
            return Refused(status), False, []
        if status == "started":
            self._count += 1
        flat = res[1:]
        got = sorted(
            _member(m.session, _text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)
        )
        return None, status == "started", [x for _, x in got]

    async def remove(self, session: str, endpoint_id: str, server: str = "") -> bool:
        res = await self._script(self._remove, [self.p, session, endpoint_id, server])
        return int(res) == 1

    async def _up(self, session: str, endpoint_id: str, mode: str, arg: str) -> Member | None:
        raw = await self._script(self._update, [self.p, session, endpoint_id, mode, arg])
        return None if raw is None else _member(session, endpoint_id, raw)[1]

    async def admit(self, session: str, endpoint_id: str) -> Member | None:
        return await self._up(session, endpoint_id, "admit", "")

    async def rebind(self, session: str, endpoint_id: str, jti: str) -> Member:
        m = await self._up(session, endpoint_id, "rebind", jti)
        if m is None:
            raise KeyError(f"{session}/{endpoint_id} is not in the store")
        return m

    async def claim(self, session: str, endpoint_id: str, server: str) -> Member | None:
        return await self._up(session, endpoint_id, "claim", server)

    async def bound(self, jti: str) -> tuple[str, str] | None:
        return _pair(await self._call("GET", f"{self.p}b:{jti}"))

    async def bind(self, jti: str, session: str, endpoint_id: str, exp: float) -> tuple[str, str]:
        key, value = f"{self.p}b:{jti}", f"{session}\n{endpoint_id}"
        if await self._do(self.r.set(key, value, nx=True, exat=int(exp) + 60)):
            return session, endpoint_id
        return _pair(await self._do(self.r.get(key))) or (session, endpoint_id)

    async def prejoin(
        self,
        ip: str,
        rate: float,
        burst: float,
        jtis: tuple[str, ...],
        session: str,
        eid: str,
        root: str,
    ) -> Prejoin:
        args: list[str | float] = [self.p, ip, rate, burst, session, eid, root]
        args += [j for j in dict.fromkeys(jtis) if j]
        ok, revoked, raw, owner, bound = await self._script(self._prejoin, args)
        m = None if raw is None else _member(session, eid, raw)[1]
        return Prejoin(int(ok) == 1, int(revoked) == 1, m, _pair(owner), _pair(bound))

    async def join_allowed(self, ip: str, rate: float, burst: float) -> bool:
        res = await self._do(self._bucket(keys=[f"{self.p}ip:{ip}"], args=[rate, burst]))
        return int(res) == 1

    async def is_revoked(self, *jtis: str) -> bool:
        keys = [f"{self.p}r:{j}" for j in jtis if j]
        return bool(keys) and bool(await self._do(self.r.exists(*keys)))

    async def announce_revoked(self, jti: str, ttl: float) -> None:
        if await self._do(self.r.set(f"{self.p}r:{jti}", "1", nx=True, ex=int(ttl) + 60)):
            await self._do(self.r.publish(f"{self.p}revoked", jti))
