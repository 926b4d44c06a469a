"""A node's first join refused for a limit or capacity of the moment (too many joins from this
address: a ward's gateways rejoining at once from behind one NAT after a power cut) is tried
again within --join-timeout, as an unreachable server is. Before, it ended the node with exit 4
("join token refused"), which the systemd unit does not restart: the bedside node stayed down.
Started as a service would: stdin /dev/null, no tty, with and without --json."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from signaling.config import Limits
from signaling.testing import running_server
from tests.node.conftest import start_proc

EXIT_FAILED = 1  # p2pmed/node/errors.py: transient, restarted by the unit


@contextlib.asynccontextmanager
async def allowance_used_up(tmp_path: Path, limits: Limits) -> AsyncIterator[tuple[Any, str]]:
    """A server with per-address join `limits` whose allowance b0's join has just used: yields
    it and a join URL for b1; b0 and the server stop on exit."""
    async with running_server(tmp_path / "srv", limits=limits) as srv:
        b0 = await start_proc(srv.join_url(srv.mint("b0", "patient")), "b0")
        try:
            await b0.w.wait_for("joined")
            yield srv, srv.join_url(srv.mint("b1", "patient"))
        finally:
            await b0.stop()


async def test_first_join_refused_for_now_joins_once_the_limit_frees(tmp_path: Path) -> None:
    # one join at once from this address, then one every 2 s: b1's join is refused at first
    async with allowance_used_up(tmp_path, Limits(join_rate=0.5, join_burst=1.0)) as (srv, url):
        b1 = await start_proc(url, "b1")
        try:
            await b1.w.wait_for("joined")
            assert srv.metric("p2pmed_rejected_joins_total", reason="join-rate") >= 1
            assert b1.proc.returncode is None
        finally:
            await b1.stop()


async def test_limit_outlasting_the_join_timeout_is_a_restartable_failure(tmp_path: Path) -> None:
    limits = Limits(join_rate=0.001, join_burst=1.0)  # the next join in about 17 minutes
    async with allowance_used_up(tmp_path, limits) as (srv, url):
        b1 = await start_proc(url, "b1", "--join-timeout", "2")
        err = await b1.w.wait_for("error")
        assert await asyncio.wait_for(b1.proc.wait(), 30) == EXIT_FAILED
        assert "refused the join for now (too-many-joins" in err["message"], err
        assert "not joined within 2 s" in err["message"], err
        # the same without --json: one line on stderr for the journal
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "p2pmed", "node", "--join", url, "--media", "none"),
            *("--join-timeout", "2"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        out, errout = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == EXIT_FAILED, (out, errout)
        assert b"refused the join for now (too-many-joins" in errout, errout
        assert srv.metric("p2pmed_rejected_joins_total", reason="join-rate") >= 2


async def test_join_timeout_names_what_the_last_try_met(tmp_path: Path) -> None:
    # refused for the limit first, then the server is gone: the message must say it cannot be
    # reached, not repeat the old refusal
    b1 = None
    try:
        limits = Limits(join_rate=0.001, join_burst=1.0)
        async with allowance_used_up(tmp_path, limits) as (srv, url):
            b1 = await start_proc(url, "b1", "--join-timeout", "8")
            for _ in range(300):  # bounded: 30 s
                if srv.metric("p2pmed_rejected_joins_total", reason="join-rate") >= 1:
                    break
                await asyncio.sleep(0.1)
            assert srv.metric("p2pmed_rejected_joins_total", reason="join-rate") >= 1
        err = await b1.w.wait_for("error")
        assert await asyncio.wait_for(b1.proc.wait(), 30) == EXIT_FAILED
        assert "cannot reach the signaling server" in err["message"], err
    finally:
        if b1 is not None:
            await b1.stop()
