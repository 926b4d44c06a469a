"""The in-memory SessionStore against the interface a shared store (issue #15) must keep."""

from __future__ import annotations

import dataclasses

import pytest

from signaling.state.memory import MemorySessionStore
from signaling.state.store import Member, Refused, SessionStore


def member(eid: str, role: str = "clinician", session: str = "s1", jti: str = "") -> Member:
    return Member(session, eid, role, jti or f"jti-{eid}", role != "patient")


async def add(store: SessionStore, m: Member, sessions: int = 10, endpoints: int = 3) -> object:
    return await store.add(m, max_sessions=sessions, max_endpoints=endpoints)


async def test_add_remove_and_session_lifetime() -> None:
    store: SessionStore = MemorySessionStore()
    assert await add(store, member("doc")) == (None, True)
    assert await add(store, member("pat", "patient")) == (None, False)
    assert store.session_count() == 1 and await store.has_session("s1")
    assert [m.endpoint_id for m in await store.members("s1")] == ["doc", "pat"]  # join order
    assert await store.owner("jti-pat") == ("s1", "pat")
    assert await store.remove("s1", "doc") is False
    assert await store.owner("jti-doc") is None
    assert await store.remove("s1", "pat") is True
    assert not await store.has_session("s1") and await store.members("s1") == []
    assert await store.remove("s1", "pat") is False


async def test_refusals_change_nothing() -> None:
    store = MemorySessionStore()
    await add(store, member("pat", "patient"))
    assert await add(store, member("pat2", "patient")) == (Refused.PATIENT_PRESENT, False)
    await add(store, member("doc"))
    await add(store, member("obs", "observer"))
    assert await add(store, member("doc2")) == (Refused.SESSION_FULL, False)
    assert await add(store, member("x", session="s2"), sessions=1) == (Refused.SERVER_FULL, False)
    assert store.session_count() == 1 and len(await store.members("s1")) == 3
    assert await store.owner("jti-pat2") is None and await store.owner("jti-doc2") is None
    with pytest.raises(ValueError):
        await add(store, member("doc"), endpoints=10)


async def test_waiting_room_and_rebind() -> None:
    store = MemorySessionStore()
    await add(store, member("pat", "patient"))
    assert await store.member("s1", "pat") == member("pat", "patient")
    admitted = await store.admit("s1", "pat")
    assert admitted is not None and admitted.admitted
    assert await store.admit("s1", "pat") is None  # not waiting any more
    assert await store.admit("s1", "nobody") is None
    moved = await store.rebind("s1", "pat", "jti-new")
    assert moved.jti == "jti-new" and moved.admitted
    assert await store.owner("jti-new") == ("s1", "pat") and await store.owner("jti-pat") is None


async def test_nothing_mutable_leaks_out() -> None:
    store = MemorySessionStore()
    await add(store, member("pat", "patient"))
    got = await store.members("s1")
    got.clear()
    before = await store.member("s1", "pat")
    assert before is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.admitted = True  # type: ignore[misc]
    await store.admit("s1", "pat")
    assert not before.admitted  # the record handed out earlier is a value, not a view
    assert len(await store.members("s1")) == 1
