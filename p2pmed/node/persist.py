"""The session store under --data-dir (identity, endpoint id and resume token: datadir.py).

    sessions.db    SQLite (WAL, fsync per commit): one session store per peer, keyed
                   "{signaling session}/{peer endpoint}", plus meta rows (JSON text)

The store's meta rows hold the patient's source position per peer. They are written in the
same transaction as that peer's session changes (`SessionStore.apply(changes, meta)`), so
"message n was queued for this peer" and "the source is past n for this peer" become durable
together: after a SIGKILL the patient neither skips nor repeats a sample.

Each session driver takes only its own session's changes and hands them to the store's
`GroupCommit`; one flush writes everything handed in since the last one in one transaction
(one fsync, done when flush() returns: the driver sends the frames after it): a vitals
message is queued for every clinician, and a commit per peer multiplied the fsyncs a message
waits for before it leaves (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import replace

from p2pmed.core.persist import Change
from p2pmed.core.session import Session, SessionConfig
from p2pmed.node import clock, datadir
from p2pmed.store.sqlite import MetaValue, SessionStore


class PeerStore(SessionStore):
    """SessionStore whose meta values are JSON, set ahead and committed with the next apply."""

    def __init__(self, path: str, key: str) -> None:
        super().__init__(path, key)
        self._meta: dict[str, MetaValue] = {}
        _migrate_node_meta(path)

    def set_meta(self, name: str, value: object) -> None:
        self._meta[name] = json.dumps(value)

    def take_meta(self) -> dict[str, MetaValue]:
        pending, self._meta = self._meta, {}
        return pending

    def keep_meta(self, pending: Mapping[str, MetaValue]) -> None:
        """Meta values a failed transaction did not write: kept for the next one."""
        for name, value in pending.items():
            self._meta.setdefault(name, value)

    def get_meta(self, name: str) -> object:
        value = self.load_meta().get(name)
        return None if value is None else json.loads(str(value))

    def apply(self, changes: Iterable[Change], meta: Mapping[str, MetaValue] | None = None) -> None:
        pending, self._meta = self._meta, {}
        if meta:
            pending.update(meta)
        try:
            super().apply(changes, pending)
        except BaseException:
            for name, value in pending.items():  # not written: keep for the next apply
                self._meta.setdefault(name, value)
            raise

    def stored_peers(self, session_id: str) -> list[str]:
        prefix = session_id + "/"
        return [k[len(prefix) :] for k in self.open_keys(session_id) if k.startswith(prefix)]


def _migrate_node_meta(path: str) -> None:
    """Move rows of the former `node_meta` table into the store's meta table (once)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='node_meta'"
            ).fetchone()
            if found is not None:
                db.execute(
                    "INSERT OR IGNORE INTO meta (key, name, value)"
                    " SELECT key, name, value FROM node_meta"
                )
                db.execute("DROP TABLE node_meta")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()


class NodeStore:
    def __init__(self, data_dir: str, session_id: str) -> None:
        self.path = os.path.join(data_dir, "sessions.db")
        # patient data: 0600 whatever the umask (SQLite gives its WAL and SHM files the same mode)
        for suffix in ("", "-wal", "-shm"):
            if suffix == "" or os.path.exists(self.path + suffix):
                datadir.precreate(self.path + suffix)
        self.session_id = session_id
        self.stores: dict[str, PeerStore] = {}
        self._index = PeerStore(self.path, f"{session_id}/")  # node-wide metadata
        self.group = GroupCommit(self)

    def peer(self, peer_id: str) -> PeerStore:
        store = self.stores.get(peer_id)
        if store is None:
            store = self.stores[peer_id] = PeerStore(self.path, f"{self.session_id}/{peer_id}")
        return store

    def apply_all(self, items: Iterable[tuple[str, Iterable[Change]]]) -> None:
        """Every peer's session changes (and set-ahead meta) in one transaction: one fsync
        per call however many peers, instead of one per peer."""
        work = []
        for peer_id, changes in items:
            store = self.peer(peer_id)
            work.append((store, list(changes), store.take_meta()))
        try:
            SessionStore.apply_together(work)
        except BaseException:
            for store, _changes, meta in work:
                store.keep_meta(meta)
            raise

    def peers_with_meta(self) -> list[str]:
        return [peer_id for peer_id, store in self.stores.items() if store._meta]

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


class GroupCommit:
    """Session changes handed in by each peer's driver (its own session's only), written
    together by flush(): one transaction, durable when flush() returns."""

    def __init__(self, store: NodeStore) -> None:
        self._store = store
        self._pending: dict[str, list[Change]] = {}

    def add(self, peer_id: str, changes: list[Change]) -> None:
        pending = self._pending.get(peer_id)
        if pending is None:
            self._pending[peer_id] = changes
        else:
            pending.extend(changes)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for peer_id in self._store.peers_with_meta():  # set-ahead meta rides along
            pending.setdefault(peer_id, [])
        if not pending:
            return
        try:
            self._store.apply_all(pending.items())
        except BaseException:
            for peer_id, changes in pending.items():  # not written: first in the next flush
                changes.extend(self._pending.get(peer_id, []))
                self._pending[peer_id] = changes
            raise


def open_store(data_dir: str | None, session_id: str) -> NodeStore | None:
    if data_dir is None:
        return None
    return NodeStore(data_dir, session_id)


def make_session(
    store: NodeStore | None, cfg: SessionConfig, peer_id: str, *, fresh: bool = False
) -> Session:
    if store is None:
        return Session(cfg, now=clock.now())
    cfg = replace(cfg, persist=True)
    snapshot = None if fresh else store.peer(peer_id).load()
    if snapshot is not None and snapshot.closed is None:
        try:
            return Session(cfg, now=clock.now(), restored=snapshot)
        except ValueError:
            pass  # another role or session under this key: start afresh
    return Session(cfg, now=clock.now())
