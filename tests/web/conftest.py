"""Real headless Chromium driven by Playwright, one browser per module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

BLANK = "<!doctype html><meta charset=utf-8><title>p2pmed web test</title><body></body>"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    # Playwright gives every launch a fresh temporary user-data-dir.
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def static_server() -> AsyncIterator[str]:
    """Serves web/ at /static/ on loopback (a secure context) and a blank page at /blank."""

    async def blank(_: web.Request) -> web.Response:
        return web.Response(text=BLANK, content_type="text/html")

    app = web.Application()
    app.router.add_get("/blank", blank)
    app.router.add_static("/static/", WEB_DIR)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def blank_page(browser: Browser, static_server: str) -> AsyncIterator[Page]:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{static_server}/blank")
    yield page
    await page.close()
    assert not errors, errors


MODULES = ("crc32", "frame", "crypto", "identity", "handshake", "session", "vitals", "signaling")


async def js(page: Page, body: str, arg: object = None) -> object:
    """Run `body` as an async function(arg) with the page's ES modules as M.frame, M.crypto, ..."""
    imports = ", ".join(f"{m}: await import('/static/js/{m}.js')" for m in MODULES)
    script = (
        "async (arg) => { const M = {" + imports + "};"
        " const hex = M.frame.toHex, unhex = M.frame.fromHex;\n" + body + "\n}"
    )
    return await page.evaluate(script, arg)
