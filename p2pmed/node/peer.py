"""One remote endpoint: its session driver, its relay path, its direct path negotiator and
what was reported about its paths.

The SessionDriver (driver.py) feeds the session core and moves its output; the
DirectNegotiator (negotiator.py) owns the WebRTC connections and their PATH_BIND; this link
joins them, routes the session's frames to the relay or the bound direct path, reports path
changes (PathReport) and hands session events to the node's hooks. Whether a path is alive,
its RTT and loss are the session core's (`Session.path_status`): the link keeps no copy.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Protocol

from p2pmed.core import events as ev
from p2pmed.core.frame import MessageClass
from p2pmed.core.session import Session
from p2pmed.node import clock
from p2pmed.node import events as ne
from p2pmed.node.context import NodeContext
from p2pmed.node.driver import SessionDriver
from p2pmed.node.negotiator import DirectNegotiator
from p2pmed.node.pathreport import PathReport
from p2pmed.node.tasks import TaskSet
from p2pmed.transport.datachannel import DirectPath
from p2pmed.transport.relay import RelayPath
from p2pmed.transport.sdp import check_sdp

log = logging.getLogger("p2pmed.node.peer")


def _check_sdp(sdp: str) -> None:
    """The SDP policy of a link's negotiations (looked up at call time: a test switches the
    strict check off to show that the DTLS binding alone defeats a man in the middle)."""
    check_sdp(sdp)


class LinkHooks(Protocol):
    """What a link reports upward (the node: its role app, counters and trust gate)."""

    def on_established(self, link: PeerLink) -> None: ...
    def on_message(self, link: PeerLink, event: ev.MessageReceived) -> None: ...
    def on_acked(self, link: PeerLink, event: ev.MessageAcked) -> None: ...
    def on_closed(self, link: PeerLink) -> None: ...
    def on_rejected(self, link: PeerLink, event: ev.FrameRejected) -> None: ...
    def accept_candidate(self, link: PeerLink, candidate: Session) -> bool: ...


class PeerLink:
    def __init__(
        self, ctx: NodeContext, hooks: LinkHooks, peer_id: str, peer_role: str, session: Session
    ) -> None:
        self.ctx = ctx
        self.hooks = hooks
        self.peer_id = peer_id
        self.peer_role = peer_role
        self.driver = SessionDriver(ctx, peer_id, session, self)
        self.negotiator = DirectNegotiator(
            ctx,
            peer_id,
            self.driver,
            path_gone=lambda path: self._report(self.paths.forget(path)),
            on_rejected=lambda event: self.hooks.on_rejected(self, event),
            check_sdp=_check_sdp,
        )
        self.relay = RelayPath(peer_id, self._relay_send)
        self.paths = PathReport(peer_id, ctx.config.thresholds)
        self.handshake_started = self.driver.established
        self.closed = False
        self.present = False  # the server says the peer is here and admitted (relay possible)
        self.source_pos = 0  # patient: index of the last source message queued for this peer
        self.tasks = TaskSet(f"peer {peer_id}")

    # ---- the session (owned by the driver) ----
    @property
    def session(self) -> Session:
        return self.driver.session

    @property
    def established(self) -> bool:
        return self.driver.established

    @established.setter
    def established(self, value: bool) -> None:
        self.driver.established = value

    @property
    def sas(self) -> str:
        return self.driver.sas

    @property
    def candidate(self) -> Session | None:
        """A new handshake run alongside the established session (see driver.py)."""
        return self.driver.candidate

    @property
    def direct(self) -> DirectPath | None:
        return self.negotiator.direct

    @property
    def pending(self) -> DirectPath | None:
        return self.negotiator.pending

    def send(self, cls: MessageClass, data: bytes) -> int:
        """Queue a message; it is durable (with a store) once the node's persist() ran."""
        return self.driver.send(cls, data)

    def receive(self, frame: bytes, path_id: str) -> None:
        self.driver.receive(frame, path_id)

    def kick(self, urgent: bool = False) -> None:
        self.driver.kick(urgent)

    # ---- DriverHandler ----
    def transmit(self, path_id: str, frame: bytes) -> None:
        if path_id == "relay":
            self.relay.send(frame)
        elif path_id == "direct":
            self.negotiator.send(frame)

    def accept_candidate(self, candidate: Session) -> bool:
        return self.hooks.accept_candidate(self, candidate)

    def session_replaced(self) -> None:
        self.negotiator.rebind()

    def session_event(self, event: ev.Event) -> None:
        hooks = self.hooks
        events = self.ctx.events
        if isinstance(event, ev.MessageReceived):
            hooks.on_message(self, event)
        elif isinstance(event, ev.MessageAcked):
            hooks.on_acked(self, event)
        elif isinstance(event, ev.HandshakeCompleted):
            events.publish(ne.Handshake(self.peer_id, event.sas, event.peer_fingerprint))
            hooks.on_established(self)
        elif isinstance(event, ev.FrameRejected):
            hooks.on_rejected(self, event)
        elif isinstance(event, ev.PathBound):
            self.negotiator.bound(event)
        elif isinstance(event, ev.PathUp):
            self._report(self.paths.up(event.path_id))
            if event.path_id == "direct":
                self.negotiator.recovered()
        elif isinstance(event, ev.PathDown):
            self._report(self.paths.down(event.path_id, "heartbeats missed"))
            if event.path_id == "direct":
                self.negotiator.stalled()
        elif isinstance(event, ev.PathQuality):
            self._report(self.paths.quality(event.path_id, event.rtt, event.loss))
        elif isinstance(event, ev.SessionClosed):
            events.publish(ne.SessionClosed(self.peer_id, event.code, event.reason))
            hooks.on_closed(self)
            if event.reason.startswith("crypto/") or "fingerprint" in event.reason:
                events.publish(ne.PeerError(self.peer_id, "handshake", event.reason))
            if "fingerprint" in event.reason:
                events.publish(
                    ne.TechnicalAlarm(
                        self.peer_id,
                        "fingerprint",
                        "HIGH",
                        "direct path certificates do not match: session closed "
                        "(a man in the middle?)",
                    )
                )
            self.tasks.spawn(self.close())

    def _report(self, events: list[ne.NodeEvent]) -> None:
        if self.closed or self.ctx.exit_code:
            return  # shutting down (or revoked: exiting): paths going away is not an alarm
        for event in events:
            if isinstance(event, ne.PathActive) and event.active == "direct":
                types = self.negotiator.candidate_types()
                if types is not None:  # how the direct path runs: relay = through TURN
                    event = replace(event, local_candidate=types[0], remote_candidate=types[1])
            self.ctx.events.publish(event)

    # ---- relay path ----
    def _relay_send(self, data: bytes) -> bool:
        sig = self.ctx.signaling
        if not sig.send_relay_allowed(self.peer_id):
            return False
        return sig.send_binary(data)

    def add_relay(self) -> None:
        if not (self.present and self.ctx.signaling.connected) or self.closed:
            return
        if self.ctx.role == "patient" and not self.handshake_started:
            # the E2E handshake runs on the relay as soon as both are admitted, whatever
            # happens to WebRTC (docs/protocol.md)
            self.handshake_started = True
            self.session.connect(clock.now())
        if not self.session.path_status("relay").alive:
            self.session.add_path("relay", clock.now())
            self._report(self.paths.up("relay"))
            self.kick()

    def remove_relay(self) -> None:
        if "relay" in self.session.paths and not self.closed:
            self.session.remove_path("relay", clock.now())
            if self.ctx.signaling.connected and not self.present:
                # peer-left (it may overtake the peer's CLOSE): a leave, not a failure
                self._report(self.paths.left("relay"))
            else:  # our own signaling connection is down: the peer may be unreachable
                self._report(self.paths.forget("relay"))
            self.kick()

    # ---- direct path (the negotiator's) ----
    def start_negotiator(self) -> None:
        self.negotiator.start()

    def renegotiate_soon(self) -> None:
        self.negotiator.renegotiate_soon()

    def peer_back(self) -> None:
        self.negotiator.peer_back()

    async def on_offer(self, sdp: str) -> None:
        await self.negotiator.on_offer(sdp)

    def on_answer(self, sdp: str) -> None:
        self.negotiator.on_answer(sdp)

    def drop_direct(self, why: str) -> None:
        self.negotiator.lost(why)

    async def cut_direct(self) -> None:
        await self.negotiator.cut()

    # ---- housekeeping ----
    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.driver.close()
        await self.negotiator.close()

    def status(self) -> dict[str, Any]:
        """The paths reported for this peer: up, round trip and loss as the session measures
        them now; the grade and the active path as last reported."""
        out: dict[str, Any] = {"peer": self.peer_id, "active": self.paths.active, "sas": self.sas}
        session = self.session
        live = set(session.paths)
        for name in self.paths.known():
            measured = session.path_status(name) if name in live else None
            rtt = measured.rtt if measured is not None and measured.rtt is not None else 0.0
            out[name] = {
                "up": measured is not None and measured.alive,
                "rtt_ms": round(rtt * 1000, 2),
                "loss": measured.loss if measured is not None else 0.0,
                "grade": self.paths.grade(name),
            }
        return out
