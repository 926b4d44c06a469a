"""The patient's label and the end of its stream, from a real patient node process (`--label`, a
short WFDB record as source) to the page: header, tab title, then "stream ended" (not lost)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import wfdb  # type: ignore[import-untyped]
from playwright.async_api import Browser, expect

from signaling.testing import running_server
from tests.web.node_proc import NodeProc

pytestmark = pytest.mark.asyncio(loop_scope="module")

DATA = Path(__file__).resolve().parents[1] / "data"
LABEL = "Bed 7 — Ånna Example"


def _short_record(d: Path, seconds: int) -> Path:
    rec = wfdb.rdrecord(str(DATA / "mitdb208"), physical=False)
    wfdb.wrsamp(
        "short", fs=360, units=["mV"], sig_name=["MLII"], d_signal=rec.d_signal[: seconds * 360],
        fmt=["212"], adc_gain=[200.0], baseline=[1024], write_dir=str(d),
    )  # fmt: skip
    return d / "short"


async def test_label_shown_then_stream_ended(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-label-") as d:
        record = _short_record(Path(d), 8)
        async with running_server(Path(d) / "server") as srv:
            purl = srv.join_url(srv.mint("s-label", "patient"))
            args = ("--source", f"wfdb:{record}", "--label", LABEL, "--media", "none")
            async with NodeProc(purl, str(Path(d) / "patient"), *args) as node:
                await node.wait_for(lambda e: e.get("event") == "joined")
                ctx = await browser.new_context()
                page = await ctx.new_page()
                await page.goto(srv.join_url(srv.mint("s-label", "clinician")))
                await page.get_by_role("button", name="Admit patient").click(timeout=10_000)
                await expect(page.locator("#patient-label")).to_have_text(
                    f"Patient: {LABEL}", timeout=10_000
                )
                await expect(page).to_have_title(f"{LABEL} — p2pmed clinician")
                await node.wait_for(lambda e: e.get("event") == "source-ended", timeout=60)
                await expect(page.locator("#conn-state")).to_contain_text(
                    "Stream ended — the patient's source has no more data", timeout=10_000
                )
                await expect(page.locator("#ecg-status")).to_contain_text("FROZEN — stream ended")
                await expect(page.locator("#lost-banner")).to_be_hidden()
                await expect(page.locator("#patient-label")).to_have_text(f"Patient: {LABEL}")
                assert await page.evaluate("window.p2pmed.metrics.codecRejected") == 0
                await ctx.close()
