"""Durable session store on SQLite (WAL): applies a Session's Change records, loads a snapshot.

Use (the adapter contract, see p2pmed.core.session):

    store = SessionStore("node.db", key="sess-1/clinician-7")
    session = Session(config, now=now, restored=store.load())
    ...after every call into the session:
    out = session.datagrams_to_send(now)
    store.apply(session.take_changes())     # commits (fsync) before anything leaves
    transport.send(out); handle(session.next_event() ...)

`synchronous=FULL`: every commit is fsynced (but ACK bookkeeping, below). NORMAL
in WAL mode survives a process crash but can lose the last commits on power loss, and a lost
PnReserved record would let a restarted node reuse AES-GCM nonces; a lost
delivery record would re-deliver an acked message. Neither is acceptable here.

Acknowledgement bookkeeping alone (a transaction of FramesAcked and ReplayHigh records
only, with at least one FramesAcked: the peer's ACK frames) is committed without its own
fsync (`synchronous=NORMAL` for that transaction): it survives a process crash, and the next
commit with anything else fsyncs the WAL with it. Lost to a power cut before then, it costs
a retransmission of frames the peer already has (it drops them as duplicates) and, after
the restart, a replay window as of the last fsynced commit: frames received in that window
whose processing changed nothing else (ACKs, which acknowledge only frames the peer had; a
PING or PATH_BIND that came in the same loop turn as an ACK) could be replayed once. A PING
or PATH_BIND on its own is fsynced as before, and every frame with any other effect is in an
fsynced commit. On the patient's path a peer's ACK otherwise cost an fsync that the next
vitals message waited behind.

Outgoing messages, vitals included, are fsynced before their frames leave. Deferring the
fsync of outgoing vitals until after the send was tried and withdrawn (docs/devices.md):
after a power cut between send and fsync the restarted node gives new messages the sequence
numbers of frames the peer already has, and the peer drops them as duplicates, a silent
loss. A lost ACK bookkeeping transaction costs only a retransmission; that is the difference.

A message queued and framed in the same transaction (the usual case: the driver frames what
it was given before it commits) is not written to `out_message` only to be deleted again.

Received messages go to an `inbox` table in the same transaction that advances
the receive state, so a delivery is never lost nor repeated across crashes;
the application marks rows done with `inbox_done`. That mark is committed without its own
fsync, like ACK bookkeeping: a process crash keeps it, and the next fsynced commit (the next
delivery's) makes it durable. A power cut before then costs the application seeing the rows
it acted on since then again, from the inbox, flagged as replayed (as a crash between acting
and marking always could); a receiving node no longer pays two fsyncs per message.

An adapter can commit its own small per-key state in the same transaction as the
session changes: `apply(changes, meta={"name": value})`, read back with
`load_meta()`. Meta rows survive a new handshake under the same key (`Established`
clears only the session tables).

The file holds session keys and message contents: it is created with mode 0600
and a file readable by group or others is refused (SQLite gives the -wal and
-shm files the same mode).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from p2pmed.core.frame import NUM_CLASSES
from p2pmed.core.persist import (
    Change,
    Closed,
    Delivered,
    Established,
    FrameAdded,
    FramesAcked,
    KeysChanged,
    MessageQueued,
    PnReserved,
    ReplayHigh,
    SessionSnapshot,
    StoredFrame,
    StoredMessage,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS session (
    key TEXT PRIMARY KEY, session_id TEXT NOT NULL, initiator INTEGER NOT NULL,
    sas TEXT NOT NULL, peer_fingerprint TEXT NOT NULL, peer_public BLOB NOT NULL,
    send_keys TEXT NOT NULL DEFAULT '{}', recv_keys TEXT NOT NULL DEFAULT '{}',
    pn_ceiling INTEGER NOT NULL DEFAULT 0, replay_high INTEGER NOT NULL DEFAULT -1,
    closed_code INTEGER, closed_reason TEXT);
CREATE TABLE IF NOT EXISTS class_state (
    key TEXT NOT NULL, cls INTEGER NOT NULL,
    send_next_seq INTEGER NOT NULL DEFAULT 0, send_next_index INTEGER NOT NULL DEFAULT 1,
    recv_next_seq INTEGER NOT NULL DEFAULT 0, recv_delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key, cls));
CREATE TABLE IF NOT EXISTS out_message (
    key TEXT NOT NULL, msg_id INTEGER NOT NULL, cls INTEGER NOT NULL, data BLOB NOT NULL,
    ts_us INTEGER NOT NULL, offset INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (key, msg_id));
CREATE TABLE IF NOT EXISTS out_frame (
    key TEXT NOT NULL, cls INTEGER NOT NULL, seq INTEGER NOT NULL, flags INTEGER NOT NULL,
    payload BLOB NOT NULL, ts_us INTEGER NOT NULL, msg_ids TEXT NOT NULL,
    PRIMARY KEY (key, cls, seq));
CREATE TABLE IF NOT EXISTS inbox (
    row INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, msg_id INTEGER NOT NULL,
    cls INTEGER NOT NULL, seq INTEGER NOT NULL, ts_us INTEGER NOT NULL, data BLOB NOT NULL,
    done INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (key, done, row);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT NOT NULL, name TEXT NOT NULL, value NOT NULL, PRIMARY KEY (key, name));
"""

