"""The station page joins every bed at once from one address: a bed frame the server refuses for
too many joins from that address (`too-many-joins`) is loaded again later, waiting longer each
time, until the bed is live (web/js/station.js), as the terminal station does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from playwright.async_api import Browser

from signaling.limits import PerKeyLimiter
from signaling.testing import running_server
from tests.web.test_station_page import LIVE, bed, station, until

pytestmark = pytest.mark.asyncio(loop_scope="module")

REFUSED = (
    "() => [...window.p2pmedStation.beds.values()]"
    ".some((b) => b.snap && b.snap.error === 'too-many-joins')"
)


async def test_station_page_loads_a_refused_bed_again(browser: Browser, tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-station-retry-") as d:
        async with running_server(Path(d) / "srv") as srv:
            beds = [
                await bed(srv, "W", f"b{i}", tmp_path, "--scenario", "normal") for i in (1, 2, 3)
            ]
            ctx = None
            try:
                for p in beds:
                    await p.w.wait_for("joined")
                # from here on this address may join twice at once, then once every 2 s: the
                # station and one bed frame get in, the other two frames are refused at first
                srv.hub.joins.limiter = PerKeyLimiter(0.5, 2)
                page, (ctx, errors) = await station(browser, srv, "W")
                await until(page, REFUSED)
                for b in ("b1", "b2", "b3"):
                    await until(page, LIVE, b)
                assert await page.evaluate("window.p2pmedStation.metrics.bedRetries") >= 2
                # each bed its own E2E session with the station's one endpoint id
                sid = await page.evaluate("window.p2pmedStation.eid")
                for p in beds:
                    assert (await p.w.wait_for("handshake"))["peer"] == sid
                assert srv.metric("p2pmed_rejected_joins_total", reason="join-rate") >= 2
                assert not errors, errors
            finally:
                if ctx is not None:
                    await ctx.close()
                for p in beds:
                    await p.stop()
