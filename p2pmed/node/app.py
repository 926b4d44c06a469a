"""A role app (patient, clinician, or a benchmark's) and what it may use of its node.

The node calls the App hooks; a role app sees the node only as a NodeHandle, so the roles
import neither the node nor each other.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from p2pmed.core import events as ev
    from p2pmed.node.config import NodeConfig
    from p2pmed.node.context import NodeContext
    from p2pmed.node.output import Events
    from p2pmed.node.peer import PeerLink
    from p2pmed.node.persist import NodeStore
    from p2pmed.node.truststore import TrustStore
    from p2pmed.signaling_client import SignalingClient


class App(Protocol):
    def on_joined(self) -> None: ...
    def on_peer_waiting(self, peer_id: str, role: str) -> None: ...
    def on_peer_left(self, peer_id: str) -> None: ...
    def on_signaling(self, up: bool) -> None: ...
    def on_established(self, link: PeerLink) -> None: ...
    def on_message(self, link: PeerLink, event: ev.MessageReceived) -> None: ...
    def on_acked(self, link: PeerLink, event: ev.MessageAcked) -> None: ...
    def on_closed(self, link: PeerLink) -> None: ...
    def command(self, cmd: dict[str, Any]) -> None: ...
    async def run(self) -> None: ...
    async def close(self) -> None: ...


class NoOpApp:
    """Every App hook a no-op: the node's app before start() made the role's, and the base
    of a role app, which overrides only the hooks it needs."""

    def on_joined(self) -> None:
        return None

    def on_peer_waiting(self, peer_id: str, role: str) -> None:
        return None

    def on_peer_left(self, peer_id: str) -> None:
        return None

    def on_signaling(self, up: bool) -> None:
        return None

    def on_established(self, link: PeerLink) -> None:
        return None

    def on_message(self, link: PeerLink, event: ev.MessageReceived) -> None:
        return None

    def on_acked(self, link: PeerLink, event: ev.MessageAcked) -> None:
        return None

    def on_closed(self, link: PeerLink) -> None:
        return None

    def command(self, cmd: dict[str, Any]) -> None:
        return None

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        return None


class NodeHandle(Protocol):
    """The node as its role app, trust gate and revocation see it."""

    @property
    def ctx(self) -> NodeContext: ...
    @property
    def config(self) -> NodeConfig: ...
    @property
    def events(self) -> Events: ...
    @property
    def signaling(self) -> SignalingClient: ...
    @property
    def endpoint_id(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def store(self) -> NodeStore | None: ...
    @property
    def trust(self) -> TrustStore | None: ...
    @property
    def peers(self) -> dict[str, PeerLink]: ...
    @property
    def revoked_peers(self) -> set[str]: ...
    def persist(self) -> bool: ...  # False while the store cannot be written
    def on_app_rejected(self, link: PeerLink, exc: Exception) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...
    def stop(self) -> None: ...
    def command(self, cmd: dict[str, Any]) -> None: ...
