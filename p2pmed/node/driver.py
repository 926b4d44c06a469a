"""Drives one core Session on the asyncio loop (the shape of aioquic's asyncio/protocol.py).

Input: frames from the transports (`receive`), timers (`get_timer`/`handle_timer`), messages
(`send`). Output, in the order the durability contract asks for (p2pmed/core/session.py):
this session's changes durable first, then its frames to the transports, then its events
to the handler. Every commit, outgoing vitals included, is fsynced before its frames leave:
a frame the peer may hold is never one the restarted node could forget (and then send
again under the same sequence number, which the peer drops as a duplicate). The driver
persists only its own session: it hands that session's changes to the store's group commit
and flushes it (other drivers' handed-in changes ride along in the same transaction).

While a session is established, an unauthenticated handshake frame never touches it: a new
HS_COMMIT (the patient restarted without its store, or someone replays an old one) starts a
candidate session run alongside, which replaces the live one only once its signed handshake
completed and the handler accepted its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from p2pmed.core import events as ev
from p2pmed.core.frame import HANDSHAKE_TYPES, FrameType, MessageClass
from p2pmed.core.session import Session
from p2pmed.node import clock
from p2pmed.node import events as ne
from p2pmed.node.context import STORE_RETRY_S, NodeContext
from p2pmed.store.sqlite import StoreError

log = logging.getLogger("p2pmed.node.driver")

CANDIDATE_TIMEOUT = 30.0  # a new handshake run alongside an established session must finish
_DATA = int(FrameType.DATA)
_HS_COMMIT = int(FrameType.HS_COMMIT)
_HANDSHAKE = frozenset(int(t) for t in HANDSHAKE_TYPES)
_HIGH = int(MessageClass.HIGH)


class DriverHandler(Protocol):
    """Where a driver's output goes (the peer link)."""

    def transmit(self, path_id: str, frame: bytes) -> None: ...
    def session_event(self, event: ev.Event) -> None: ...
    def accept_candidate(self, candidate: Session) -> bool: ...
    def session_replaced(self) -> None: ...


