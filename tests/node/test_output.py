"""--json event output: same line format, never blocks on a slow reader, drops only
non-essential events (counted and reported), and flushes everything on normal exit."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from p2pmed.node.output import Events

GUARD_S = 120.0  # deadlock guard only: a blocked emit would never return at all


@contextmanager
def _pipe_events() -> Iterator[tuple[Events, int]]:
    r, w = os.pipe()
    stream = os.fdopen(w, "w")
    try:
        yield Events(json_out=True, stream=stream), r
    finally:
        stream.close()
        os.close(r)


def _read_all(fd: int, events: Events) -> list[dict[str, Any]]:
    """Flush `events` while reading the pipe, then parse every line."""
    chunks: list[bytes] = []
    done = threading.Event()

    def reader() -> None:
        while True:
            if _readable(fd):
                chunks.append(os.read(fd, 65536))
            elif done.is_set():  # flushed and nothing left in the pipe
                break

    t = threading.Thread(target=reader)
    t.start()
    assert events.flush()
    done.set()
    t.join(GUARD_S)
    assert not t.is_alive()
    text = b"".join(chunks).decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0.05)[0])


def _in_thread(fn: Any) -> None:
    t = threading.Thread(target=fn)
    t.start()
    t.join(GUARD_S)
    assert not t.is_alive(), "emit blocked"


def test_line_format_is_compact_json_with_event_and_ts() -> None:
    with _pipe_events() as (events, r):
        seen: list[dict[str, Any]] = []
        events.listeners.append(seen.append)
        events.emit("sent", peer="c1", id=3, cls="MEDIUM", len=10, crc=7, kind="numerics")
        events.emit("alarm", alarm_id=1, value=None)
        lines = _read_all(r, events)
    assert [e["event"] for e in lines] == ["sent", "alarm"]
    assert lines == seen
    assert lines[0]["peer"] == "c1" and lines[0]["crc"] == 7 and lines[1]["value"] is None
    assert isinstance(lines[0]["ts"], float)


def test_in_memory_stream_gets_the_same_lines() -> None:
    buf = io.StringIO()
    events = Events(json_out=True, stream=buf)
    events.emit("peer", state="restored", n=1)
    record = json.loads(buf.getvalue())
    assert buf.getvalue() == json.dumps(record, separators=(",", ":")) + "\n"
    assert record["event"] == "peer" and record["state"] == "restored"


def test_slow_reader_drops_oldest_non_essential_and_reports_the_count() -> None:
    n_sent, every = 6000, 500
    with _pipe_events() as (events, r):
        assert events._writer is not None
        events._writer.max_queued = 200

        def burst() -> None:  # nobody reads the pipe meanwhile: it fills up
            for i in range(n_sent):
                events.emit("sent", peer="c1", id=i, pad="x" * 60)
                if i % every == 0:
                    events.emit("alarm", alarm_id=i)

        _in_thread(burst)
        dropped = events.dropped
        lines = _read_all(r, events)
    alarms = [e["alarm_id"] for e in lines if e["event"] == "alarm"]
    assert alarms == list(range(0, n_sent, every))  # essential: all kept, in order
    ids = [e["id"] for e in lines if e["event"] == "sent"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert dropped > 0
    assert len(ids) + dropped == n_sent
    assert ids[-1] == n_sent - 1  # the newest are kept
    reports = [e for e in lines if e["event"] == "output-dropped"]
    assert reports and sum(e["count"] for e in reports) == dropped
    assert events.dropped == dropped


def test_a_closed_reader_neither_raises_nor_blocks() -> None:
    r, w = os.pipe()
    stream = os.fdopen(w, "w")
    events = Events(json_out=True, stream=stream)
    os.close(r)
    got: list[dict[str, Any]] = []
    events.listeners.append(got.append)

    def burst() -> None:
        for i in range(3000):
            events.emit("sent", id=i)
            events.emit("alarm", alarm_id=i)

    _in_thread(burst)
    assert events.flush()
    assert len(got) == 6000  # listeners still see everything
    stream.close()


CHILD = """
import sys
from p2pmed.node.output import Events
events = Events(json_out=True)
for i in range(4000):
    events.emit("alarm", alarm_id=i, pad="y" * 100)
print("emitted", file=sys.stderr, flush=True)
"""


def test_queued_lines_are_all_written_on_normal_exit() -> None:
    # the parent reads nothing until the child has emitted everything (over 400 kB, far
    # more than a pipe holds), so most lines are still queued when the child's main ends
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert proc.stderr is not None
    assert proc.stderr.readline() == b"emitted\n"
    out, err = proc.communicate(timeout=GUARD_S)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [e["alarm_id"] for e in lines] == list(range(4000))
