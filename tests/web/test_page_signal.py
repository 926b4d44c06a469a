"""ECG and pleth "NO SIGNAL" comes from the samples' own timestamps (#17.14): delivery held up for
0.5 s at a time (a loaded machine) while the sample times stay continuous shows no NO SIGNAL, even
though the page's jitter buffer runs dry; samples that really stop show NO SIGNAL within seconds.
A real Python patient session over the real signaling relay, the real page in Chromium."""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from p2pmed.core.frame import MessageClass
from p2pmed.vitals import codec
from signaling.testing import running_server
from tests.web.relay_patient import RelayPatient

pytestmark = pytest.mark.asyncio(loop_scope="module")

RATE = 250
CHUNK = 25  # 100 ms of ECG per WAVEFORM

RECORD = """() => {
  window.__statusLog = [];
  window.__dry = 0;
  for (const id of ["ecg-status", "pleth-status"]) {
    const el = document.getElementById(id);
    new MutationObserver(() => window.__statusLog.push(id + ": " + el.textContent))
      .observe(el, { childList: true, characterData: true, subtree: true });
  }
  // the jitter buffer ran dry (the rule that used to show NO SIGNAL)
  const ecg = window.p2pmed.app.ecg;
  setInterval(() => { if (ecg.playhead >= ecg.hi - 1) window.__dry++; }, 20);
}"""


async def _feed(p: RelayPatient, mode: dict[str, Any]) -> None:
    start_us = int(time.time() * 1e6)
    seq = pseq = n = 0
    pending: list[bytes] = []
    hold_until = 0.0
    next_t = time.monotonic()
    while True:
        t0_us = start_us + seq * 1_000_000 // RATE  # the data's own clock: continuous
        if mode["waveforms"]:
            ecg = tuple(round(400 * math.sin(2 * math.pi * (seq + i) / RATE)) for i in range(CHUNK))
            pending.append(codec.encode(codec.Waveform("II", RATE, t0_us, seq, 0.005, "mV", ecg)))
            count = (seq + CHUNK) // 2 - pseq
            pleth = tuple(round(1000 * math.sin((pseq + i) / 20)) for i in range(count))
            pending.append(
                codec.encode(codec.Waveform("PLETH", 125, t0_us, pseq, 0.001, "1", pleth))
            )
            pseq += count
        if n % 10 == 0:
            num = codec.Numerics(t0_us, "pat-1", hr_x10=720, spo2_x100=9700, rr_x10=160)
            pending.append(codec.encode(num))
        seq += CHUNK
        n += 1
        now = time.monotonic()
        if mode["jitter"] and n % 8 == 0:
            hold_until = now + 0.5  # delivery held up; the samples keep their times
        if now >= hold_until:
            for m in pending:
                p.send(MessageClass.MEDIUM, m)
            pending.clear()
        next_t += CHUNK / RATE
        await asyncio.sleep(max(0.0, next_t - time.monotonic()))


async def test_no_signal_follows_sample_times_not_delivery_jitter(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-signal-") as d:
        async with running_server(d) as srv:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(srv.join_url(srv.mint("s-signal", "clinician")))
            token = srv.mint("s-signal", "patient")
            async with RelayPatient(srv.ws_url, token) as patient:
                await page.get_by_role("button", name="Admit patient pat-sim").click()
                await patient.wait(lambda: patient.established)
                mode = {"waveforms": True, "jitter": False}
                feeder = asyncio.create_task(_feed(patient, mode))
                try:
                    ecg, pleth = page.locator("#ecg-status"), page.locator("#pleth-status")
                    await expect(ecg).to_have_text("250 Hz", timeout=10_000)
                    await expect(pleth).to_have_text("125 Hz", timeout=5_000)
                    await page.evaluate(RECORD)
                    mode["jitter"] = True
                    await asyncio.sleep(6)  # 7 holds of 0.5 s
                    log = await page.evaluate("window.__statusLog")
                    assert await page.evaluate("window.__dry") > 0  # the buffer did run dry
                    assert not [x for x in log if "NO SIGNAL" in x], log
                    await expect(ecg).to_have_text("250 Hz")
                    # the samples really stop (numerics go on): NO SIGNAL, back when they resume
                    mode["jitter"] = False
                    mode["waveforms"] = False
                    await expect(ecg).to_contain_text("NO SIGNAL", timeout=3_000)
                    await expect(pleth).to_contain_text("NO SIGNAL", timeout=1_000)
                    await expect(page.locator("#conn-state")).to_contain_text("Live via")
                    mode["waveforms"] = True
                    await expect(ecg).to_have_text("250 Hz", timeout=5_000)
                finally:
                    feeder.cancel()
            await page.close()
            assert not errors, errors
