"""Helpers: a real signaling server on loopback, real nodes in-process or as subprocesses,
and a watcher that waits for their --json events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from p2pmed.node import Events, Node, NodeConfig
from signaling.testing import RunningServer, running_server

ROOT = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


class Watcher:
    """Collects events; wait_for() returns the first (new) event matching a predicate."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def add(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, event: str, **match: Any) -> list[Event]:
        return [
            e
            for e in self.events
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())
        ]

    async def wait_for(
        self,
        pred: Callable[[Event], bool] | str,
        *,
        after: int = 0,
        timeout: float = 60.0,
        **match: Any,
    ) -> Event:
        """Safety net only (tests never assert on time): fail after `timeout` seconds."""
        if isinstance(pred, str):
            name = pred

            def pred(e):
                return e["event"] == name and all(e.get(k) == v for k, v in match.items())

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        i = after
        while True:
            while i < len(self.events):
                if pred(self.events[i]):
                    return self.events[i]
                i += 1
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                tail = "\n".join(json.dumps(e) for e in self.events[-25:])
                raise AssertionError(f"{self.name}: no matching event; last events:\n{tail}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def wait_count(self, event: str, n: int, timeout: float = 60.0, **match: Any) -> None:
        await self.wait_for(lambda e: len(self.of(event, **match)) >= n, timeout=timeout)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "server") as srv:
        yield srv


class InProcNode:
    def __init__(self, node: Node, watcher: Watcher) -> None:
        self.node = node
        self.w = watcher

    async def stop(self) -> None:
        await self.node.close()


async def start_inproc(url: str, name: str, **kw: Any) -> InProcNode:
    kw.setdefault("media", "none")
    cfg = NodeConfig.build(url, **kw)
    w = Watcher(name)
    events = Events(json_out=False)
    events.listeners.append(w.add)
    node = Node(cfg, events)
    await node.start()
    return InProcNode(node, w)


class NodeProc:
    """`python -m p2pmed node --join URL --json ...` as a subprocess."""

    def __init__(self, proc: asyncio.subprocess.Process, watcher: Watcher) -> None:
        self.proc = proc
        self.w = watcher
        self.stderr = b""
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            try:
                self.w.add(json.loads(line))
            except ValueError:
                self.w.add({"event": "non-json", "line": line.decode(errors="replace")})

    def command(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None, "start_proc(..., commands=True) to send commands"
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader
        assert self.proc.stderr is not None
        self.stderr = await self.proc.stderr.read()
        return self.proc.returncode or 0


async def start_proc(url: str, name: str, *args: str, commands: bool = False) -> NodeProc:
    """stdin is /dev/null, as under systemd, nohup or cron, unless the test sends commands."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if "--media" not in args:
        args = (*args, "--media", "none")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pmed",
        "node",
        "--join",
        url,
        "--json",
        *args,
        stdin=asyncio.subprocess.PIPE if commands else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
        env=env,
    )
    return NodeProc(proc, Watcher(name))


def check_stream(
    sent: list[Event], received: list[Event], unlogged_below: int | dict[str, int] = 0
) -> None:
    """Received is exactly the sent sequence (or a prefix of it) per class: each message
    once, in order, bit-exact (length and CRC-32 of the bytes), with no sample gaps.

    One exception, by design: a clinician killed between showing a message and recording
    that it did shows it again after its restart, flagged "replayed" (at-least-once across
    the application boundary; never lost). Only the immediately preceding message may repeat.

    unlogged_below: a sender killed with SIGKILL may have sent messages whose "sent" lines were
    still queued in its output writer, so they never reach its log. Received messages with an
    id below this that are missing from `sent` are then allowed (in order, once; their samples
    are still checked for continuity); every logged message must still arrive, bit-exact.
    Message ids are numbered per class, so a restarted sender's bound is given per class
    (a dict by class name; a class missing from it has no bound).
    """
    kept: list[Event] = []
    for e in received:
        if (
            e.get("replayed")
            and kept
            and any(k["id"] == e["id"] and k["cls"] == e["cls"] for k in kept[-8:])
        ):
            continue
        kept.append(e)
    received = kept
    by_cls_sent: dict[str, list[tuple[int, int, int]]] = {}
    by_cls_recv: dict[str, list[tuple[int, int, int]]] = {}
    for e in sent:
        by_cls_sent.setdefault(e["cls"], []).append((e["id"], e["len"], e["crc"]))
    for e in received:
        by_cls_recv.setdefault(e["cls"], []).append((e["id"], e["len"], e["crc"]))
    for cls, got in by_cls_recv.items():
        want = by_cls_sent.get(cls, [])
        assert len(got) == len(set(got)), f"{cls}: a message was delivered twice"
        logged = {mid for mid, _, _ in want}
        unlogged = [g for g in got if g[0] not in logged]
        below = (
            unlogged_below.get(cls, 1 << 62) if isinstance(unlogged_below, dict) else unlogged_below
        )
        assert all(mid < below for mid, _, _ in unlogged), f"{cls}: not sent: {unlogged}"
        ids = [mid for mid, _, _ in got]
        assert ids == sorted(ids), f"{cls}: delivered out of order"
        got = [g for g in got if g[0] in logged]
        assert got == want[: len(got)], f"{cls}: received differs from what was sent"
    seqs: dict[str, int] = {}
    for e in received:
        if e.get("kind") == "waveform":
            if e["signal"] in seqs:
                assert e["first_seq"] == seqs[e["signal"]], "gap or repeat in samples"
            seqs[e["signal"]] = e["first_seq"] + e["n"]


async def hl7_send(port: int, control: str, t: float, timeout: float = 60.0) -> str:
    """One ORU^R01 (control id `control`, OBX times `t`) on a connection of its own, as a
    monitor sends it; the ACK code."""
    from hl7.mllp import open_hl7_connection  # type: ignore[import-untyped]

    from p2pmed.devices import hl7sim

    reader, writer = await open_hl7_connection("127.0.0.1", port)
    try:
        stats = hl7sim.Stats()
        text = hl7sim.oru_r01(control, t, patient="PID-7", device="MON-1")
        await asyncio.wait_for(hl7sim.send_one(reader, writer, text, stats), timeout)
        return next(iter(stats.acks))
    finally:
        writer.close()
