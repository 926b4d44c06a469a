"""SessionDriver on its own: a real patient-side Session and SQLite store, the peer's real
Session on the other end of an in-memory wire; no sockets, no server."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from p2pmed.core import events as ev
from p2pmed.core.frame import MessageClass
from p2pmed.core.identity import Identity
from p2pmed.core.session import Session, SessionConfig
from p2pmed.node import clock, persist
from p2pmed.node.config import NodeConfig
from p2pmed.node.context import NodeContext
from p2pmed.node.driver import SessionDriver
from p2pmed.node.output import Events
from p2pmed.signaling_client import SignalingClient

URL = "http://127.0.0.1:9/join#token=t"


class Wire:
    """The driver's handler: frames go to the peer's session, events are kept."""

    def __init__(self, peer: Session) -> None:
        self.peer = peer
        self.events: list[ev.Event] = []

    def transmit(self, path_id: str, frame: bytes) -> None:
        self.peer.receive(frame, path_id, clock.now())

    def session_event(self, event: ev.Event) -> None:
        self.events.append(event)

    def accept_candidate(self, candidate: Session) -> bool:
        return True

    def session_replaced(self) -> None:
        return None


def make_ctx(tmp_path: Path) -> NodeContext:
    def ignore(*_: Any) -> None:
        return None

    sig = SignalingClient(
        NodeConfig.build(URL).join, "npatient", on_message=ignore, on_relay=ignore, on_state=ignore
    )
    ctx = NodeContext(
        config=NodeConfig.build(URL, data_dir=str(tmp_path)),
        events=Events(json_out=False),
        signaling=sig,
        identity=Identity.generate(),
        endpoint_id="npatient",
        role="patient",
        session_id="s1",
    )
    ctx.store = persist.open_store(str(tmp_path), "s1")
    return ctx


async def connect(ctx: NodeContext, peer_id: str) -> tuple[SessionDriver, Wire]:
    """A driver for `peer_id` whose session completes its handshake with a real peer."""
    peer = Session(SessionConfig("s1", False, Identity.generate()), now=clock.now())
    wire = Wire(peer)
    driver = SessionDriver(ctx, peer_id, ctx.new_session(peer_id), wire)
    now = clock.now()
    driver.session.add_path("relay", now)
    peer.add_path("relay", now)
    driver.session.connect(now)
    async with asyncio.timeout(10):
        while not driver.established:
            driver.kick()
            await asyncio.sleep(0)
            for _, frame in peer.datagrams_to_send(clock.now()):
                driver.receive(frame, "relay")
            await asyncio.sleep(0)
    return driver, wire


def commits(ctx: NodeContext) -> list[int]:
    """Counts COMMITs on every connection of the node's store."""
    assert ctx.store is not None
    count = [0]

    def trace(sql: str) -> None:
        if sql.strip().upper() == "COMMIT":
            count[0] += 1

    conns: list[sqlite3.Connection] = [s._db for s in ctx.store.stores.values()]
    conns.append(ctx.store._index._db)
    for db in conns:
        db.set_trace_callback(trace)
    return count


def stored_messages(ctx: NodeContext, peer_id: str) -> list[bytes]:
    assert ctx.store is not None
    snap = ctx.store.peer(peer_id).load()
    assert snap is not None
    return sorted(m.data for m in snap.messages.values())


async def test_one_commit_for_every_peer_and_each_driver_takes_only_its_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx(tmp_path)
    a, _ = await connect(ctx, "nclinician1")
    b, _ = await connect(ctx, "nclinician2")
    await asyncio.sleep(0)
    for d in (a, b):
        d.commit()
    n = commits(ctx)

    # a vitals message queued for both clinicians: one transaction writes both
    a.session.send(MessageClass.MEDIUM, b"vitals-1", clock.now())
    b.session.send(MessageClass.MEDIUM, b"vitals-1", clock.now())
    a.stage()
    b.stage()
    ctx.commit()
    assert n[0] == 1
    assert stored_messages(ctx, "nclinician1") == [b"vitals-1"]
    assert stored_messages(ctx, "nclinician2") == [b"vitals-1"]

    # one driver's commit writes its own session, never takes the other's changes
    a.session.send(MessageClass.MEDIUM, b"vitals-2", clock.now())
    b.session.send(MessageClass.MEDIUM, b"vitals-2", clock.now())
    a.commit()
    assert n[0] == 2
    assert stored_messages(ctx, "nclinician1") == [b"vitals-1", b"vitals-2"]
    assert stored_messages(ctx, "nclinician2") == [b"vitals-1"]
    b.commit()
    assert stored_messages(ctx, "nclinician2") == [b"vitals-1", b"vitals-2"]
    assert ctx.store is not None
    ctx.store.close()


async def test_timers_do_not_follow_the_wall_clock(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The wall clock is set an hour ahead (NTP step, an operator): the session's timers
    still fire on schedule, not all at once."""
    ctx = make_ctx(tmp_path)
    driver, _ = await connect(ctx, "nclinician1")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10):  # wait until nothing is due at once (acks sent)
        while (due := driver.session.get_timer()) is None or due - clock.now() < 0.05:
            driver.kick()
            await asyncio.sleep(0.01)
    stepped = time.time() + 3600.0
    monkeypatch.setattr(time, "time", lambda: stepped)
    driver.kick()
    await asyncio.sleep(0)
    timer = driver._timer
    assert timer is not None
    due = driver.session.get_timer()
    assert due is not None
    assert timer.when() - loop.time() == pytest.approx(due - clock.now(), abs=0.05)
    ctx.store.close()  # type: ignore[union-attr]


def test_clock_is_epoch_seconds() -> None:
    """Values persisted by an earlier process (the key epoch's start) stay comparable."""
    assert abs(clock.now() - time.time()) < 5.0
