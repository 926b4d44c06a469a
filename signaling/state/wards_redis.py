"""The ward registry of a cluster, in the Redis the session store uses (docs/scaling.md).

Keys (the store's prefix, `p2pmed:`):
  ward:{W}        HASH bed session -> JSON {o: first-join order, s: state, p: patient
                  endpoint id, t: since (Redis clock), v: version}
  bed:{session}   the ward that bed session belongs to
  wardseq         the counter behind `o` and `v`
`claim` (a bed joins or comes back) checks and writes in one Lua script: a bed session in
one ward only, and at most max_beds beds not ended per ward, whichever server asks. `lost`
(the reaper) reads the session store's `s:{session}` in the same script, so a bed that
resumed on another server in the meantime is left alone.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from signaling.state.store import StoreUnavailable
from signaling.state.wards import Bed

T = TypeVar("T")

# ARGV: prefix, ward ("" for a patient without a ward), session, patient, state, max beds.
# Returns {status, bed JSON}: status 'none' (no ward, not a bed), 'new' (a new bed),
# 'ok' (changed), 'same' (unchanged), 'bed-other-ward' or 'ward-beds-full' (refused).
_CLAIM = """
local p, ward, sid, pat, state = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxb = tonumber(ARGV[6])
local bk = p .. 'bed:' .. sid
local cur = redis.call('GET', bk)
if ward == '' then
  if cur then return {'bed-other-ward', ''} end
  return {'none', ''}
end
if cur and cur ~= ward then return {'bed-other-ward', ''} end
local h = p .. 'ward:' .. ward
local raw = false
if cur then raw = redis.call('HGET', h, sid) end
local b
if raw then
  b = cjson.decode(raw)
  if b.s == state and b.p == pat then return {'same', raw} end
else
  local used = 0
  for _, v in ipairs(redis.call('HVALS', h)) do
    if cjson.decode(v).s ~= 'ended' then used = used + 1 end
  end
  if used >= maxb then return {'ward-beds-full', tostring(used)} end
  b = {}
end
local t = redis.call('TIME')
local v = redis.call('INCR', p .. 'wardseq')
if not raw then b.o = v end
b.s, b.p, b.v = state, pat, v
b.t = tonumber(t[1]) + tonumber(t[2]) / 1000000
local enc = cjson.encode(b)
redis.call('HSET', h, sid, enc)
if raw then return {'ok', enc} end
redis.call('SET', bk, ward)
-- ended beds are kept for the stations, up to twice the limit per ward, oldest dropped
if redis.call('HLEN', h) > 2 * maxb then
  local ended = {}
  local all = redis.call('HGETALL', h)
  for i = 1, #all, 2 do
    local x = cjson.decode(all[i + 1])
    if x.s == 'ended' then table.insert(ended, {x.o, all[i]}) end
  end
  table.sort(ended, function(a, c) return a[1] < c[1] end)
  local n = redis.call('HLEN', h)
  for _, e in ipairs(ended) do
    if n <= 2 * maxb then break end
    redis.call('HDEL', h, e[2])
    redis.call('DEL', p .. 'bed:' .. e[2])
    n = n - 1
  end
