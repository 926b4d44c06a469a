"""What the parts of a node share: identity, ids, configuration, events, signaling, the
store and the session factory. Peer links and role apps get this, not the whole Node."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from p2pmed.core.identity import Identity
from p2pmed.core.session import Session
from p2pmed.media import MediaSink, MediaSource
from p2pmed.node import events as ne
from p2pmed.node import persist
from p2pmed.node.config import NodeConfig
from p2pmed.node.output import Events
from p2pmed.node.persist import NodeStore
from p2pmed.signaling_client import SignalingClient
from p2pmed.store.sqlite import StoreError

STORE_RETRY_S = 1.0  # a store that cannot be written is tried again this often


@dataclass(eq=False)
class NodeContext:
    config: NodeConfig
    events: Events
    signaling: SignalingClient
    identity: Identity
    endpoint_id: str
    role: str = ""  # from the server's "joined"
    session_id: str = ""
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    store: NodeStore | None = None  # None without --data-dir
    media: MediaSource | None = None  # patient: camera / test pattern
    sink: MediaSink | None = None  # clinician: recorder or blackhole
    rejected: dict[str, int] = field(default_factory=dict)  # counted refusals by kind/reason
    exit_code: int = 0  # EXIT_REVOKED once our token was revoked
    store_failed_since: float | None = None  # time.monotonic() of the first refused commit
    store_failed_attempts: int = 0  # commits refused since then
    store_retry_at: float | None = None  # while failing: no attempt before this (monotonic)

    def count(self, key: str) -> int:
        """Count one refusal; returns how many of that kind so far."""
        n = self.rejected[key] = self.rejected.get(key, 0) + 1
        return n

    def new_session(self, peer_id: str, *, fresh: bool = False) -> Session:
        """The session with `peer_id`: restored from the store unless `fresh`."""
        cfg = self.config.session.session_config(
            self.session_id, self.role == "patient", self.identity
        )
        return persist.make_session(self.store, cfg, peer_id, fresh=fresh)

    def commit(self) -> bool:
        """Write what the session drivers handed to the store's group commit (one fsync).
        False when the store cannot be written (disk full, I/O error): nothing handed in is
        durable, so none of its frames may leave; it stays queued for the next commit.
        Reported once when it starts failing and once when a commit works again."""
        if self.store is None:
            return True
        if self.store_retry_at is not None and time.monotonic() < self.store_retry_at:
            # while it fails, at most one attempt a second: each one writes everything queued
            # since the failure began again, so an attempt per message would cost the square
            return False
        try:
            self.store.group.flush()
        except StoreError as exc:
            now = time.monotonic()
            if self.store_failed_since is None:
                self.store_failed_since = now
                self.store_failed_attempts = 0
                self.events.publish(ne.StoreFailed(self.store.path, str(exc)))
            self.store_failed_attempts += 1
            self.store_retry_at = now + STORE_RETRY_S
            self.count("store/failed")
            return False
        if self.store_failed_since is not None:
            failed_s = round(time.monotonic() - self.store_failed_since, 2)
            self.store_failed_since = self.store_retry_at = None
            self.events.publish(
                ne.StoreRecovered(self.store.path, failed_s, self.store_failed_attempts)
            )
        return True

    def media_sink(self) -> Any:
        return self.sink.new_connection() if self.sink is not None else None
