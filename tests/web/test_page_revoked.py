"""A revoked patient ends the page's session on every path (protocol.md 8.3.6): the page shows
the session ended, refuses the endpoint's frames, and confirms with `revocation-done`, so the
server audits `revoke-complete` instead of `revoke-timeout`."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from signaling.testing import running_server
from tests.web.relay_patient import RelayPatient

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _jti(token: str) -> str:
    body = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["jti"])


def _audit(data_dir: str) -> list[dict]:  # type: ignore[type-arg]
    path = Path(data_dir) / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


async def test_revoked_patient_ends_the_page_session_and_is_confirmed(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-revoked-") as d:
        async with running_server(d, revoke_timeout=30.0) as srv:
            ctx = await browser.new_context()
            page = await ctx.new_page()
            await page.goto(srv.join_url(srv.mint("s-rev", "clinician")))
            await expect(page.locator("#view-waiting")).to_be_visible(timeout=10_000)
            token = srv.mint("s-rev", "patient")
            patient = RelayPatient(srv.ws_url, token, "pat-rev")
            async with patient:
                await page.get_by_role("button", name="Admit patient pat-rev").click()
                await patient.wait(lambda: patient.established)
                srv.revoke(_jti(token))
                await expect(page.locator("#conn-state")).to_have_text(
                    "Session ended — the patient's access was revoked", timeout=10_000
                )
                done: list[dict] = []  # type: ignore[type-arg]
                for _ in range(200):  # bounded: 10 s
                    done = [e for e in _audit(d) if e.get("event") == "revoke-complete"]
                    if done:
                        break
                    await asyncio.sleep(0.05)
                assert done and done[0]["endpoint_id"] == "pat-rev"
                assert not [e for e in _audit(d) if e.get("event") == "revoke-timeout"]
                assert await page.evaluate("window.p2pmed.state") != "live"
            await ctx.close()