end
return {'new', enc}
"""

# ARGV: prefix, ward, session, patient, state, same ('1': only if that patient is the
# bed's). Changes an existing bed only; returns its JSON if it changed, else false.
_SET = """
local p, ward, sid, pat, state, same = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local h = p .. 'ward:' .. ward
local raw = redis.call('HGET', h, sid)
if not raw then return false end
local b = cjson.decode(raw)
if same == '1' and b.p ~= pat then return false end
if b.s == state and b.p == pat then return false end
local t = redis.call('TIME')
b.s, b.p, b.v = state, pat, redis.call('INCR', p .. 'wardseq')
b.t = tonumber(t[1]) + tonumber(t[2]) / 1000000
local enc = cjson.encode(b)
redis.call('HSET', h, sid, enc)
return enc
"""


# ARGV: prefix, state ('link-lost' or 'ended'), server, then session, endpoint pairs of
# what the dead `server` held. A pair that is a bed's patient becomes `state`: link-lost
# only while that server still holds it in the session store, ended only once it is gone
# from there (reaped). Returns {ward, session, bed JSON, ...} of the beds changed.
_LOST = """
local p, state, srv = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i = 4, #ARGV - 1, 2 do
  local sid, eid = ARGV[i], ARGV[i + 1]
  local ward = redis.call('GET', p .. 'bed:' .. sid)
  local raw = ward and redis.call('HGET', p .. 'ward:' .. ward, sid)
  if raw then
    local b = cjson.decode(raw)
    local m = redis.call('HGET', p .. 's:' .. sid, eid)
    local ok = b.p == eid and b.s ~= 'ended' and b.s ~= state
    if state == 'ended' then
      ok = ok and not m
    else
      ok = ok and m and cjson.decode(m)[5] == srv
    end
    if ok then
      b.s, b.v, b.t = state, redis.call('INCR', p .. 'wardseq'), now
      local enc = cjson.encode(b)
      redis.call('HSET', p .. 'ward:' .. ward, sid, enc)
      table.insert(out, ward)
      table.insert(out, sid)
      table.insert(out, enc)
    end
  end
end
return out
"""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _bed(session: str, raw: bytes | str) -> tuple[int, Bed]:
    d: dict[str, Any] = json.loads(raw)
    return int(d["o"]), Bed(session, str(d["s"]), str(d["p"]), float(d["t"]), int(d["v"]))


class RedisWardRegistry:
    """Over the session store's Redis client (`r`, key prefix `p`)."""

    def __init__(self, r: aioredis.Redis, prefix: str) -> None:
        self.r = r
        self.p = prefix
        self._claim = r.register_script(_CLAIM)
        self._set = r.register_script(_SET)
        self._lost = r.register_script(_LOST)

    async def _do(self, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except (RedisError, OSError) as e:
            raise StoreUnavailable(f"redis: {e}") from None

    async def claim(
        self, ward: str, session: str, patient: str, state: str, max_beds: int
    ) -> tuple[str, Bed | None]:
        """A patient joined `session` with a ward claim (or "" for none): the status (see
        _CLAIM) and the bed as it is now."""
        args: list[str | int] = [self.p, ward, session, patient, state, max_beds]
        status, raw = await self._do(self._claim(args=args))
        status = _text(status)
        if status in ("new", "ok", "same"):
            return status, _bed(session, raw)[1]
        return status, None

    async def set(
        self, ward: str, session: str, patient: str, state: str, *, same: bool
    ) -> Bed | None:
        """Change an existing bed of `ward` (with same=True only if `patient` is its
        patient); the bed if it changed."""
        args = [self.p, ward, session, patient, state, "1" if same else "0"]
        raw = await self._do(self._set(args=args))
        return None if raw is None else _bed(session, raw)[1]

    async def ward_of(self, session: str) -> str | None:
        raw = await self._do(self.r.get(f"{self.p}bed:{session}"))
        return None if raw is None else _text(raw)

    async def beds(self, ward: str) -> list[Bed]:
        raw = await self._do(self.r.hgetall(f"{self.p}ward:{ward}"))
        got = sorted((_bed(_text(k), v) for k, v in raw.items()), key=lambda x: x[0])
        return [b for _, b in got]

    async def lost(
        self, held: list[tuple[str, str]], server: str, state: str
    ) -> list[tuple[str, Bed]]:
        """The beds among `held` (session, endpoint pairs the dead `server` held) moved to
        `state` (see _LOST): (ward, bed) of each one changed."""
        args: list[str] = [self.p, state, server]
        for session, eid in held:
            args += [session, eid]
        raw = await self._do(self._lost(args=args))
        return [
            (_text(raw[i]), _bed(_text(raw[i + 1]), raw[i + 2])[1]) for i in range(0, len(raw), 3)
        ]
