"""axe-core (WCAG 2.x A/AA rules) on the page in its main states: waiting room, live monitor with
alarms of every priority, connection lost, session ended, error view. Needs `npm install` in
tests/web/axe. With P2PMED_SCREENSHOT_DIR set, a screenshot of each state is saved there
(docs/screenshots/ holds the ones in the repo)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from p2pmed.core.frame import MessageClass
from p2pmed.vitals import codec
from signaling.testing import running_server
from tests.web.relay_patient import RelayPatient

pytestmark = pytest.mark.asyncio(loop_scope="module")

AXE = Path(__file__).resolve().parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"


async def shot(page: Page, name: str) -> None:
    out = os.environ.get("P2PMED_SCREENSHOT_DIR")
    if out:
        await page.screenshot(path=str(Path(out) / f"page-{name}.png"))


async def violations(page: Page) -> list[dict[str, Any]]:
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE))
    found = await page.evaluate(
        "async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21aa']}))"
        ".violations.map((v) => ({id: v.id, impact: v.impact,"
        " nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5)}))"
    )
    return list(found)


def _alarm(aid: int, prio: codec.Priority, cond: str) -> bytes:
    a = codec.Alarm(
        aid,
        prio,
        codec.AlarmState.ACTIVE,
        codec.AlarmCategory.PHYSIOLOGICAL,
        int(time.time() * 1e6),
        None,
        cond,
        "pat-1",
    )
    return codec.encode(a)


async def test_no_wcag_violations_in_the_main_states(browser: Browser) -> None:
    assert AXE.exists(), "run `npm install` in tests/web/axe"
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-a11y-") as d:
        async with running_server(d) as srv:
            # the page's CSP allows only its own scripts; axe is injected by the test
            ctx = await browser.new_context(bypass_csp=True)
            page = await ctx.new_page()
            await page.goto(srv.join_url(srv.mint("s-a11y", "clinician")))
            await expect(page.locator("#view-waiting")).to_be_visible(timeout=10_000)
            assert await violations(page) == []
            await shot(page, "waiting-empty")
            patient = RelayPatient(srv.ws_url, srv.mint("s-a11y", "patient"))
            patient.leave_on_exit = True
            async with patient:
                await expect(page.get_by_role("button", name="Admit patient")).to_be_visible()
                assert await violations(page) == []
                await shot(page, "waiting")
                await page.get_by_role("button", name="Admit patient pat-sim").click()
                await patient.wait(lambda: patient.established)
                for aid, prio, cond in (
                    (1, codec.Priority.HIGH, "hr-high"),
                    (2, codec.Priority.MEDIUM, "spo2-low"),
                    (3, codec.Priority.LOW, "temp-high"),
                ):
                    patient.send(MessageClass.CRITICAL, _alarm(aid, prio, cond))
                await expect(page.locator("#alarm-list li")).to_have_count(3, timeout=5_000)
                assert await violations(page) == []
                await shot(page, "live-alarms")
                patient.paused = True  # the link goes quiet: the page must say so
                await expect(page.locator("#conn-state")).to_have_text(
                    "CONNECTION LOST", timeout=15_000
                )
                assert await violations(page) == []
                await shot(page, "connection-lost")
                patient.paused = False
            await expect(page.locator("#ended-banner")).to_be_visible(timeout=5_000)
            assert await violations(page) == []
            await shot(page, "ended")
            second = await ctx.new_page()
            await second.goto(f"{srv.url}/join#token=garbage")
            await expect(second.locator("#view-error")).to_be_visible(timeout=10_000)
            assert await violations(second) == []
            await shot(second, "error")
            await ctx.close()
