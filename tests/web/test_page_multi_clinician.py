"""Several clinicians on one patient (#17.15): a terminal clinician (`p2pmed node --json`, stdin
/dev/null) joined first, then the page, then a second terminal clinician. Every one of them
completes its handshake, sees every alarm, and sees every acknowledgement with who made it."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from signaling.testing import running_server
from tests.web.node_proc import NodeProc

ENDPOINT_ID_JS = "sessionStorage.getItem('p2pmed-endpoint')"

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _alarm(aid: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "alarm" and e.get("alarm_id") == aid


async def test_page_and_terminal_clinicians_share_alarms_and_acks(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-multi-") as d:
        async with running_server(Path(d) / "server") as srv:
            url = lambda role: srv.join_url(srv.mint("s-multi", role))  # noqa: E731
            async with (
                NodeProc(url("patient"), f"{d}/patient", "--scenario", "alarm") as patient,
                NodeProc(url("clinician"), f"{d}/c1") as c1,  # stdin /dev/null, as under systemd
            ):
                await c1.wait_for(lambda e: e.get("event") == "handshake", timeout=30)
                for aid in (1, 2):  # alarm scenario: 1 = hr-high (MEDIUM), 2 = hr-very-high (HIGH)
                    await c1.wait_for(_alarm(aid), timeout=30)
                ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
                page = await ctx.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(url("clinician"))  # the patient is already admitted (by c1)
                # the page picks its endpoint id once its identity key is loaded (IndexedDB),
                # which can be after the load event that goto waits for. Polled with
                # evaluate: wait_for_function compiles its predicate with new Function, which
                # the page's CSP (no unsafe-eval) refuses.
                async with asyncio.timeout(30):
                    while not (eid := await page.evaluate(ENDPOINT_ID_JS)):
                        await asyncio.sleep(0.05)
                await patient.wait_for(
                    lambda e: e.get("event") == "handshake" and e.get("peer") == eid, timeout=30
                )
                alarms = page.locator("#alarm-list li")
                high = alarms.filter(has_text="hr-very-high")
                medium = alarms.filter(has_text="hr-high (")
                await expect(high).to_have_count(1, timeout=10_000)
                await expect(medium).to_have_count(1)
                async with NodeProc(url("clinician"), f"{d}/c2", commands=True) as c2:
                    await c2.wait_for(lambda e: e.get("event") == "handshake", timeout=30)
                    for aid in (1, 2):
                        await c2.wait_for(_alarm(aid), timeout=30)
                    # the second terminal clinician acknowledges the HIGH alarm
                    c2.command({"cmd": "ack", "alarm_id": 2})
                    c2_id = (c2.of("joined")[0])["endpoint_id"]
                    await patient.wait_for(
                        lambda e: e.get("event") == "alarm-ack" and e.get("by") == c2_id
                    )
                    await c1.wait_for(
                        lambda e: (
                            e.get("event") == "alarm-acked-elsewhere"
                            and e.get("alarm_id") == 2
                            and e.get("by") == c2_id
                        )
                    )
                    await expect(high).to_have_attribute("data-ack", "delivered", timeout=10_000)
                    await expect(high.locator(".ack-state")).to_contain_text(
                        f"acknowledged by another clinician ({c2_id})"
                    )
                    await expect(high.get_by_role("button")).to_be_disabled()
                    # the HIGH alarm no longer sounds or flashes here; the MEDIUM one still does
                    assert await page.evaluate("window.p2pmed.app.alarms.signalling()") == "medium"
                    # the page acknowledges the MEDIUM alarm: both terminals hear who did
                    await medium.get_by_role("button", name="Acknowledge").click()
                    await expect(medium.locator(".ack-state")).to_have_text(
                        "✓ acknowledged by you — delivered to patient node", timeout=10_000
                    )
                    for node in (c1, c2):
                        await node.wait_for(
                            lambda e: (
                                e.get("event") == "alarm-acked-elsewhere"
                                and e.get("alarm_id") == 1
                                and e.get("by") == eid
                            )
                        )
                    assert await page.evaluate("window.p2pmed.app.alarms.signalling()") is None
                await ctx.close()
                assert not errors, errors
            assert c1.proc is not None and c1.proc.returncode in (0, -15), c1.stderr[-2000:]
