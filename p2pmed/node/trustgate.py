"""Checks each completed handshake against the trust store before the role app sees the peer.

Wraps the role app: on_established, on_message and on_acked reach it only for accepted peers;
everything else (attributes the UI reads, other hooks) passes straight through.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from p2pmed.core import events as ev
from p2pmed.node import clock
from p2pmed.node import events as ne
from p2pmed.node.truststore import TrustError, TrustStore

if TYPE_CHECKING:
    from p2pmed.core.session import Session
    from p2pmed.node.app import App, NodeHandle
    from p2pmed.node.peer import PeerLink

log = logging.getLogger("p2pmed.node")

CLOSE_IDENTITY = 0x0102  # session CLOSE code sent to a refused peer


class TrustGate:
    def __init__(self, app: App, node: NodeHandle, store: TrustStore, scope: str) -> None:
        self._app = app
        self._node = node
        self._store = store
        self._scope = scope  # the consultation: the join token's session id
        self._refused: weakref.WeakSet[PeerLink] = weakref.WeakSet()
        self._alarmed: set[tuple[str, str]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)

    # ---- gated hooks ----
    def accept_candidate(self, link: PeerLink, candidate: Session) -> bool:
        """A new handshake completed for an established link (peer.py's candidate session):
        False (alarm raised, counted) if its key is not acceptable, so the link keeps its
        current session instead of being torn down by a forged or injected handshake."""
        return self._decide(link, candidate.peer_fingerprint, close=False)

    def on_established(self, link: PeerLink) -> None:
        if self._decide(link, link.session.peer_fingerprint, close=True):
            self._app.on_established(link)

    def _decide(self, link: PeerLink, fp: str, *, close: bool) -> bool:
        node = self._node
        role = link.peer_role
        try:
            decision = self._store.check(
                fp, role, self._scope, require_known=node.config.require_known_peers
            )
        except TrustError as exc:  # fail closed: no peer gets in past a broken store
            node.events.publish(ne.NodeErrorEvent("trust-store", str(exc)))
            self._refuse(link, fp, "trust-store", str(exc), (), close)
            return False
        if decision.verdict == "pinned":
            if decision.new:  # another clinician (or observer) in this consultation
                log.warning(
                    "consultation %s: a further %s identity %s was pinned (%d before it); "
                    "compare the SAS with them to be sure who it is",
                    self._scope,
                    role,
                    fp,
                    len(decision.expected),
                )
            node.events.publish(
                ne.IdentityPinned(link.peer_id, role, fp, decision.new, len(decision.expected) + 1)
            )
        if decision.accepted:
            return True
        if decision.verdict == "changed":
            message = (
                f"the {role} of consultation {self._scope} presents identity {fp}, not the "
                "one pinned for it: session refused (a man in the middle, or a peer that lost "
                "its key; enrol the new key with `p2pmed trust add` only after checking it)"
            )
            self._refuse(link, fp, "identity-changed", message, decision.expected, close)
        else:
            message = (
                f"{role} identity {fp} is not enrolled and --require-known-peers is set: "
                "session refused (enrol it with `p2pmed trust add`)"
            )
            self._refuse(link, fp, "unknown-identity", message, decision.expected, close)
        return False

    def on_message(self, link: PeerLink, event: ev.MessageReceived) -> None:
        if link not in self._refused:
            self._app.on_message(link, event)

    def on_acked(self, link: PeerLink, event: ev.MessageAcked) -> None:
        if link not in self._refused:
            self._app.on_acked(link, event)

    def on_closed(self, link: PeerLink) -> None:
        if link not in self._refused:
            self._app.on_closed(link)

    # ---- pass-through hooks (explicit: App is a Protocol, not found by __getattr__) ----
    def on_joined(self) -> None:
        self._app.on_joined()

    def on_peer_waiting(self, peer_id: str, role: str) -> None:
        self._app.on_peer_waiting(peer_id, role)

    def on_peer_left(self, peer_id: str) -> None:
        self._app.on_peer_left(peer_id)

    def on_signaling(self, up: bool) -> None:
        self._app.on_signaling(up)

    def command(self, cmd: dict[str, Any]) -> None:
        self._app.command(cmd)

    async def run(self) -> None:
        await self._app.run()

    async def close(self) -> None:
        await self._app.close()

    # ---- verification ----
    def verify(self, link: PeerLink) -> None:
        self._store.mark_verified(link.session.peer_fingerprint, link.peer_role, self._scope)

    def _refuse(
        self,
        link: PeerLink,
        fp: str,
        code: str,
        message: str,
        expected: tuple[str, ...],
        close: bool,
    ) -> None:
        node = self._node
        if close:
            self._refused.add(link)
            link.established = False  # the patient app queues vitals only to established links
        n = node.ctx.count(f"trust/{code}")
        node.events.publish(ne.AppRejected(link.peer_id, "trust", code, n))
        if (code, fp) not in self._alarmed:  # once per presented key, not per retry
            self._alarmed.add((code, fp))
            log.error("%s", message)
            node.events.publish(
                ne.IdentityAlarm(
                    link.peer_id, code, "HIGH", link.peer_role, fp, list(expected), message
                )
            )
        if close:
            link.session.close(clock.now(), CLOSE_IDENTITY, code)
            link.kick()
