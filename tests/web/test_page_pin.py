"""The patient's identity key is pinned in IndexedDB per session id on first use; a different key
for the same session is refused with a HIGH technical alarm; "SAS verified" is kept with the pin."""

from __future__ import annotations

import tempfile

import pytest
from playwright.async_api import Browser, Page, expect

from signaling.testing import running_server
from tests.web.relay_patient import RelayPatient

pytestmark = pytest.mark.asyncio(loop_scope="module")

PIN_JS = (
    "async () => { const m = await import('/static/js/pins.js');"
    " return await m.getPin(window.p2pmed.app.sessionId, 'patient'); }"
)


async def _admit(page: Page, patient: RelayPatient) -> None:
    await page.get_by_role("button", name=f"Admit patient {patient.endpoint_id}").click()
    await patient.wait(lambda: patient.established)


async def test_pin_persists_and_a_changed_identity_is_refused(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-pin-") as d:
        async with running_server(d) as srv:
            ctx = await browser.new_context()
            page = await ctx.new_page()
            await page.goto(srv.join_url(srv.mint("s-pin", "clinician")))
            await expect(page.locator("#view-waiting")).to_be_visible(timeout=10_000)
            first = RelayPatient(srv.ws_url, srv.mint("s-pin", "patient"), "pat-one")
            first.leave_on_exit = True
            async with first:
                await _admit(page, first)
                fp = first.identity.fingerprint()
                await expect(page.locator("#peer-fp")).to_have_text(fp)
                pin = await page.evaluate(PIN_JS)
                assert pin["fingerprint"] == fp and pin["verified"] is False
                assert await page.evaluate("window.p2pmed.pin") == "pinned"
                await page.get_by_role("button", name="Mark verified").click()
                await expect(page.locator("#verify-state")).to_have_text("Verified by you")
                assert (await page.evaluate(PIN_JS))["verified"] is True
                # the pin and the verification outlive a reload of the page
                await page.reload()
                await expect(page.locator("#verify-state")).to_have_text(
                    "Verified earlier (same patient node key)", timeout=10_000
                )
                assert await page.evaluate("window.p2pmed.pin") == "match"
            # another patient device (another identity key) joins the same session
            second = RelayPatient(srv.ws_url, srv.mint("s-pin", "patient"), "pat-two")
            async with second:
                await _admit(page, second)
                tech = page.locator('#alarm-list li[data-key="tech:identity-changed"]')
                await expect(tech).to_have_attribute("data-priority", "high", timeout=10_000)
                await expect(tech).to_contain_text(fp)
                await expect(tech).to_contain_text(second.identity.fingerprint())
                await expect(page.locator("#conn-state")).to_have_text(
                    "Refused: patient identity changed"
                )
                await expect(page.locator("#verify-state")).to_contain_text("REFUSED")
                await second.wait(lambda: second.closed is not None)
                assert "identity changed" in str(second.closed)
                # the pin is unchanged
                assert (await page.evaluate(PIN_JS))["fingerprint"] == fp
            await ctx.close()
