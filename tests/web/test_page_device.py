"""A bedside monitor on the page: a real patient node process with --source hl7-mllp:, the
`p2pmed hl7-sim` process as the monitor, the page as the clinician. Its vitals fill the tiles,
the device panel names the device and lists its other metrics, its alarm is a device alarm."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from signaling.testing import running_server
from tests.web.node_proc import REPO, NodeProc

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_device_on_the_page(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-device-") as d:
        async with running_server(Path(d) / "server") as srv:
            purl = srv.join_url(srv.mint("s-dev", "patient"))
            args = ("--source", "hl7-mllp:127.0.0.1:0", "--media", "none")
            async with NodeProc(purl, str(Path(d) / "patient"), *args) as node:
                e = await node.wait_for(lambda e: e.get("event") == "device-listening")
                ctx = await browser.new_context()
                page = await ctx.new_page()
                await page.goto(srv.join_url(srv.mint("s-dev", "clinician")))
                await page.get_by_role("button", name="Admit patient").click(timeout=10_000)
                await node.wait_for(lambda e: e.get("event") == "handshake", timeout=30)
                sim = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "p2pmed", "hl7-sim", f"127.0.0.1:{e['port']}",
                    "--rate", "4", "--duration", "30", "--alarm-every", "2",
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL, cwd=REPO,
                )  # fmt: skip
                try:
                    await expect(page.locator("#device-id")).to_contain_text(
                        "HL7 v2 MON-1", timeout=20_000
                    )
                    await expect(page.locator("#device-id")).to_contain_text("connected")
                    await expect(page.locator("#device-metrics")).to_contain_text(
                        "MDC_PULS_OXIM_PULS_RATE"
                    )
                    await expect(page.locator("#val-hr")).not_to_have_text("--")
                    await expect(page.locator("#val-temp")).not_to_have_text("--")
                    alarm = page.locator('#alarm-list li[data-source="device"]')
                    await expect(alarm.first).to_contain_text("DEVICE ALARM", timeout=20_000)
                    assert await page.evaluate("window.p2pmed.metrics.codecRejected") == 0
                finally:
                    sim.kill()
                    await sim.wait()
                await ctx.close()
