"""The signaling server restarts on its data dir while the page and a patient node are in a session
(#17.5): a real server process, stopped and started again on the same port and data dir. The
restarted server has forgotten who was admitted and the patient node comes back after the page.
The page sends nothing to a patient the server does not list as admitted (no unknown-peer or
not-admitted refusals, no too-many-errors close, no reconnect loop), admits its own patient again
and the same end-to-end session continues."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from signaling.config import Config
from signaling.testing import (
    ServerProcess,
    _wait_ready,
    free_port,
    running_server,
    start_process,
)
from signaling.tokens import mint, token_key
from tests.web.node_proc import NodeProc

pytestmark = pytest.mark.asyncio(loop_scope="module")


@asynccontextmanager
async def _server(data: Path, port: int) -> AsyncIterator[ServerProcess]:
    proc, log, port = await start_process(data, port=port)
    srv = ServerProcess(proc, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", data, log)
    try:
        await _wait_ready(srv, 30)
        yield srv
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _until(page: Page, expr: str, timeout: float = 30.0) -> None:
    # polled: the page's CSP forbids the eval that wait_for_function needs
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await page.evaluate(f"() => !!({expr})"):
        assert loop.time() < end, f"not true within {timeout} s: {expr}"
        await asyncio.sleep(0.1)


def _url(srv: ServerProcess, role: str) -> str:
    cfg = Config(data_dir=srv.data_dir)
    token, _ = mint(
        token_key(srv.data_dir, create=False),
        session="s-restart",
        role=role,
        ttl=600,
        issuer=cfg.issuer,
        audience=cfg.audience,
    )
    return f"{srv.url}/join#token={token}"


async def test_session_continues_after_server_restart(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-restart-") as d:
        data, port = Path(d) / "server", free_port()
        async with _server(data, port) as srv:
            patient_url, page_url = _url(srv, "patient"), _url(srv, "clinician")
            async with NodeProc(patient_url, f"{d}/patient") as patient:
                await patient.wait_for(lambda e: e.get("event") == "joined")
                ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
                page = await ctx.new_page()
                errors: list[str] = []
                console: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: console.append(m.text))
                await page.goto(page_url)
                await page.get_by_role("button", name="Admit patient").click(timeout=15_000)
                live = page.locator("#conn-state")
                await expect(live).to_contain_text("Live via", timeout=20_000)
                sas = await page.locator("#sas").text_content()
                assert patient.proc is not None
                # the patient node is held stopped so the page rejoins the new server first
                os.kill(patient.proc.pid, signal.SIGSTOP)
                try:
                    assert await srv.stop() == 0
                    async with _server(data, port) as srv2:
                        await _until(page, "window.p2pmed.metrics.signalingJoins === 2")
                        await asyncio.sleep(3)  # ~12 heartbeats would have gone to an absent peer
                        os.kill(patient.proc.pid, signal.SIGCONT)
                        await _until(page, "window.p2pmed.session.pathStatus('relay').alive")
                        await expect(live).to_contain_text("Live via", timeout=30_000)
                        await asyncio.sleep(3)  # a refused heartbeat a second would show by now
                        assert await page.evaluate("window.p2pmed.metrics.signalingJoins") == 2
                        assert await page.evaluate("window.p2pmed.metrics.readmitted") == 1
                        assert await page.locator("#sas").text_content() == sas  # same session
                        assert "too-many-errors" not in srv2.log()
                finally:
                    os.kill(patient.proc.pid, signal.SIGCONT)
                refused = [c for c in console if "unknown-peer" in c or "not-admitted" in c]
                assert not refused, refused
                await ctx.close()
                assert not errors, errors


async def test_page_stops_reconnecting_when_the_server_keeps_refusing_it(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-refused-") as d:
        async with running_server(Path(d) / "server") as srv:
            page = await browser.new_page()
            await page.goto(srv.join_url(srv.mint("s-refused", "clinician")))
            for joins in (1, 2, 3):
                await _until(page, f"window.p2pmed.metrics.signalingJoins === {joins}")
                # bad messages (relay to nobody) until the server closes with too-many-errors
                await page.evaluate(
                    "() => { for (let i = 0; i < 30; i++)"
                    " window.p2pmed.app.sig.sendRelay('nobody', new Uint8Array(40)); }"
                )
            await expect(page.locator("#error-code")).to_have_text("too-many-errors")
            await expect(page.locator("#error-hint")).to_contain_text("Reload the page")
            await asyncio.sleep(3)  # no reconnect after it said so
            assert await page.evaluate("window.p2pmed.metrics.signalingJoins") == 3
            await page.close()
