"""The in-memory SessionStore against the interface a shared store (issue #15) must keep."""

from __future__ import annotations

import dataclasses

import pytest

from signaling.state.memory import MemorySessionStore
from signaling.state.store import Member, Refused, SessionStore


def member(eid: str, role: str = "clinician", session: str = "s1", jti: str = "") -> Member:
    return Member(session, eid, role, jti or f"jti-{eid}", role != "patient")


def add(store: SessionStore, m: Member, sessions: int = 10, endpoints: int = 3) -> object:
    return store.add(m, max_sessions=sessions, max_endpoints=endpoints)


def test_add_remove_and_session_lifetime() -> None:
    store: SessionStore = MemorySessionStore()
    assert add(store, member("doc")) == (None, True)
    assert add(store, member("pat", "patient")) == (None, False)
    assert store.session_count() == 1 and store.has_session("s1")
    assert [m.endpoint_id for m in store.members("s1")] == ["doc", "pat"]  # join order
    assert store.owner("jti-pat") == ("s1", "pat")
    assert store.remove("s1", "doc") is False
    assert store.owner("jti-doc") is None
    assert store.remove("s1", "pat") is True
    assert not store.has_session("s1") and store.members("s1") == []
    assert store.remove("s1", "pat") is False


def test_refusals_change_nothing() -> None:
    store = MemorySessionStore()
    add(store, member("pat", "patient"))
    assert add(store, member("pat2", "patient")) == (Refused.PATIENT_PRESENT, False)
    add(store, member("doc"))
    add(store, member("obs", "observer"))
    assert add(store, member("doc2")) == (Refused.SESSION_FULL, False)
    assert add(store, member("x", session="s2"), sessions=1) == (Refused.SERVER_FULL, False)
    assert store.session_count() == 1 and len(store.members("s1")) == 3
    assert store.owner("jti-pat2") is None and store.owner("jti-doc2") is None
    with pytest.raises(ValueError):
        add(store, member("doc"), endpoints=10)


def test_waiting_room_and_rebind() -> None:
    store = MemorySessionStore()
    add(store, member("pat", "patient"))
    assert store.member("s1", "pat") == member("pat", "patient")
    admitted = store.admit("s1", "pat")
    assert admitted is not None and admitted.admitted
    assert store.admit("s1", "pat") is None  # not waiting any more
    assert store.admit("s1", "nobody") is None
    moved = store.rebind("s1", "pat", "jti-new")
    assert moved.jti == "jti-new" and moved.admitted
    assert store.owner("jti-new") == ("s1", "pat") and store.owner("jti-pat") is None


def test_nothing_mutable_leaks_out() -> None:
    store = MemorySessionStore()
    add(store, member("pat", "patient"))
    got = store.members("s1")
    got.clear()
    before = store.member("s1", "pat")
    assert before is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.admitted = True  # type: ignore[misc]
    store.admit("s1", "pat")
    assert not before.admitted  # the record handed out earlier is a value, not a view
    assert len(store.members("s1")) == 1
