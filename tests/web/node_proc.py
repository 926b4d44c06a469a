"""Run a real `p2pmed node --json` process and follow its JSON events (for page tests and bench)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class NodeProc:
    def __init__(self, join_url: str, data_dir: str, *extra: str, commands: bool = False) -> None:
        self.commands = commands
        self.args = [
            sys.executable,
            "-m",
            "p2pmed",
            "node",
            "--join",
            join_url,
            "--json",
            "--data-dir",
            data_dir,
            *extra,
        ]
        self.events: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.stderr = b""

    async def __aenter__(self) -> NodeProc:
        # stdin is /dev/null as under systemd, unless the test sends --json commands through a
        # pipe (e.g. {"cmd": "cut-direct"}): NodeProc(..., commands=True)
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE if self.commands else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    async def __aexit__(self, *exc: object) -> None:
        proc = self.proc
        assert proc is not None
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if proc.stderr is not None:
            self.stderr = await proc.stderr.read()

    def command(self, cmd: dict[str, Any]) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None, "NodeProc(..., commands=True) to send commands"
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    def of(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        seen = 0
        while loop.time() < end:
            for e in self.events[seen:]:
                if pred(e):
                    return e
            seen = len(self.events)
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}")
            await asyncio.sleep(0.05)
        raise TimeoutError("node event not seen in time")
