"""What a join costs the shared store (issue #15, the join storm bar): the commands it sends
to Redis, and commands of one loop turn sharing one round trip, on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from signaling.state.memory import MemorySessionStore
from signaling.state.redis import RedisSessionStore
from signaling.state.store import Member, SessionStore, StoreUnavailable
from signaling.testing import running_server
from tests.cluster.redisproc import RedisProcess
from tests.signaling.conftest import Harness

# the commands the join path could send (the heartbeat and the reaper send others)
JOIN_COMMANDS = {"EVALSHA", "EVAL", "GET", "HGET", "HGETALL", "EXISTS", "PUBLISH", "SCRIPT"}
MARK = "p2pmed-test-mark"


async def sent_commands(url: str, during: Callable[[], Awaitable[None]]) -> list[str]:
    """Names of the JOIN_COMMANDS clients sent to Redis while `during` ran (MONITOR; the
    commands run inside scripts are left out)."""
    r = aioredis.Redis.from_url(url)
    seen: list[str] = []
    ready, done = asyncio.Event(), asyncio.Event()

    async def watch() -> None:
        async with r.monitor() as m:
            await r.echo(MARK)
            while True:
                c = await m.next_command()
                if c["client_type"] == "lua":
                    continue
                name = c["command"].split(" ", 1)[0].upper()
                if name == "ECHO" and MARK in c["command"]:
                    if ready.is_set():
                        done.set()
                        return
                    ready.set()
                elif ready.is_set() and name in JOIN_COMMANDS:
                    seen.append(name)

    task = asyncio.ensure_future(watch())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await during()
        await r.echo(MARK)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await r.aclose()
    return seen


async def test_a_join_sends_two_commands(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    """The reads before the add (join bucket, revocations, the endpoint's record, the token's
    holder and binding) are one script, the add with its binding another: nothing else."""
    async with running_server(
        tmp_path / "a", server_id="A", redis_url=redis_srv.url, token_key=shared_key
    ) as a:
        h = Harness(a, http)
        await h.join("s0", "clinician", "first")

        async def join() -> None:
            await h.join("s1", "clinician", "doc")

        assert await sent_commands(redis_srv.url, join) == ["EVALSHA", "EVALSHA"]
        # and the token is still bound once: another endpoint with it is refused
        token = a.mint("s2", "clinician")
        await h.join("s2", "clinician", "d1", token=token)
        c = await h.connect()
        await c.send(type="join", token=token, endpoint_id="d2")
        assert (await c.recv_type("error"))["code"] == "token-in-use"


async def prejoin_contract(store: SessionStore) -> None:
    exp = time.time() + 60
    await store.add(
        Member("s1", "e3", "clinician", "j3", True, "A"), max_sessions=9, max_endpoints=9
    )
    await store.bind("j5", "s5", "e5", exp)
    pre = await store.prejoin("1.2.3.4", 100, 100, ("j3",), "s1", "e3", "j3")
    assert pre.allowed and not pre.revoked
    assert pre.present is not None and pre.present.jti == "j3"
    assert (pre.owner, pre.bound) == (("s1", "e3"), None)
    pre = await store.prejoin("1.2.3.4", 100, 100, ("j5",), "s5", "e9", "j5")
    assert pre.present is None and (pre.owner, pre.bound) == (None, ("s5", "e5"))


async def test_prejoin_contract_memory() -> None:
    await prejoin_contract(MemorySessionStore())


async def test_prejoin_contract_redis(redis_srv: RedisProcess) -> None:
    store = RedisSessionStore(redis_srv.url, "A")
    try:
        await prejoin_contract(store)
        await store.announce_revoked("j7", 60)
        pre = await store.prejoin("1.2.3.4", 100, 100, ("x", "j7"), "s1", "e7", "x")
        assert pre.revoked
        # the cluster's per-IP join bucket is still taken from: burst 2, nothing refilled
        got = [(await store.prejoin("9.9.9.9", 0.001, 2, (), "s", "e", "r")).allowed for _ in "abc"]
        assert got == [True, True, False]
    finally:
        await store.close()


async def test_commands_of_one_loop_turn_share_a_round_trip(redis_srv: RedisProcess) -> None:
    store = RedisSessionStore(redis_srv.url, "A")
    try:
        for i in range(20):
            m = Member("s1", f"e{i}", "clinician", f"j{i}", True, "A")
            await store.add(m, max_sessions=9, max_endpoints=99)
        before = store.batch.round_trips
        got = await asyncio.gather(
            *(
                store.prejoin("1.2.3.4", 1000, 1000, (f"j{i}",), "s1", f"e{i}", f"j{i}")
                for i in range(20)
            ),
            store.members("s1"),
        )
        assert store.batch.round_trips == before + 1
        # each caller got its own answer
        for i, pre in enumerate(got[:20]):
            assert not isinstance(pre, list) and pre.present is not None
            assert pre.present.endpoint_id == f"e{i}" and pre.owner == ("s1", f"e{i}")
        assert len(got[20]) == 20
    finally:
        await store.close()


async def test_batched_scripts_survive_redis_losing_them(redis_srv: RedisProcess) -> None:
    store = RedisSessionStore(redis_srv.url, "A")
    r = aioredis.Redis.from_url(redis_srv.url)
    try:
        m = Member("s1", "e1", "clinician", "j1", True, "A")
        assert await store.add(m, max_sessions=9, max_endpoints=9) == (None, True)
        await r.script_flush()  # what a restarted Redis has: no scripts
        pre, members = await asyncio.gather(
            store.prejoin("1.2.3.4", 100, 100, ("j1",), "s1", "e1", "j1"), store.members("s1")
        )
        assert pre.present == m and members == [m]
    finally:
        await r.aclose()
        await store.close()


async def test_a_failed_batch_fails_each_waiter_then_recovers(redis_srv: RedisProcess) -> None:
    store = RedisSessionStore(redis_srv.url, "A")
    try:
        assert await store.members("s1") == []
        await redis_srv.stop()
        got = await asyncio.gather(
            *(store.members(f"s{i}") for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(x, StoreUnavailable) for x in got)
        await redis_srv.start()  # empty, on the same port
        m = Member("s1", "e1", "clinician", "j1", True, "A")
        assert await store.add(m, max_sessions=9, max_endpoints=9) == (None, True)
        assert await store.members("s1") == [m]
    finally:
        await store.close()


async def test_a_command_that_cannot_be_packed_fails_alone(redis_srv: RedisProcess) -> None:
    """Commands are packed by hiredis one by one: an argument that is not str, bytes, int or
    float (a bug in the caller) fails that command with TypeError, not as Redis being
    unavailable, and the commands batched with it are answered; text and numbers arrive in
    Redis as redis-py's own packer would send them."""
    store = RedisSessionStore(redis_srv.url, "A")
    r = aioredis.Redis.from_url(redis_srv.url)
    try:
        got = await asyncio.gather(
            store.batch.call("SET", "p2pmed-test:t", "é\r\n\x00"),
            store.batch.call("GET", None),
            store.batch.call("SET", "p2pmed-test:n", 1e-07),
            store.batch.call("SET", "p2pmed-test:i", -12345678901234),
            store.members("s1"),
            return_exceptions=True,
        )
        assert isinstance(got[1], TypeError) and not isinstance(got[1], StoreUnavailable)
        assert got[0] == got[2] == got[3] == b"OK" and got[4] == []
        assert await r.get("p2pmed-test:t") == "é\r\n\x00".encode()
        assert await r.get("p2pmed-test:n") == b"1e-07"
        assert await r.get("p2pmed-test:i") == b"-12345678901234"
    finally:
        await r.aclose()
        await store.close()


