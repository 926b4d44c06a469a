"""RedisSessionStore against the same contract as the in-memory store, on a real Redis."""

from __future__ import annotations

import time

import pytest

from signaling.state.memory import MemorySessionStore
from signaling.state.redis import RedisSessionStore
from signaling.state.store import Member, Refused, SessionStore, StoreUnavailable
from tests.cluster.redisproc import RedisProcess


def member(eid: str, role: str = "clinician", session: str = "s1", srv: str = "A") -> Member:
    return Member(session, eid, role, f"jti-{eid}", role != "patient", srv)


async def contract(store: SessionStore) -> None:
    add = store.add
    assert await add(member("pat", "patient"), max_sessions=1, max_endpoints=3) == (None, True)
    assert await add(member("doc"), max_sessions=1, max_endpoints=3) == (None, False)
    assert await add(member("p2", "patient"), max_sessions=1, max_endpoints=3) == (
        Refused.PATIENT_PRESENT,
        False,
    )
    assert await add(member("x", session="s2"), max_sessions=1, max_endpoints=3) == (
        Refused.SERVER_FULL,
        False,
    )
    await add(member("obs", "observer"), max_sessions=1, max_endpoints=3)
    assert await add(member("d2"), max_sessions=1, max_endpoints=3) == (Refused.SESSION_FULL, False)
    with pytest.raises(ValueError):
        await add(member("doc"), max_sessions=1, max_endpoints=9)
    assert [m.endpoint_id for m in await store.members("s1")] == ["pat", "doc", "obs"]
    assert await store.owner("jti-pat") == ("s1", "pat") and await store.owner("jti-d2") is None
    admitted = await store.admit("s1", "pat")
    assert admitted is not None and admitted.admitted and admitted.server == "A"
    assert await store.admit("s1", "pat") is None
    moved = await store.rebind("s1", "pat", "jti-new")
    assert moved.jti == "jti-new" and await store.owner("jti-pat") is None
    assert await store.owner("jti-new") == ("s1", "pat")
    claimed = await store.claim("s1", "pat", "B")
    assert claimed is not None and claimed.server == "B" and claimed.admitted
    assert await store.remove("s1", "pat", "A") is False  # B holds it now
    assert await store.member("s1", "pat") is not None
    assert await store.remove("s1", "pat", "B") is False
    assert await store.remove("s1", "doc") is False
    assert await store.remove("s1", "obs") is True
    assert not await store.has_session("s1") and await store.members("s1") == []
    exp = time.time() + 60
    assert await store.bind("j", "s1", "e1", exp) == ("s1", "e1")
    assert await store.bind("j", "s1", "e2", exp) == ("s1", "e1")
    assert await store.bound("j") == ("s1", "e1") and await store.bound("k") is None
    # add_join: add, bind and read the session in one step; a token bound elsewhere adds nothing
    refused, started, members = await store.add_join(
        Member("s3", "e1", "clinician", "jj", True, "A"),
        max_sessions=9,
        max_endpoints=9,
        bind_exp=exp,
    )
    assert refused is None and started and [x.endpoint_id for x in members] == ["e1"]
    assert await store.bound("jj") == ("s3", "e1")
    refused, started, members = await store.add_join(
        Member("s3", "e2", "clinician", "jj", True, "A"),
        max_sessions=9,
        max_endpoints=9,
        bind_exp=exp,
    )
    assert (refused, started, members) == (Refused.TOKEN_IN_USE, False, [])
    assert [x.endpoint_id for x in await store.members("s3")] == ["e1"]


async def test_memory_store_contract() -> None:
    await contract(MemorySessionStore())


async def test_redis_store_contract(redis_srv: RedisProcess) -> None:
    store = RedisSessionStore(redis_srv.url, "A")
    try:
        await contract(store)
        assert not await store.is_revoked("j1", "j2")
        await store.announce_revoked("j2", 60)
        assert await store.is_revoked("j1", "j2")
        assert [await store.join_allowed("1.2.3.4", 0.01, 2) for _ in range(3)] == [
            True,
            True,
            False,
        ]
    finally:
        await store.close()


async def test_redis_down_is_store_unavailable(redis_srv: RedisProcess) -> None:
    store = RedisSessionStore(redis_srv.url, "A")
    try:
        assert await store.members("s1") == []
        await redis_srv.stop()
        with pytest.raises(StoreUnavailable):
            await store.members("s1")
    finally:
        await store.close()
