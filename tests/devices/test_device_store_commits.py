"""The store's share of a device message's latency: what one commit writes and syncs.

A vitals message from a device is queued and framed before its one commit (fsync), and the
clinician's ACK of it comes back a few ms later. These check, on a real SQLite file, that the
ACK bookkeeping does not cost an fsync of its own (yet survives a process crash), and that a
message queued and framed in one transaction writes no out_message pages.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from p2pmed.core.persist import (
    Established,
    FrameAdded,
    MessageQueued,
    SessionSnapshot,
)
from p2pmed.store.sqlite import SessionStore

ROOT = Path(__file__).resolve().parents[2]
EST = Established("sid", True, "sas", "fp", b"k" * 32)
N = 20

# Phase 1: N message commits; phase 2: N commits of ACK bookkeeping only; phase 3: one
# ReplayHigh alone; then the process dies without closing the database (no checkpoint at
# close). getppid() marks the phases in strace's output.
CHILD = f"""
import os, sys
from p2pmed.core.persist import Established, FrameAdded, FramesAcked, MessageQueued, ReplayHigh
from p2pmed.store.sqlite import SessionStore
s = SessionStore(sys.argv[1], "s/p")
s.apply([Established("sid", True, "sas", "fp", b"k" * 32)])
os.getppid()
for i in range({N}):
    mid = (i << 3) | 1
    s.apply([MessageQueued(mid, 1, b"m", i), FrameAdded(1, i, 0, b"p", i, (mid,), None)])
os.getppid()
for i in range({N}):
    s.apply([ReplayHigh(i), FramesAcked(1, i + 1)])
os.getppid()
s.apply([ReplayHigh({N})])  # a PING or PATH_BIND alone: its replay window is made durable
os.getppid()
os._exit(0)
"""


def test_ack_bookkeeping_commits_without_fsync_and_survives_a_process_crash(
    tmp_path: Path,
) -> None:
    strace = shutil.which("strace")
    assert strace is not None, "this test needs strace (Debian package strace)"
    db, log = tmp_path / "s.db", tmp_path / "strace.log"
    trace = [strace, "-f", "-qq", "-e", "trace=fsync,fdatasync,getppid", "-o", str(log)]
    subprocess.run(
        [*trace, sys.executable, "-c", CHILD, str(db)],
        check=True,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        timeout=120,
    )
    phase, syncs = 0, [0, 0, 0, 0, 0]
    for line in log.read_text().splitlines():
        if "getppid(" in line:
            phase += 1
        elif "fsync(" in line or "fdatasync(" in line:
            syncs[phase] += 1
    assert phase == 4
    assert syncs[1] >= N  # every message commit is durable when apply() returns
    assert syncs[2] == 0  # ACK bookkeeping rides on the next commit's fsync
    assert syncs[3] >= 1
    # ... and a process crash right after it loses none of it
    snap = SessionStore(db, "s/p").load()
    assert snap is not None
    assert snap.frames == {}
    assert snap.replay_high == N


def _wal_frames(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        _busy, frames, _done = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)
    finally:
        con.close()


def _pages_of(tmp_path: Path, name: str, changes: list) -> int:
    """WAL pages one transaction of `changes` writes (after the session is set up)."""
    db = tmp_path / f"{name}.db"
    store = SessionStore(db, "s/p")
    store.apply([EST])
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    store.apply(changes)
    frames = _wal_frames(db)
    store.close()
    return frames


def test_a_message_framed_in_its_own_transaction_writes_no_message_row(tmp_path: Path) -> None:
    mid = (1 << 3) | 1
    queued_and_framed = [
        MessageQueued(mid, 1, b"m" * 100, 7),
        FrameAdded(1, 0, 0, b"p" * 140, 7, (mid,), None),
    ]
    frame_only = [FrameAdded(1, 0, 0, b"p" * 140, 7, (), None)]
    assert _pages_of(tmp_path, "a", queued_and_framed) == _pages_of(tmp_path, "b", frame_only)
    # the state is the reference semantics' (p2pmed.core.persist)
    snap = SessionStore(tmp_path / "a.db", "s/p").load()
    ref = SessionSnapshot()
    ref.apply([EST, *queued_and_framed])
    assert snap is not None
    assert (snap.messages, snap.frames) == (ref.messages, ref.frames)
    assert snap.send_next_index == ref.send_next_index
    assert snap.send_next_seq == ref.send_next_seq


def test_messages_not_framed_whole_in_the_transaction_are_stored(tmp_path: Path) -> None:
    m1, m2, m3 = (1 << 3) | 1, (2 << 3) | 1, (3 << 3) | 1
    store = SessionStore(tmp_path / "s.db", "s/p")
    store.apply([EST])
    store.apply(
        [
            MessageQueued(m1, 1, b"a" * 50, 1),
            MessageQueued(m2, 1, b"b" * 50, 2),
            FrameAdded(1, 0, 0, b"p", 1, (m1,), (m2, 20)),  # m2 cut: 20 bytes framed
            MessageQueued(m3, 1, b"c" * 50, 3),  # queued, no frame yet
        ]
    )
    snap = store.load()
    assert snap is not None
    assert sorted(snap.messages) == [m2, m3]
    assert snap.messages[m2].offset == 20
    # a message framed here but queued in an earlier transaction is deleted as before
    store.apply([FrameAdded(1, 1, 0, b"q", 4, (m2, m3), None)])
    snap = store.load()
    assert snap is not None and snap.messages == {}
    # a new session in the same transaction: its message of the same id is its own
    store.apply(
        [
            MessageQueued(m1, 1, b"x", 5),
            FrameAdded(1, 2, 0, b"r", 5, (m1,), None),
            EST,
            MessageQueued(m1, 1, b"new", 6),
        ]
    )
    snap = store.load()
    assert snap is not None
    assert list(snap.messages) == [m1] and snap.messages[m1].data == b"new"
    assert snap.frames == {}