@pytest.mark.parametrize("n", [1, 50])
async def test_a_cancelled_waiter_does_not_hold_the_others(redis_srv: RedisProcess, n: int) -> None:
    store = RedisSessionStore(redis_srv.url, "A")
    try:
        waiters = [asyncio.ensure_future(store.members(f"s{i}")) for i in range(n)]
        waiters[0].cancel()
        got = await asyncio.gather(*waiters[1:])
        assert got == [[]] * (n - 1)
        assert await store.members("s0") == []
    finally:
        await store.close()


async def test_the_batch_connection_comes_back_after_it_was_killed(
    redis_srv: RedisProcess,
) -> None:
    """The batches go over one connection of their own: Redis dropping it (CLIENT KILL, a
    timeout, a proxy) costs the batch in flight at most, never the later ones."""
    store = RedisSessionStore(redis_srv.url, "A")
    r = aioredis.Redis.from_url(redis_srv.url)
    try:
        m = Member("s1", "e1", "clinician", "j1", True, "A")
        assert await store.add(m, max_sessions=9, max_endpoints=9) == (None, True)
        assert await r.client_kill_filter(_type="normal", skipme=True) >= 1
        for _ in range(2):  # the first may meet the dead connection; then it is back
            try:
                assert await store.members("s1") == [m]
            except StoreUnavailable:
                continue
        assert await store.members("s1") == [m]
        assert await store.member("s1", "e1") == m
    finally:
        await r.aclose()
        await store.close()