class SessionDriver:
    def __init__(
        self, ctx: NodeContext, peer_id: str, session: Session, handler: DriverHandler
    ) -> None:
        self.ctx = ctx
        self.peer_id = peer_id
        self.session = session
        self.handler = handler
        self.candidate: Session | None = None
        self._established = session.state.name in ("ESTABLISHED", "REKEYING")
        self.sas = ""
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._in_flush = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def established(self) -> bool:
        """Handshake done and the session still takes messages: a session that is closing
        (our stop, or the peer's CLOSE) refuses send(), so callers must see it as gone."""
        return self._established and self.session.state.name not in ("CLOSING", "CLOSED")

    @established.setter
    def established(self, value: bool) -> None:
        self._established = value

    # ---- input ----
    def receive(self, frame: bytes, path_id: str) -> None:
        if len(frame) > 1 and frame[1] in _HANDSHAKE and self._to_candidate(frame, path_id):
            return
        self.session.receive(frame, path_id, clock.now())
        self.stage()
        self.kick(urgent=len(frame) > 3 and frame[1] == _DATA and frame[3] <= _HIGH)

    def send(self, cls: MessageClass, data: bytes) -> int:
        """Queue a message; it is durable (with a store) once stage() and a commit ran."""
        msg_id = self.session.send(cls, data, clock.now())
        self.stage()
        self.kick()
        return msg_id

    def kick(self, urgent: bool = False) -> None:
        """Run the session output soon (coalesced), or now if `urgent`: a CRITICAL or HIGH
        frame (an alarm, numerics) just came in, and behind call_soon its message would wait
        for every callback already queued (during a bulk transfer, a backlog of SCTP chunks:
        several ms). Only called so from transport callbacks and the patient's device batch,
        never from inside app code, so app handlers do not re-enter."""
        if self.closed:
            return
        if urgent and not self._in_flush:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    # ---- durability ----
    def stage(self) -> None:
        """Hand this session's changes to the store's group commit, where the next commit of
        any driver (or the node's persist()) writes them: staged right after each input, as
        many peers' changes as possible share one transaction."""
        store = self.ctx.store
        if store is not None:
            changes = self.session.take_changes()
            if changes:
                store.group.add(self.peer_id, changes)

    def commit(self) -> bool:
        """This session's changes durable now (with whatever else was handed in); False when
        the store cannot be written (NodeContext.commit)."""
        self.stage()
        return self.ctx.commit()

    # ---- output ----
    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed:
            return
        self._in_flush = True
        try:
            self._flush_once()
        finally:
            self._in_flush = False

    def _flush_once(self) -> None:
        self._flush_candidate()
        session = self.session
        frames = session.datagrams_to_send(clock.now())
        if not self.commit():
            # nothing of it is durable: no frame leaves (the session sends its messages
            # again, as if these were lost on the way) and no event is acted on (they wait
            # in the session); the next attempt comes with the next input or timer
            self._arm_timer(STORE_RETRY_S)
            return
        transmit = self.handler.transmit
        for path_id, frame in frames:
            transmit(path_id, frame)
        inbox: dict[int, int] | None = None
        store = self.ctx.store
        while (event := session.next_event()) is not None:
            self.session_event(event)
            if store is not None and isinstance(event, ev.MessageReceived):
                # the app acted on it: drop it from the store's inbox right away, so a process
                # crash can at most repeat this one message (flagged "replayed" after a
                # restart); no fsync of its own: a power cut can repeat the ones since the
                # last delivery's commit
                peer_store = store.peer(self.peer_id)
                if inbox is None:
                    inbox = {row.msg_id: row.row for row in peer_store.inbox()}
                row = inbox.get(event.message_id)
                if row is not None:
                    # unwritable store: the mark waits for a later delivery's; a crash before
                    # then shows this message again, flagged "replayed" (never lost)
                    with contextlib.suppress(StoreError):
                        peer_store.inbox_done(row, delete=True)
        self._arm_timer()

    def session_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.HandshakeCompleted):
            self.established = True
            self.sas = event.sas
        self.handler.session_event(event)

    def _arm_timer(self, within: float | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.session.get_timer()
        if within is not None:
            when = min(when, clock.now() + within) if when is not None else clock.now() + within
        if self.candidate is not None:
            other = self.candidate.get_timer()
            if other is not None and (when is None or other < when):
                when = other
        if when is not None and not self.closed:
            self._timer = self._loop.call_later(max(0.0, when - clock.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = clock.now()
        self.session.handle_timer(now)
        if self.candidate is not None:
            self.candidate.handle_timer(now)
        self._flush()

    # ---- a new handshake alongside an established session ----
    def _to_candidate(self, frame: bytes, path_id: str) -> bool:
        if not self.established or self.ctx.role == "patient":
            return False
        candidate = self.candidate
        if frame[1] == _HS_COMMIT:
            if self.session.commit_frame() == frame:
                return False  # our own session's commit again: it counts the replay
            if candidate is None or candidate.commit_frame() != frame:
                candidate = self.candidate = self.ctx.new_session(self.peer_id, fresh=True)
                now = clock.now()
                for pid in self.session.paths:
                    candidate.add_path(pid, now)
                self._loop.call_later(CANDIDATE_TIMEOUT, self._expire_candidate, candidate)
        if candidate is None:
            return False
        candidate.receive(frame, path_id, clock.now())
        self.kick()
        return True

    def _expire_candidate(self, candidate: Session) -> None:
        if self.candidate is candidate:  # a replayed commit nobody completes
            self.candidate = None
            self.ctx.events.publish(
                ne.CandidateExpired(self.peer_id, "new handshake not completed")
            )

    def _flush_candidate(self) -> None:
        candidate = self.candidate
        if candidate is None:
            return
        for path_id, frame in candidate.datagrams_to_send(clock.now()):
            self.handler.transmit(path_id, frame)
        while (event := candidate.next_event()) is not None:
            if isinstance(event, ev.HandshakeCompleted):
                # the trust store first: another key is refused (alarm) and the live
                # session stays, instead of being replaced and then closed by the gate
                if not self.handler.accept_candidate(candidate):
                    self.candidate = None
                    return
                self._replace(candidate)
                self.session_event(event)
                return
            if isinstance(event, ev.SessionClosed):  # a replayed or forged commit: dropped
                self.candidate = None
                return
            if isinstance(event, ev.FrameRejected):
                self.handler.session_event(event)

    def _replace(self, candidate: Session) -> None:
        """The patient proved with a new signed handshake that it lost its session state
        (e.g. restarted without its store): the candidate session replaces the old one."""
        self.ctx.events.publish(ne.SessionReset(self.peer_id, "peer completed a new handshake"))
        self.candidate = None
        self.session = candidate
        self.established = False
        self.sas = ""
        self.handler.session_replaced()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