MetaValue = bytes | str | int
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _check_meta(meta: Mapping[str, MetaValue]) -> list[tuple[str, MetaValue]]:
    rows: list[tuple[str, MetaValue]] = []
    for name, value in meta.items():
        if not isinstance(name, str) or not name:
            raise TypeError("meta names are non-empty strings")
        if isinstance(value, bool) or not isinstance(value, bytes | str | int):
            raise TypeError(f"meta {name!r}: value must be bytes, str or int")
        if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"meta {name!r}: int out of the 64-bit range")
        rows.append((name, value))
    return rows


@dataclass(frozen=True, slots=True)
class InboxMessage:
    row: int
    msg_id: int
    cls: int
    seq: int
    ts_us: int
    data: bytes


def _ack_bookkeeping(work: list[tuple[SessionStore, list[Change], list[Any]]]) -> bool:
    """Only FramesAcked and the ReplayHigh of the frames that carried them, no meta: a
    transaction of a peer's ACKs. A ReplayHigh on its own (a PING, a PATH_BIND) is not."""
    acked = False
    for _store, changes, rows in work:
        if rows:
            return False
        for ch in changes:
            if isinstance(ch, FramesAcked):
                acked = True
            elif not isinstance(ch, ReplayHigh):
                return False
    return acked


def _framed_here(changes: list[Change]) -> set[tuple[int, int]]:
    """(position of the MessageQueued, msg_id) and (position of the FrameAdded, msg_id) of
    each message that `changes` both queue and frame whole, within one session (an
    Established starts another): such a message never needs an out_message row."""
    queued: dict[int, int] = {}
    skip: set[tuple[int, int]] = set()
    for i, ch in enumerate(changes):
        if isinstance(ch, MessageQueued):
            queued[ch.msg_id] = i
        elif isinstance(ch, FrameAdded):
            for m in ch.msg_ids:
                at = queued.pop(m, None)
                if at is not None:
                    skip.update(((at, m), (i, m)))
        elif isinstance(ch, Established):
            queued.clear()
    return skip


def _private_file(path: str) -> None:
    if path == ":memory:":
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        return
    except FileExistsError:
        pass
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is accessible by others (mode {mode:o}); chmod 600 it")


class StoreError(Exception):
    """The store's file cannot be written now (disk full, I/O error, read-only file system,
    a damaged file): nothing of the transaction is stored. The caller may try again."""


