"""The page against the real signaling server: token errors, insecure context, waiting room."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, Route, expect

from signaling.testing import RunningServer, running_server
from tests.web.conftest import WEB_DIR

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[RunningServer]:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-sig-") as d:
        async with running_server(d) as srv:
            yield srv


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    ctx = await browser.new_context()
    p = await ctx.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    await ctx.close()
    assert not errors, errors


async def _error_code(page: Page) -> str:
    view = page.locator("#view-error")
    await expect(view).to_be_visible(timeout=10_000)
    await expect(page.locator("#main")).to_be_hidden()
    return (await page.locator("#error-code").text_content()) or ""


async def test_garbage_token_shows_error_view(page: Page, server: RunningServer) -> None:
    await page.goto(server.join_url("not-a-token"))
    assert await _error_code(page) == "token-malformed"
    await expect(page.locator("#error-message")).to_contain_text("token")
    await expect(page.locator("#conn-state")).to_have_text("Not connected")


async def test_expired_token_shows_expiry(page: Page, server: RunningServer) -> None:
    token = server.mint("s-exp", "clinician", ttl=60, now=time.time() - 3600)
    await page.goto(server.join_url(token))
    assert await _error_code(page) == "token-expired"
    await expect(page.locator("#error-hint")).to_contain_text("expired")


async def test_token_of_another_session_is_refused(page: Page, server: RunningServer) -> None:
    token = server.mint("s-one", "clinician")
    await page.goto(server.join_url(token) + "&session=s-two")
    assert await _error_code(page) == "wrong-session"


async def test_missing_token_shows_error(page: Page, server: RunningServer) -> None:
    await page.goto(f"{server.url}/join")
    assert await _error_code(page) == "token-missing"


async def test_insecure_context_says_so(page: Page, server: RunningServer) -> None:
    # Serve the real files under a plain-http, non-local origin: not a secure context.
    async def fulfil(route: Route) -> None:
        path = route.request.url.split("insecure.test", 1)[1].split("#")[0]
        if path == "/join":
            body = (WEB_DIR / "index.html").read_bytes()
            await route.fulfill(body=body, content_type="text/html")
        elif path.startswith("/static/"):
            f = WEB_DIR / path.removeprefix("/static/")
            ctype = "text/javascript" if f.suffix == ".js" else "text/css"
            await route.fulfill(body=f.read_bytes(), content_type=ctype)
        else:
            await route.fulfill(status=404, body=b"")

    await page.route("http://insecure.test/**", fulfil)
    await page.goto("http://insecure.test/join#token=x")
    assert await page.evaluate("window.isSecureContext") is False
    assert await _error_code(page) == "insecure-context"
    await expect(page.locator("#error-hint")).to_contain_text("HTTPS")


async def test_waiting_room_admits_patient(page: Page, server: RunningServer) -> None:
    session = "s-wait"
    await page.goto(server.join_url(server.mint(session, "clinician")))
    await expect(page.locator("#view-waiting")).to_be_visible(timeout=10_000)
    # nobody yet: header and waiting room agree
    await expect(page.locator("#conn-state")).to_have_text("Waiting for the patient to arrive")
    await expect(page.locator("#waiting-text")).to_contain_text("has not arrived yet")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)
        await ws.send_json(
            {"type": "join", "token": server.mint(session, "patient"), "endpoint_id": "pat-w"}
        )
        joined = await ws.receive_json(timeout=5)
        assert joined["type"] == "joined" and joined["waiting"] is True
        admit = page.get_by_role("button", name="Admit patient pat-w")
        await expect(admit).to_be_visible(timeout=5_000)
        # somebody waiting: both say so, and the patient has no label yet
        await expect(page.locator("#conn-state")).to_have_text(
            "A patient is waiting to be admitted"
        )
        await expect(page.locator("#waiting-text")).to_have_text(
            "A patient is waiting. Admit to start the session."
        )
        await expect(page.locator("#waiting-list li")).to_contain_text("Unidentified patient")
        await admit.focus()
        await page.keyboard.press("Enter")  # keyboard operable
        got = []
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            msg = await ws.receive_json(timeout=5)
            got.append(msg["type"])
            if msg["type"] == "peer-joined":
                assert msg["role"] == "clinician"
                break
        assert "peer-joined" in got
        await expect(page.locator("#main")).to_be_visible(timeout=5_000)
        # the Admit button is gone: focus is on the monitor, not on <body>
        assert await page.evaluate("document.activeElement.id") == "main"
        await expect(page.locator("#patient-label")).to_have_text("Unidentified patient")
        await ws.close()


async def test_same_link_in_a_second_tab_says_what_happened(
    page: Page, server: RunningServer
) -> None:
    url = server.join_url(server.mint("s-twice", "clinician"))
    await page.goto(url)
    await expect(page.locator("#view-waiting")).to_be_visible(timeout=10_000)
    second = await page.context.new_page()
    await second.goto(url)
    assert await _error_code(second) == "token-in-use"
    await expect(second.locator("#error-message")).to_have_text(
        "This join link is already open in another tab or window, so it cannot be used here too."
    )
    await expect(second.locator("#error-hint")).to_contain_text("Switch to the tab or window")
    await expect(second.locator("#error-hint")).to_contain_text("new link")
    await expect(second.locator("#error-detail")).to_have_text(
        "Server said: token already used by another endpoint"
    )
    await second.close()
    # the first tab is unaffected
    await expect(page.locator("#view-waiting")).to_be_visible()


async def _joins(page: Page, n: int) -> None:
    """Wait (bounded: a hang guard, not a timing assert) until the page joined n times."""
    for _ in range(300):
        if await page.evaluate("window.p2pmed.metrics.signalingJoins") >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the page did not join {n} times")


async def test_page_rejoins_after_its_join_token_expired(page: Page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The join token expires 2 s after the page joined; then the server restarts. The page
    rejoins with the resume token the server gave it, instead of showing token-expired."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "sig"
    async with running_server(data, port=port, clock_leeway=0.0) as srv:
        soon = time.time() - 60.0 + 2.0
        await page.goto(srv.join_url(srv.mint("s-resume", "clinician", ttl=60.0, now=soon)))
        await _joins(page, 1)
        stored = await page.evaluate(
            "Object.keys(sessionStorage).filter((k) => k.startsWith('p2pmed-resume:')).length"
        )
        assert stored == 1
        while time.time() < soon + 60.0 + 0.5:
            await asyncio.sleep(0.1)
    async with running_server(data, port=port, clock_leeway=0.0):
        await _joins(page, 2)
    assert await page.evaluate("window.p2pmed.state") != "error"
    await expect(page.locator("#view-error")).to_be_hidden()
