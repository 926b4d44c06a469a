"""Marking inbox rows done costs no fsync, and still survives a SIGKILL.

A receiving node commits each delivery (fsync) before it acts on it, then marks the row
done. That mark used to be a second fsynced commit per message. A child process fills a
real store's inbox through the simulated network, marks the rows done between two markers
it writes to stdout, and SIGKILLs itself; strace (on the child, syscalls with fd paths)
shows the fsyncs before the first marker and none between the markers, and the store
reopened here has the rows done.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from p2pmed.store.sqlite import SessionStore

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import os, signal, sys
from p2pmed.store.sqlite import SessionStore
from tests.core.sessionkit import all_idle, establish, send_all, workload
from tests.core.simnet import make_pair

store = SessionStore(sys.argv[1], key="b")
net, a, b = make_pair(10, stores=(None, store), persist=True)
establish(net)
send_all(net, "a", workload(10, 30, big=False), {})
net.run(lambda: all_idle(a))
rows = store.inbox()
assert len(rows) >= 20, len(rows)
os.write(1, f"ROWS {len(rows)} {rows[9].row}\\n".encode())
os.write(1, b"MARK-BEGIN\\n")
store.inbox_done(rows[4].row)
store.inbox_done(rows[9].row, delete=True)
os.write(1, b"MARK-END\\n")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_inbox_done_has_no_fsync_and_survives_sigkill(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    assert strace is not None, "this test needs strace (Debian package strace)"
    db, out = tmp_path / "b.db", tmp_path / "strace.txt"
    proc = subprocess.run(
        [
            strace,
            "-f",
            "-y",
            "-e",
            "trace=write,fsync,fdatasync",
            "-o",
            str(out),
            sys.executable,
            "-c",
            CHILD,
            str(db),
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    assert b"MARK-END" in proc.stdout, proc.stderr.decode()[-2000:]
    lines = out.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if "MARK-BEGIN" in line)
    end = next(i for i, line in enumerate(lines) if "MARK-END" in line)

    def syncs(part: list[str]) -> list[str]:
        return [line for line in part if "fsync(" in line or "fdatasync(" in line]

    assert any("b.db-wal" in line for line in syncs(lines[:begin])), "deliveries fsynced"
    assert syncs(lines[begin:end]) == []
    n, last = (int(x) for x in proc.stdout.decode().split("ROWS ", 1)[1].split()[:2])
    again = SessionStore(db, key="b")
    try:
        pending = again.inbox()
        everything = again.inbox(include_done=True)
    finally:
        again.close()
    # rows 0-4 marked done, then 0-9 deleted: both marks kept through the SIGKILL
    assert len(pending) == n - 10
    assert pending == everything
    assert all(row.row > last for row in pending)
