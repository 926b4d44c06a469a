"""SIGKILL a real process running two Sessions with SQLite stores, restart it, check the result."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from p2pmed.store.sqlite import SessionStore
from tests.core.crash_driver import payload

ROOT = Path(__file__).resolve().parents[2]
N_A, N_B = 500, 150


def _start(workdir: Path, seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.core.crash_driver",
            str(workdir),
            str(seed),
            str(N_A),
            str(N_B),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _expected_id(i: int) -> int:
    return ((i // 5 + 1) << 3) | (i % 5)


def test_sigkill_mid_stream_and_restart_loses_and_repeats_nothing(tmp_path: Path) -> None:
    rng = random.Random(2026)
    kills = 0
    starts: list[str] = []
    for run in range(6):
        proc = _start(tmp_path, 100 + run)
        assert proc.stdout is not None
        target = rng.randrange(20, 120) * (run + 1)
        killed = False
        for line in proc.stdout:
            if line.startswith("START"):
                starts.append(line)
            if line.startswith("PROGRESS") and sum(map(int, line.split()[1:])) >= target:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            if line.startswith(("DONE", "TIMEOUT")):
                break
        proc.wait(timeout=60)
        proc.stdout.close()
        if killed:
            assert proc.returncode == -signal.SIGKILL
            kills += 1
    assert kills >= 3
    resumed = [int(x.split("sent_a=")[1].split()[0]) for x in starts if "fresh=False" in x]
    assert sum(1 for n in resumed if 0 < n < N_A) >= 2  # restarts really happened mid-stream
    proc = _start(tmp_path, 999)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-500:]
    assert "DONE" in out

    for receiver, sender, n in (("b", "a", N_A), ("a", "b", N_B)):
        store = SessionStore(tmp_path / f"{receiver}.db", key=receiver)
        inbox = store.inbox(include_done=True)
        ids = [m.msg_id for m in inbox]
        assert len(ids) == len(set(ids)), "delivered twice"
        assert sorted(ids) == sorted(_expected_id(i) for i in range(n)), "lost messages"
        for m in inbox:
            i = ((m.msg_id >> 3) - 1) * 5 + (m.msg_id & 7)
            assert (int(payload(sender, i)[0]), payload(sender, i)[1]) == (m.cls, m.data)
        per_class = collections.defaultdict(list)
        for m in inbox:
            per_class[m.cls].append(m.msg_id)
        assert all(v == sorted(v) for v in per_class.values()), "out of order"
        snap = SessionStore(tmp_path / f"{sender}.db", key=sender).load()
        assert snap is not None and not snap.frames and not snap.messages  # all acked

    seen: dict[tuple[str, int, int], int] = {}
    for line in (tmp_path / "wire.log").read_text().splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[1] == "0":
            continue  # a line cut by the kill, or a plaintext handshake frame
        key = (parts[0], int(parts[1]), int(parts[2]))
        crc = int(parts[3])
        assert seen.setdefault(key, crc) == crc, f"nonce reused: {key}"
    assert len(seen) > 1000
