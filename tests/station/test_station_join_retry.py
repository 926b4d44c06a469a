"""The terminal station joins a bed again when the server refused the join for a limit of the
moment (too many joins from this address: a station joins every bed at once, as the 16-bed
benchmark does) or did not answer it within the join timeout (a loaded server: at 64 beds
one bed was left out for good), instead of leaving that bed out."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from signaling.config import Limits
from signaling.testing import running_server
from tests.node.conftest import start_proc


async def test_refused_bed_join_is_tried_again(tmp_path: Path) -> None:
    # two joins at once, then one every 5 s: the patient's and the station's own join pass,
    # the station's join of the bed is refused for longer than its 2 s join timeout at first
    limits = Limits(join_rate=0.2, join_burst=2.0)
    async with running_server(tmp_path / "srv", limits=limits) as srv:
        bed_url = srv.join_url(srv.mint("b1", "patient", ward="A"))
        b1 = await start_proc(bed_url, "b1", "--data-dir", str(tmp_path / "b1"))
        st = None
        try:
            await b1.w.wait_for("joined")
            token = srv.mint("ward.A", "station", ward="A")
            st = await start_proc(
                srv.join_url(token),
                "station",
                "--data-dir",
                str(tmp_path / "st"),
                "--join-timeout",
                "2",
            )
            refused = await st.w.wait_for("error", code="bed-join", bed="b1")
            assert "too-many-joins" in refused["message"] and refused["retry_s"] == 1.0
            await st.w.wait_for("message", bed="b1", kind="numerics")
        finally:
            for p in (st, b1):
                if p is not None:
                    await p.stop()


class Blackhole:
    """A TCP relay in front of the server that lets the first `passed` connections through,
    then accepts the next `hold` and never answers them (what a client sees of an overloaded
    server), then lets every later one through again."""

    def __init__(self, upstream_port: int, passed: int, hold: int) -> None:
        self.upstream_port, self.passed, self.hold = upstream_port, passed, hold
        self.seen = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.seen += 1
        if self.passed < self.seen <= self.passed + self.hold:
            with contextlib.suppress(Exception):
                await reader.read()  # until the client gives up
            writer.close()
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        for task in (pipe(reader, up_w), pipe(up_r, writer)):
            t = asyncio.create_task(task)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()


async def test_unanswered_bed_join_is_tried_again(tmp_path: Path) -> None:
    async with running_server(tmp_path / "srv") as srv:
        bed_url = srv.join_url(srv.mint("b1", "patient", ward="A"))
        b1 = await start_proc(bed_url, "b1", "--data-dir", str(tmp_path / "b1"))
        hole = Blackhole(srv.config.port, passed=1, hold=1)  # the station's own, the bed's
        port = await hole.start()
        st = None
        try:
            await b1.w.wait_for("joined")
            url = srv.join_url(srv.mint("ward.A", "station", ward="A"))
            url = url.replace(f":{srv.config.port}/", f":{port}/", 1)
            assert f":{port}/" in url
            st = await start_proc(
                url, "station", "--data-dir", str(tmp_path / "st"), "--join-timeout", "2"
            )
            lost = await st.w.wait_for("error", code="bed-join", bed="b1")
            assert "not joined within 2 s" in lost["message"] and lost["retry_s"] == 1.0
            assert hole.seen >= 2
            await st.w.wait_for("message", bed="b1", kind="numerics")
        finally:
            for p in (st, b1):
                if p is not None:
                    await p.stop()
            await hole.close()
