// Bedside-monitor sweep: the trace is drawn left to right at the real sample rate and overwrites the
// previous sweep, with a blank gap just ahead of the write point. Playback runs `delay` seconds behind
// the newest sample to absorb jitter; when data stops, the sweep stops (nothing looks live that isn't).
// Whether the signal is lost comes from the data's own sample times, not from the jitter buffer running
// dry once: see signalLost.
const OFFSET_WINDOW = 10; // seconds of delivery offsets kept (adapts to a sender's clock step)

export class SweepTrace {
  constructor(canvas, { color, seconds = 6, delay = 0.2, gapPx = 14, mode = "ecg", onFirstDraw = null }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.color = color;
    this.seconds = seconds;
    this.delay = delay;
    this.gapPx = gapPx;
    this.mode = mode;
    this.onFirstDraw = onFirstDraw;
    this.rate = 0;
    this.cap = 0;
    this.buf = null; // ring of physical values (NaN = missing)
    this.lo = 0; // oldest seq held
    this.hi = 0; // one past the newest seq held
    this.playhead = null; // fractional seq being drawn
    this.drawn = null; // last seq drawn
    this.lastT = null;
    this.lastArrival = -Infinity;
    this.samplesDrawn = 0;
    this.firstDrawn = false;
    this.min = -1;
    this.max = 1;
    this.gaps = 0;
    this.lostAfter = 1.0; // seconds the newest sample may be overdue before "no signal"
    this.dataEnd = null; // sender's time (s) just after the newest sample
    this.offsets = []; // [arrival, arrival - dataEnd] of the last OFFSET_WINDOW s
    this.px = 1; // drawing-buffer pixels per CSS pixel
    this.clear();
    // The drawing buffer follows the canvas's CSS size (no stretched trace on a narrow screen).
    if (typeof ResizeObserver === "function") new ResizeObserver(() => this.fit()).observe(canvas);
    this.fit();
  }

  fit() {
    const px = window.devicePixelRatio || 1;
    const w = Math.round(this.canvas.clientWidth * px);
    const h = Math.round(this.canvas.clientHeight * px);
    if (!w || !h || (w === this.canvas.width && h === this.canvas.height)) return;
    this.canvas.width = w;
    this.canvas.height = h;
    this.px = px;
    this.clear();
    if (this.buf && this.playhead !== null) {
      const to = Math.floor(this.playhead); // redraw the last sweep at the new size
      this._draw(to - Math.ceil(this.rate * this.seconds), to);
    }
  }

  clear() {
    this.ctx.fillStyle = "#000";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
  }

  reset() {
    this.dataEnd = null;
    this.offsets = [];
    this.playhead = null;
    this.drawn = null;
    this.buf = null;
    this.clear();
  }

  push(msg, now) {
    const end = Number(msg.t0_us) / 1e6 + msg.samples.length / msg.sample_rate;
    if (this.dataEnd === null || end > this.dataEnd) this.dataEnd = end;
    this.offsets.push([now, now - end]);
    while (now - this.offsets[0][0] > OFFSET_WINDOW) this.offsets.shift();
    if (!this.buf || msg.sample_rate !== this.rate) {
      this.rate = msg.sample_rate;
      this.cap = Math.ceil(this.rate * 30);
      this.buf = new Float32Array(this.cap).fill(NaN);
      this.lo = this.hi = msg.first_seq;
      this.playhead = null;
      this.drawn = null;
    }
    const first = msg.first_seq;
    if (first + msg.samples.length <= this.hi) return; // already have it
    if (first > this.hi) this.gaps++;
    for (let s = this.hi; s < first; s++) this.buf[s % this.cap] = NaN; // source gap
    for (let i = 0; i < msg.samples.length; i++) {
      const seq = first + i;
      if (seq < this.hi) continue;
      this.buf[seq % this.cap] = msg.samples[i] * msg.scale;
    }
    this.hi = first + msg.samples.length;
    this.lo = Math.max(this.lo, this.hi - this.cap + 1);
    this.lastArrival = now;
  }

  // Advance the sweep to wall time `t` (seconds) and draw what is due.
  frame(t) {
    if (!this.buf || this.hi === this.lo) { this.lastT = t; return; }
    if (this.playhead === null) {
      // Start just behind the newest data so the first sample shows at once.
      this.playhead = Math.max(this.lo, this.hi - this.delay * this.rate);
      this.drawn = Math.floor(this.playhead) - 1;
      this.lastT = t;
    }
    const dt = Math.max(0, Math.min(0.25, t - this.lastT));
    this.lastT = t;
    const lag = (this.hi - this.playhead) / this.rate;
    let speed = 1;
    if (lag > 2.0) this.playhead = this.hi - this.delay * this.rate; // far behind (after an outage): jump
    else if (lag > this.delay * 2) speed = 1.1; // drift back to the target delay
    this.playhead = Math.min(this.hi - 1, this.playhead + dt * this.rate * speed);
    const upto = Math.floor(this.playhead);
    if (upto > this.drawn) this._draw(this.drawn, upto);
  }

