"""SQLite session store: pragmas, atomic transactions, hostile stored state, inbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from p2pmed.core.errors import CryptoError
from p2pmed.core.persist import (
    Delivered,
    Established,
    FrameAdded,
    FramesAcked,
    KeysChanged,
    MessageQueued,
    PnReserved,
    SessionSnapshot,
)
from p2pmed.core.session import Session, SessionConfig
from p2pmed.store.sqlite import SessionStore, StoreError
from tests.core.sessionkit import establish
from tests.core.simnet import make_identity, make_pair
from tests.smalldisk import small_disk

ESTABLISHED = [
    Established("s", True, "123 456", "p2pmed:ab", bytes(32)),
    KeysChanged({"epoch": 1}, {"epoch": 1}),
]


def test_wal_and_full_sync_by_default(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db", key="k")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(ValueError):
        SessionStore(tmp_path / "t.db", key="k", synchronous="OFF")


def test_apply_is_one_transaction(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db", key="k")
    store.apply(ESTABLISHED)
    store.apply([MessageQueued(9, 1, b"a", 0)])
    with pytest.raises(sqlite3.IntegrityError):  # same message id twice: the batch fails
        store.apply([PnReserved(4096), MessageQueued(9, 1, b"b", 0)])
    snap = store.load()
    assert snap is not None
    assert snap.pn_ceiling == 0  # the PnReserved of the failed batch was rolled back
    assert snap.messages[9].data == b"a"


def test_changes_give_the_same_snapshot_as_the_reference(tmp_path: Path) -> None:
    changes = [
        *ESTABLISHED,
        MessageQueued((1 << 3) | 2, 2, b"x" * 40_000, 5),
        MessageQueued((2 << 3) | 2, 2, b"y", 6),
        FrameAdded(2, 0, 1, b"x" * 16384, 5, (), ((1 << 3) | 2, 16384)),
        FrameAdded(2, 1, 0, b"x" * 16384, 5, (), ((1 << 3) | 2, 32768)),
        FramesAcked(2, 1),
        Delivered(0, 7, 3, ((8, 6, 1, b"m"),)),
        PnReserved(8192),
        PnReserved(4096),  # never goes back
    ]
    ref = SessionSnapshot()
    ref.apply(changes)
    store = SessionStore(tmp_path / "s.db", key="k")
    store.apply(changes)
    assert store.load() == ref
    assert ref.pn_ceiling == 8192
    assert ref.messages[(1 << 3) | 2].offset == 32768
    assert list(ref.frames) == [(2, 1)]
    assert ref.send_next_index[2] == 3 and ref.send_next_seq[2] == 2
    assert ref.recv_next_seq[0] == 7 and ref.recv_delivered[0] == 3


def test_established_record_starts_the_key_afresh(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db", key="k")
    other = SessionStore(tmp_path / "s.db", key="other")
    store.apply([*ESTABLISHED, MessageQueued(9, 1, b"a", 0)])
    other.apply([*ESTABLISHED, MessageQueued(9, 1, b"b", 0)])
    store.apply(ESTABLISHED)  # a new handshake for this key
    snap = store.load()
    assert snap is not None and not snap.messages
    other_snap = other.load()
    assert other_snap is not None and other_snap.messages[9].data == b"b"  # untouched


def test_tampered_key_state_is_refused_with_a_typed_error(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db", key="a")
    net, a, _b = make_pair(40, stores=(store, None), persist=True)
    establish(net)
    store._db.execute("UPDATE session SET send_keys=? WHERE key='a'", ('{"epoch": 1}',))
    snap = store.load()
    assert snap is not None
    with pytest.raises(CryptoError) as e:
        Session(a.config, now=net.now, restored=snap)
    assert e.value.reason == "bad_state"


def test_snapshot_of_another_session_is_refused(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db", key="a")
    net, a, _b = make_pair(41, stores=(store, None), persist=True)
    establish(net)
    snap = store.load()
    assert snap is not None
    cfg = SessionConfig("another-session", True, make_identity(1))
    with pytest.raises(ValueError):
        Session(cfg, now=net.now, restored=snap)
    with pytest.raises(ValueError):
        Session(a.config, now=net.now, restored=SessionSnapshot())  # never established


def test_store_file_is_private(tmp_path: Path) -> None:
    SessionStore(tmp_path / "s.db", key="k").apply(ESTABLISHED)
    assert (tmp_path / "s.db").stat().st_mode & 0o777 == 0o600
    loose = tmp_path / "loose.db"
    loose.touch(mode=0o644)
    loose.chmod(0o644)
    with pytest.raises(PermissionError):
        SessionStore(loose, key="k")


def test_meta_commits_with_the_changes_or_not_at_all(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db", key="k")
    store.apply(ESTABLISHED, meta={"pos": 7, "tag": "a", "blob": b"\x00\xff"})
    assert store.load_meta() == {"pos": 7, "tag": "a", "blob": b"\x00\xff"}
    store.apply([MessageQueued(9, 1, b"a", 0)], meta={"pos": 8})
    with pytest.raises(sqlite3.IntegrityError):  # the batch fails: its meta is not written
        store.apply([MessageQueued(9, 1, b"b", 0)], meta={"pos": 9})
    assert store.load_meta()["pos"] == 8
    store.apply([], meta={"pos": 10})  # meta alone is a transaction too
    for bad in ({"pos": 1.5}, {"pos": None}, {"pos": True}, {"": 1}, {"pos": 1 << 63}):
        with pytest.raises((TypeError, ValueError)):
            store.apply([PnReserved(4096)], meta=bad)  # type: ignore[arg-type]
    snap = store.load()
    assert snap is not None and snap.pn_ceiling == 0  # nothing of the refused calls
    store.apply(ESTABLISHED)  # a new handshake under this key keeps the meta rows
    other = SessionStore(tmp_path / "s.db", key="other")
    other.apply([], meta={"pos": 1})
    store.close()
    reopened = SessionStore(tmp_path / "s.db", key="k")
    assert reopened.load_meta() == {"pos": 10, "tag": "a", "blob": b"\x00\xff"}
    assert other.load_meta() == {"pos": 1}
    assert reopened.open_keys("s") == ["k"]  # "other" never got established


def test_a_full_disk_is_a_store_error_and_writes_nothing(tmp_path: Path) -> None:
    """On a real file system that is full, a commit fails as StoreError naming the file and
    SQLite's reason (not the ROLLBACK's "no transaction is active", which once hid it),
    nothing of it is stored, and the same store takes the same changes once space is back."""
    with small_disk(tmp_path / "disk") as disk:
        store = SessionStore(disk.mount / "s.db", key="k")
        store.apply(ESTABLISHED)
        big = [MessageQueued(i, 1, bytes(4000), 0) for i in range(1, 200)]  # new WAL pages
        disk.fill()
        with pytest.raises(StoreError, match="database or disk is full") as e:
            store.apply(big, meta={"pos": 1})
        assert str(disk.mount / "s.db") in str(e.value)
        snap = store.load()
        assert snap is not None and snap.messages == {} and store.load_meta() == {}
        with pytest.raises(sqlite3.IntegrityError):  # a bug is not a full disk: it passes
            store.apply([MessageQueued(9, 1, b"a", 0), MessageQueued(9, 1, b"b", 0)])
        disk.free()
        store.apply(big, meta={"pos": 1})
        snap = store.load()
        assert snap is not None and len(snap.messages) == len(big)
        assert store.load_meta() == {"pos": 1}
        store.close()
