"""Durable node state under --data-dir.

    identity.key   Ed25519 identity (0600, p2pmed.core.identity)
    endpoint_id    the stable signaling endpoint id, so a restart takes over its old place
    sessions.db    SQLite (WAL, fsync per commit): one session store per peer, keyed
                   "{signaling session}/{peer endpoint}", plus `node_meta` rows

`node_meta` holds the patient's source position per peer. It is written in the same
transaction as that peer's session changes, so "message n was queued for this peer" and
"the source is past n for this peer" become durable together: after a SIGKILL the patient
neither skips nor repeats a sample.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from p2pmed.core.persist import Change
from p2pmed.core.session import Session, SessionConfig
from p2pmed.store.sqlite import SessionStore

if TYPE_CHECKING:
    from p2pmed.node.node import Node

META_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS node_meta (key TEXT NOT NULL, name TEXT NOT NULL,"
    " value TEXT NOT NULL, PRIMARY KEY (key, name))"
)


class PeerStore(SessionStore):
    """SessionStore plus node metadata committed in the same transaction."""

    def __init__(self, path: str, key: str) -> None:
        super().__init__(path, key)
        self._db.execute(META_SCHEMA)
        self._meta: dict[str, str] = {}

    def set_meta(self, name: str, value: object) -> None:
        self._meta[name] = json.dumps(value)

    def get_meta(self, name: str) -> object:
        row = self._db.execute(
            "SELECT value FROM node_meta WHERE key=? AND name=?", (self.key, name)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def apply(self, changes: Iterable[Change]) -> None:
        changes = list(changes)
        meta, self._meta = self._meta, {}
        if not changes and not meta:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for ch in changes:
                self._apply_one(ch)
            for name, value in meta.items():
                db.execute(
                    "INSERT OR REPLACE INTO node_meta (key, name, value) VALUES (?,?,?)",
                    (self.key, name, value),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def stored_peers(self, session_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT key FROM session WHERE session_id=? AND closed_code IS NULL", (session_id,)
        )
        prefix = session_id + "/"
        return [k[len(prefix) :] for (k,) in rows if k.startswith(prefix)]


class NodeStore:
    def __init__(self, data_dir: str, session_id: str) -> None:
        self.path = os.path.join(data_dir, "sessions.db")
        self.session_id = session_id
        self.stores: dict[str, PeerStore] = {}
        self._index = PeerStore(self.path, f"{session_id}/")  # node-wide metadata

    def peer(self, peer_id: str) -> PeerStore:
        store = self.stores.get(peer_id)
        if store is None:
            store = self.stores[peer_id] = PeerStore(self.path, f"{self.session_id}/{peer_id}")
        return store

    def known_peers(self) -> list[str]:
        return self._index.stored_peers(self.session_id)

    def get_meta(self, name: str) -> object:
        return self._index.get_meta(name)

    def set_meta(self, name: str, value: object) -> None:
        self._index.set_meta(name, value)
        self._index.apply([])

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self._index.close()


def open_store(node: Node) -> NodeStore | None:
    if node.config.data_dir is None:
        return None
    return NodeStore(node.config.data_dir, node.session_id)


def make_session(node: Node, cfg: SessionConfig, peer_id: str, *, fresh: bool = False) -> Session:
    store: NodeStore | None = node.store
    if store is None:
        return Session(cfg, now=time.time())
    cfg.persist = True
    snapshot = None if fresh else store.peer(peer_id).load()
    if snapshot is not None and snapshot.closed is None:
        try:
            return Session(cfg, now=time.time(), restored=snapshot)
        except ValueError:
            pass  # another role or session under this key: start afresh
    return Session(cfg, now=time.time())