class SessionStore:
    def __init__(
        self, path: str | os.PathLike[str], key: str, *, synchronous: str = "FULL"
    ) -> None:
        if synchronous not in ("FULL", "EXTRA", "NORMAL"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        self.key = key
        path = self.path = os.fspath(path)
        _private_file(path)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._synchronous = synchronous
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def apply(self, changes: Iterable[Change], meta: Mapping[str, MetaValue] | None = None) -> None:
        """Write the records, and the `meta` rows of this key, in one transaction; returns
        once it is durable. Either all of it is written or none (the error propagates).
        Meta values are bytes, str or (64-bit) int; a bad one raises before anything is
        written."""
        changes = list(changes)
        rows = _check_meta(meta) if meta else []
        if not changes and not rows:
            return
        self.apply_together([(self, changes, meta)])

    def _apply_changes(self, changes: list[Change], db: sqlite3.Connection) -> None:
        skip = _framed_here(changes) if len(changes) > 1 else set()
        for i, ch in enumerate(changes):
            self._apply_one(ch, db, i, skip)

    def _apply_one(
        self, ch: Change, db: sqlite3.Connection, i: int, skip: set[tuple[int, int]]
    ) -> None:
        k = self.key
        if isinstance(ch, MessageQueued):
            if (i, ch.msg_id) not in skip:
                db.execute(
                    "INSERT INTO out_message (key, msg_id, cls, data, ts_us) VALUES (?,?,?,?,?)",
                    (k, ch.msg_id, ch.cls, ch.data, ch.ts_us),
                )
            db.execute(
                "UPDATE class_state SET send_next_index = max(send_next_index, ?)"
                " WHERE key=? AND cls=?",
                ((ch.msg_id >> 3) + 1, k, ch.cls),
            )
        elif isinstance(ch, FrameAdded):
            db.execute(
                "INSERT OR REPLACE INTO out_frame VALUES (?,?,?,?,?,?,?)",
                (k, ch.cls, ch.seq, ch.flags, ch.payload, ch.ts_us, json.dumps(ch.msg_ids)),
            )
            db.execute(
                "UPDATE class_state SET send_next_seq = max(send_next_seq, ?)"
                " WHERE key=? AND cls=?",
                (ch.seq + 1, k, ch.cls),
            )
            stored = [(k, m) for m in ch.msg_ids if (i, m) not in skip]
            if stored:
                db.executemany("DELETE FROM out_message WHERE key=? AND msg_id=?", stored)
            if ch.progress is not None:
                db.execute(
                    "UPDATE out_message SET offset=? WHERE key=? AND msg_id=?",
                    (ch.progress[1], k, ch.progress[0]),
                )
        elif isinstance(ch, FramesAcked):
            db.execute(
                "DELETE FROM out_frame WHERE key=? AND cls=? AND seq<?", (k, ch.cls, ch.below)
            )
        elif isinstance(ch, Delivered):
            db.execute(
                "UPDATE class_state SET recv_next_seq=?, recv_delivered=? WHERE key=? AND cls=?",
                (ch.next_seq, ch.delivered, k, ch.cls),
            )
            if ch.messages:
                db.executemany(
                    "INSERT INTO inbox (key, msg_id, cls, seq, ts_us, data) VALUES (?,?,?,?,?,?)",
                    [(k, mid, ch.cls, seq, ts, data) for mid, seq, ts, data in ch.messages],
                )
        elif isinstance(ch, ReplayHigh):
            db.execute(
                "UPDATE session SET replay_high = max(replay_high, ?) WHERE key=?", (ch.pn, k)
            )
        elif isinstance(ch, PnReserved):
            db.execute(
                "UPDATE session SET pn_ceiling = max(pn_ceiling, ?) WHERE key=?", (ch.ceiling, k)
            )
        elif isinstance(ch, KeysChanged):
            if ch.send_keys is not None:
                db.execute(
                    "UPDATE session SET send_keys=? WHERE key=?", (json.dumps(ch.send_keys), k)
                )
            if ch.recv_keys is not None:
                db.execute(
                    "UPDATE session SET recv_keys=? WHERE key=?", (json.dumps(ch.recv_keys), k)
                )
        elif isinstance(ch, Established):
            for table in ("session", "class_state", "out_message", "out_frame", "inbox"):
                db.execute(f"DELETE FROM {table} WHERE key=?", (k,))
            db.execute(
                "INSERT INTO session (key, session_id, initiator, sas, peer_fingerprint,"
                " peer_public) VALUES (?,?,?,?,?,?)",
                (k, ch.session_id, int(ch.initiator), ch.sas, ch.peer_fingerprint, ch.peer_public),
            )
            db.executemany(
                "INSERT INTO class_state (key, cls) VALUES (?,?)",
                [(k, c) for c in range(NUM_CLASSES)],
            )
        elif isinstance(ch, Closed):
            db.execute(
                "UPDATE session SET closed_code=?, closed_reason=? WHERE key=?",
                (ch.code, ch.reason, k),
            )

    @staticmethod
    def apply_together(
        items: Iterable[tuple[SessionStore, Iterable[Change], Mapping[str, MetaValue] | None]],
    ) -> None:
        """`apply` for several keys of the SAME database file in ONE transaction: one fsync
        instead of one per key, durable when it returns (ACK bookkeeping alone: see the
        module docstring), all of it or none."""
        work = []
        for store, changes, meta in items:
            changes = list(changes)
            rows = _check_meta(meta) if meta else []
            if changes or rows:
                work.append((store, changes, rows))
        if not work:
            return
        first = work[0][0]
        db = first._db
        with first._writing(), first._no_fsync(_ack_bookkeeping(work)):
            db.execute("BEGIN IMMEDIATE")
            try:
                for store, changes, rows in work:
                    store._apply_changes(changes, db)
                    if rows:
                        db.executemany(
                            "INSERT OR REPLACE INTO meta (key, name, value) VALUES (?,?,?)",
                            [(store.key, name, value) for name, value in rows],
                        )
                db.execute("COMMIT")
            except BaseException:
                # a COMMIT refused for a full disk or an I/O error was rolled back by SQLite
                # already: a ROLLBACK then fails, and its error would hide the real one
                if db.in_transaction:
                    with suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The file could not be written (disk full, I/O error, read-only, damaged):
        StoreError, naming the file. Other errors (constraints, misuse) are bugs and pass."""
        try:
            yield
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
                raise StoreError(f"cannot write {self.path}: {exc}") from exc
            raise

    @contextmanager
    def _no_fsync(self, lazy: bool = True) -> Iterator[None]:
        """The commits inside without their own fsync (synchronous=NORMAL) when `lazy`."""
        lazy = lazy and self._synchronous != "NORMAL"
        if lazy:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            if lazy:
                self._db.execute(f"PRAGMA synchronous={self._synchronous}")

    def load(self) -> SessionSnapshot | None:
        """The stored session, or None if this key never got established."""
        db, k = self._db, self.key
        row = db.execute(
            "SELECT session_id, initiator, sas, peer_fingerprint, peer_public, send_keys,"
            " recv_keys, pn_ceiling, replay_high, closed_code, closed_reason"
            " FROM session WHERE key=?",
            (k,),
        ).fetchone()
        if row is None:
            return None
        s = SessionSnapshot(
            session_id=row[0],
            initiator=bool(row[1]),
            sas=row[2],
            peer_fingerprint=row[3],
            peer_public=bytes(row[4]),
            send_keys=json.loads(row[5]),
            recv_keys=json.loads(row[6]),
            pn_ceiling=row[7],
            replay_high=row[8],
            closed=None if row[9] is None else (row[9], row[10] or ""),
            established=True,
        )
        for cls, sseq, sidx, rseq, rdel in db.execute(
            "SELECT cls, send_next_seq, send_next_index, recv_next_seq, recv_delivered"
            " FROM class_state WHERE key=?",
            (k,),
        ):
            s.send_next_seq[cls] = sseq
            s.send_next_index[cls] = sidx
            s.recv_next_seq[cls] = rseq
            s.recv_delivered[cls] = rdel
        for cls, seq, flags, payload, ts, ids in db.execute(
            "SELECT cls, seq, flags, payload, ts_us, msg_ids FROM out_frame WHERE key=?", (k,)
        ):
            s.frames[(cls, seq)] = StoredFrame(
                cls, seq, flags, bytes(payload), ts, tuple(json.loads(ids))
            )
        for mid, cls, data, ts, offset in db.execute(
            "SELECT msg_id, cls, data, ts_us, offset FROM out_message WHERE key=?", (k,)
        ):
            s.messages[mid] = StoredMessage(mid, cls, bytes(data), ts, offset)
        return s

    def load_meta(self) -> dict[str, MetaValue]:
        """Every meta row of this key, as committed by `apply`."""
        rows = self._db.execute("SELECT name, value FROM meta WHERE key=?", (self.key,))
        return {name: value for name, value in rows}

    def open_keys(self, session_id: str) -> list[str]:
        """Keys (in this file) of established, not closed sessions with this session id."""
        rows = self._db.execute(
            "SELECT key FROM session WHERE session_id=? AND closed_code IS NULL", (session_id,)
        )
        return [k for (k,) in rows]

    def inbox(self, *, include_done: bool = False, limit: int = -1) -> list[InboxMessage]:
        """Delivered messages in delivery order (by default only those not marked done)."""
        sql = "SELECT row, msg_id, cls, seq, ts_us, data FROM inbox WHERE key=?"
        if not include_done:
            sql += " AND done=0"
        rows = self._db.execute(sql + " ORDER BY row LIMIT ?", (self.key, limit))
        return [InboxMessage(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    def inbox_done(self, upto_row: int, *, delete: bool = False) -> None:
        """The application has acted on every inbox row up to and including `upto_row`.
        Committed without its own fsync (see the module docstring): a power cut before the
        next fsynced commit shows those rows again, flagged as replayed, never loses one."""
        with self._writing(), self._no_fsync():
            if delete:
                self._db.execute("DELETE FROM inbox WHERE key=? AND row<=?", (self.key, upto_row))
            else:
                self._db.execute(
                    "UPDATE inbox SET done=1 WHERE key=? AND row<=? AND done=0",
                    (self.key, upto_row),
                )
