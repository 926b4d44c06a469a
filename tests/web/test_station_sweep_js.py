"""The sweep trace (web/js/waveform.js) draws one path per call, as the station page needs for
many beds on one main thread, and still shows what the bedside sweep shows: the new samples
drawn, the gap ahead of the write point blank, also when one call spans a whole sweep."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

pytestmark = pytest.mark.asyncio(loop_scope="module")

SWEEP = """async (seconds) => {
  const { SweepTrace } = await import('/static/js/waveform.js');
  const c = document.createElement('canvas');
  c.style.width = '300px'; c.style.height = '100px';
  document.body.append(c);
  let first = 0;
  const opts = { color: '#39ff6a', mode: 'ecg', seconds, onFirstDraw: () => first++ };
  const tr = new SweepTrace(c, opts);
  let strokes = 0;
  const stroke = tr.ctx.stroke.bind(tr.ctx);
  tr.ctx.stroke = () => { strokes++; stroke(); };
  const rate = 500, n = 1500;
  const samples = Array.from({ length: n }, (_, i) => Math.round(800 * Math.sin(i / 15)));
  tr.push({ t0_us: 0, samples, sample_rate: rate, first_seq: 0, scale: 0.001 }, 0);
  const w = c.width, h = c.height, per = rate * seconds;
  const xOf = (s) => Math.floor(((s % per) / per) * w);
  const green = (x0, x1) => {
    const d = tr.ctx.getImageData(x0, 0, x1 - x0, h).data;
    let k = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 100) k++;
    return k;
  };
  const out = { w };
  if (seconds === 6) {
    tr.frame(10);  // starts 0.2 s behind the newest sample
    const s0 = strokes, from = tr.drawn;
    tr.frame(10.1);  // 50 samples in one call
    out.strokes = strokes - s0;
    out.samples = tr.drawn - from;
    out.behind = green(xOf(from) + 1, xOf(tr.drawn));
    out.gap = green(xOf(tr.drawn) + 3, xOf(tr.drawn) + 3 + 10);
  } else {
    tr.frame(10);
    const s0 = strokes;
    tr._draw(0, n - 1);  // one call spanning more than the whole sweep
    out.strokes = strokes - s0;
    out.gap = green(xOf(n - 1) + 3, xOf(n - 1) + 3 + 10);
    out.behind = green(0, Math.max(1, xOf(n - 1) - 2)) + green(xOf(n - 1) + 16, w);
  }
  out.first = first;
  c.remove();
  return out;
}"""


async def test_one_path_per_step_and_gap_ahead_blank(blank_page: Page) -> None:
    got = await blank_page.evaluate(SWEEP, 6)
    assert got["samples"] >= 40  # 0.1 s at 500 Hz
    assert got["strokes"] == 1  # was one stroke per sample
    assert got["behind"] > 50  # the new samples are drawn
    assert got["gap"] == 0  # the gap ahead of the write point is blank
    assert got["first"] == 1


async def test_a_whole_sweep_in_one_call_keeps_its_gap(blank_page: Page) -> None:
    got = await blank_page.evaluate(SWEEP, 1)
    assert got["strokes"] == 1
    assert got["gap"] == 0
    assert got["behind"] > got["w"]  # the rest of the sweep is trace
    assert got["first"] == 1
