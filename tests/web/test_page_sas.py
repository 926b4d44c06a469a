"""The SAS comparison and the monitor on a phone-sized screen (#17.11, #17.13): "Codes don't match"
ends the session with a HIGH technical alarm and records the key as failed (refused after a reload
too); a key verified earlier leaves no "Mark verified" to press after a reload; fingerprints wrap
only between groups; at 390 px the ECG keeps a readable height and its labels sit off the trace."""

from __future__ import annotations

import asyncio
import math
import tempfile
import time

import pytest
from playwright.async_api import Browser, expect

from p2pmed.core.frame import MessageClass
from p2pmed.vitals import codec
from signaling.testing import running_server
from tests.web.relay_patient import RelayPatient

pytestmark = pytest.mark.asyncio(loop_scope="module")

PIN_JS = (
    "async () => { const m = await import('/static/js/pins.js');"
    " return await m.getPin(window.p2pmed.app.sessionId, 'patient'); }"
)
BOX = "(el) => { const r = el.getBoundingClientRect(); return [r.top, r.bottom, r.height]; }"
GROUP_LINES = "(el) => [...el.querySelectorAll('.grp')].map((g) => g.getClientRects().length)"


async def _feed(p: RelayPatient) -> None:
    seq = pseq = n = 0
    while True:
        t_us = int(time.time() * 1e6)
        ecg = tuple(round(200 * math.sin(2 * math.pi * (seq + i) / 250)) for i in range(25))
        wave = codec.Waveform("II", 250, t_us, seq, 0.005, "mV", ecg)
        p.send(MessageClass.MEDIUM, codec.encode(wave))
        pleth = tuple(round(1000 * math.sin((pseq + i) / 20)) for i in range(12))
        wave = codec.Waveform("PLETH", 125, t_us, pseq, 0.001, "1", pleth)
        p.send(MessageClass.MEDIUM, codec.encode(wave))
        if n % 10 == 0:
            p.send(MessageClass.MEDIUM, codec.encode(codec.Numerics(t_us, "pat-1", hr_x10=720)))
        seq, pseq, n = seq + 25, pseq + 12, n + 1
        await asyncio.sleep(0.1)


async def test_phone_layout_and_verified_key_after_reload(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-sas-") as d:
        async with running_server(d) as srv:
            ctx = await browser.new_context(viewport={"width": 390, "height": 844})
            page = await ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(srv.join_url(srv.mint("s-sas1", "clinician")))
            async with RelayPatient(srv.ws_url, srv.mint("s-sas1", "patient")) as patient:
                await page.get_by_role("button", name="Admit patient pat-sim").click()
                await patient.wait(lambda: patient.established)
                feeder = asyncio.create_task(_feed(patient))
                try:
                    await expect(page.locator("#ecg-status")).to_have_text("250 Hz", timeout=10_000)
                    for trace, least in (("ecg", 120), ("pleth", 64)):
                        top, _, height = await page.locator(f"#{trace}").evaluate(BOX)
                        assert height >= least, (trace, height)
                        for label in (f"#{trace}-label", f"#{trace}-status"):
                            _, label_bottom, _ = await page.locator(label).evaluate(BOX)
                            assert label_bottom <= top + 0.5, (label, label_bottom, top)
                        size = await page.locator(f"#{trace}").evaluate(
                            "(c) => [c.width, c.height, c.clientWidth, c.clientHeight]"
                        )
                        assert size[0] == size[2] and size[1] == size[3], size  # not stretched
                    fp = patient.identity.fingerprint()
                    peer_fp = page.locator("#peer-fp")
                    await expect(peer_fp).to_have_text(fp)
                    assert set(await peer_fp.evaluate(GROUP_LINES)) == {1}
                    assert set(await page.locator("#my-fp").evaluate(GROUP_LINES)) == {1}
                    await page.get_by_role("button", name="Mark verified").click()
                    await expect(page.locator("#verify-state")).to_have_text("Verified by you")
                    await page.reload()
                    await expect(page.locator("#verify-state")).to_have_text(
                        "Verified earlier (same patient node key)", timeout=10_000
                    )
                    for button in ("#btn-verify", "#btn-mismatch"):
                        await expect(page.locator(button)).to_be_disabled()
                        await expect(page.locator(button)).to_be_hidden()
                finally:
                    feeder.cancel()
            await ctx.close()
            assert not errors, errors


async def test_codes_dont_match_ends_the_session_and_refuses_the_key(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-sas-") as d:
        async with running_server(d) as srv:
            ctx = await browser.new_context()
            page = await ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(srv.join_url(srv.mint("s-sas2", "clinician")))
            async with RelayPatient(srv.ws_url, srv.mint("s-sas2", "patient")) as patient:
                await page.get_by_role("button", name="Admit patient pat-sim").click()
                await patient.wait(lambda: patient.established)
                fp = patient.identity.fingerprint()
                await expect(page.locator("#peer-fp")).to_have_text(fp)
                await page.get_by_role("button", name="Codes don't match").click()
                await patient.wait(lambda: patient.closed is not None)
                assert "sas-mismatch" in str(patient.closed)
                tech = page.locator('#alarm-list li[data-key="tech:sas-mismatch"]')
                await expect(tech).to_have_attribute("data-priority", "high")
                conn = page.locator("#conn-state")
                await expect(conn).to_have_text("Session closed: verification codes did not match")
                state = page.locator("#verify-state")
                await expect(state).to_contain_text("Codes did NOT match")
                await expect(page.locator("#btn-verify")).to_be_disabled()
                pin = await page.evaluate(PIN_JS)
                assert pin["fingerprint"] == fp and pin["verified"] is False and pin["mismatchAt"]
                # a reload does not bring the refused key back
                await page.reload()
                await expect(state).to_contain_text("Codes did NOT match", timeout=10_000)
                await expect(tech).to_have_attribute("data-priority", "high")
                await expect(conn).to_have_text("Session closed: verification codes did not match")
                assert await page.evaluate("window.p2pmed.state") == "error"
            await ctx.close()
            assert not errors, errors