  // The sender's clock now is estimated as ours minus the smallest delivery offset seen lately (the
  // least delayed message; no shared clock needed). The signal is lost when the newest sample is
  // overdue on that clock by more than lostAfter: a message held up by a busy machine or network is
  // not a lost signal, a source that stopped is (within lostAfter).
  signalLost(now) {
    if (this.dataEnd === null) return true;
    let min = Infinity;
    for (const [, off] of this.offsets) if (off < min) min = off;
    return now - min - this.dataEnd > this.lostAfter;
  }

  _scale(v) {
    const h = this.canvas.height;
    if (this.mode === "ecg") return h * 0.55 - v * (h / 3.2); // ~1 mV = 0.31 of the height
    const span = Math.max(1e-6, this.max - this.min);
    return h - 6 - ((v - this.min) / span) * (h - 12);
  }

  // One path per call (not one stroke per sample): at 500 Hz a sweep step holds many samples, and
  // the station page draws every bed's traces on one main thread.
  _draw(from, to) {
    const ctx = this.ctx;
    const w = this.canvas.width;
    const h = this.canvas.height;
    const per = this.rate * this.seconds;
    const xOf = (seq) => ((seq % per) / per) * w;
    if (this.mode !== "ecg") this._updateRange(from, to);
    const start = Math.max(from, to - per + 1, this.lo);
    if (start > to) { this.drawn = to; return; }
    const gap = this.gapPx * this.px;
    // blank what the new samples overwrite and the gap ahead of the write point
    const x0 = xOf(start) + 1;
    this._blank(x0, x0 + ((to - start) / per) * w + gap);
    ctx.strokeStyle = this.color;
    ctx.lineWidth = 2 * this.px;
    ctx.lineJoin = "round";
    ctx.beginPath();
    const dots = [];
    let prevX = null;
    let prevY = null;
    for (let s = start; s <= to; s++) {
      const x = xOf(s);
      const v = s >= this.lo && s < this.hi ? this.buf[s % this.cap] : NaN;
      if (Number.isNaN(v)) { prevX = null; continue; }
      const y = this._scale(v);
      if (prevX === null && s === start) {
        const pv = s - 1 >= this.lo ? this.buf[(s - 1) % this.cap] : NaN;
        if (!Number.isNaN(pv)) { prevX = xOf(s - 1); prevY = this._scale(pv); }
      }
      if (prevX !== null && prevX <= x) {
        ctx.moveTo(prevX, prevY);
        ctx.lineTo(x, y);
      } else dots.push(x, y);
      prevX = x;
      prevY = y;
      this.samplesDrawn++;
    }
    ctx.stroke();
    ctx.fillStyle = this.color;
    for (let i = 0; i < dots.length; i += 2) ctx.fillRect(dots[i], dots[i + 1] - 1, 2, 2);
    // a call spanning a whole sweep drew over its own gap: blank it again
    const xe = xOf(to) + 1;
    if ((to - start) / per * w + gap >= w) this._blank(xe, xe + gap);
    if (this.samplesDrawn > 0 && !this.firstDrawn) {
      this.firstDrawn = true;
      if (this.onFirstDraw) this.onFirstDraw();
    }
    this.drawn = to;
  }

  // Black from x0 to x1 (x1 may pass the right edge: the rest from the left edge).
  _blank(x0, x1) {
    const ctx = this.ctx;
    const w = this.canvas.width;
    ctx.fillStyle = "#000";
    if (x1 - x0 >= w) { ctx.fillRect(0, 0, w, this.canvas.height); return; }
    ctx.fillRect(x0, 0, Math.min(x1, w) - x0, this.canvas.height);
    if (x1 > w) ctx.fillRect(0, 0, x1 - w, this.canvas.height);
  }

  _updateRange(from, to) {
    let mn = Infinity, mx = -Infinity;
    const look = Math.min(this.hi - this.lo, Math.ceil(this.rate * 3));
    for (let s = this.hi - look; s < this.hi; s++) {
      const v = this.buf[s % this.cap];
      if (!Number.isNaN(v)) { if (v < mn) mn = v; if (v > mx) mx = v; }
    }
    if (mn < Infinity) { this.min = mn; this.max = mx; }
  }
}
