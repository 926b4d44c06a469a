"""The station page joins every bed at once from one address: a bed frame the server refuses for
too many joins from that address (`too-many-joins`) is loaded again later, waiting longer each
time, until the bed is live (web/js/station.js), as the terminal station does. A join the server
never answers (a loaded or stuck server) is given up after the page's join timeout and tried
again (web/js/signaling.js), as the node's --join-timeout does."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from signaling import closecodes as cc
from signaling.endpoint import Closing
from signaling.limits import PerKeyLimiter
from signaling.testing import running_server
from tests.node.conftest import NodeProc
from tests.web.test_station_page import LIVE, bed, station, until

pytestmark = pytest.mark.asyncio(loop_scope="module")

REFUSED = (
    "() => [...window.p2pmedStation.beds.values()]"
    ".some((b) => b.snap && b.snap.error === 'too-many-joins')"
)


async def three_beds_refused_at_first(
    browser: Browser, tmp_path: Path, rate: float, shown: bool = False
) -> tuple[int, int]:
    """A station of three beds whose address may join twice at once, then `rate` times a
    second: the station and one bed frame get in, the other two frames are refused at first
    (`shown`: a tile shows the refusal first). Returns (the station's frame reloads, joins
    refused for the rate)."""
    with tempfile.TemporaryDirectory(prefix="p2pmed-station-retry-") as d:
        async with running_server(Path(d) / "srv") as srv:
            beds = [
                await bed(srv, "W", f"b{i}", tmp_path, "--scenario", "normal") for i in (1, 2, 3)
            ]
            ctx = None
            try:
                for p in beds:
                    await p.w.wait_for("joined")
                srv.hub.joins.limiter = PerKeyLimiter(rate, 2)
                page, (ctx, errors) = await station(browser, srv, "W")
                if shown:
                    await until(page, REFUSED)
                for b in ("b1", "b2", "b3"):
                    await until(page, LIVE, b)
                # each bed its own E2E session with the station's one endpoint id
                sid = await page.evaluate("window.p2pmedStation.eid")
                for p in beds:
                    assert (await p.w.wait_for("handshake"))["peer"] == sid
                assert not errors, errors
                reloads = await page.evaluate("window.p2pmedStation.metrics.bedRetries")
                return reloads, srv.metric("p2pmed_rejected_joins_total", reason="join-rate")
            finally:
                if ctx is not None:
                    await ctx.close()
                for p in beds:
                    await p.stop()


async def test_station_page_bed_refused_for_a_moment_joins_by_itself(
    browser: Browser, tmp_path: Path
) -> None:
    # a join a second: each refused frame's own client gets in on a later try, within its six
    # (the page showed the refusal and the station reloaded the frame before)
    reloads, refused = await three_beds_refused_at_first(browser, tmp_path, 1.0)
    assert refused >= 1 and reloads == 0


async def test_station_page_loads_a_refused_bed_again(browser: Browser, tmp_path: Path) -> None:
    # a join every 10 s: a frame's own tries are used up first, it shows too-many-joins and the
    # station loads it again, later each time
    reloads, refused = await three_beds_refused_at_first(browser, tmp_path, 0.1, shown=True)
    assert reloads >= 2 and refused >= 2


# (ws, endpoint id) -> True when it dealt with the bed frame's join itself
Intercept = Callable[[Any, str], Awaitable[bool]]


@contextlib.asynccontextmanager
async def bed_frame_joins(
    browser: Browser, tmp_path: Path, intercept: Intercept
) -> AsyncIterator[tuple[Page, NodeProc]]:
    """Bed b1 and a station page of its ward on a real server, whose joins of b1's session by
    another endpoint than b1 (the station's bed frame) go to `intercept` first."""
    with tempfile.TemporaryDirectory(prefix="p2pmed-station-hold-") as d:
        async with running_server(Path(d) / "srv") as srv:
            b1 = await bed(srv, "W", "b1", tmp_path, "--scenario", "normal")
            joins = srv.hub.joins
            answer = joins._join

            async def join(ws: Any, data: dict[str, Any], ip: str) -> Any:
                grant = joins.verifier.verify(data["token"])
                eid = data["endpoint_id"]
                if grant.session == "b1" and eid != "b1" and await intercept(ws, eid):
                    return None
                return await answer(ws, data, ip)

            ctx = None
            try:
                await b1.w.wait_for("joined")
                joins._join = join
                page, (ctx, errors) = await station(browser, srv, "W")
                yield page, b1
                assert not errors, errors
            finally:
                if ctx is not None:
                    await ctx.close()
                await b1.stop()


async def test_station_page_bed_join_never_answered_is_tried_again(
    browser: Browser, tmp_path: Path
) -> None:
    held: list[str] = []

    # the bed frame's first join is read and never answered, until the page closes it
    async def hold_first(ws: Any, eid: str) -> bool:
        if held:
            return False
        held.append(eid)
        await ws.receive()
        raise Closing(cc.TIMEOUT, "held", "held by the test")

    async with bed_frame_joins(browser, tmp_path, hold_first) as (page, b1):
        await until(page, LIVE, "b1")
        assert held == [await page.evaluate("window.p2pmedStation.eid")]
        timeouts = await page.evaluate(
            "window.p2pmedStation.beds.get('b1').frame.contentWindow.p2pmed.app.sig.joinTimeouts"
        )
        assert timeouts == 1
        assert (await b1.w.wait_for("handshake"))["peer"] == held[0]


async def test_station_page_loads_an_unreachable_bed_again(
    browser: Browser, tmp_path: Path
) -> None:
    dropped: list[str] = []

    # the bed frame's first six joins: the connection is closed unanswered, so its own client
    # gives up ("unreachable", web/js/signaling.js) and the station loads it again
    async def drop_six(ws: Any, eid: str) -> bool:
        if len(dropped) >= 6:
            return False
        dropped.append(eid)
        await ws.close()
        return True

    async with bed_frame_joins(browser, tmp_path, drop_six) as (page, _b1):
        await until(
            page, "() => window.p2pmedStation.beds.get('b1')?.snap?.error === 'unreachable'"
        )
        await until(page, LIVE, "b1")
        assert len(dropped) == 6
        assert await page.evaluate("window.p2pmedStation.metrics.bedRetries") == 1
