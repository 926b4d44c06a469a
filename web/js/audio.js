// IEC 60601-1-8 auditory alarm signals through WebAudio (Tables 3 and 4 of the standard):
//   HIGH: a 10-pulse burst  x x x _ x x ..... x x x _ x x   repeated every interburst interval
//   MEDIUM: a 3-pulse burst x x x                            repeated every interburst interval
// Pulses: fundamental 150-1000 Hz with at least 4 harmonics in 300-4000 Hz; effective duration
// td 75-200 ms (high) / 125-250 ms (medium); rise time 10-20 % of td. Spacing (end of one pulse to
// start of the next): x = 50-125 ms (high), y = 125-250 ms (medium); high 3rd->4th and 8th->9th:
// 2x + td; high 5th->6th: 0.35-1.30 s; interburst 2.5-15 s (high), 2.5-30 s (medium).
// Every pulse scheduled is logged in window.__p2pmedAudio (a test hook; no secrets).

const X = 0.1;
const HIGH_TD = 0.15;
const Y = 0.2;
const MED_TD = 0.2;

export const PATTERNS = Object.freeze({
  high: { f0: 660, td: HIGH_TD, gaps: [X, X, 2 * X + HIGH_TD, X, 0.5, X, X, 2 * X + HIGH_TD, X], interburst: 3.0 },
  medium: { f0: 440, td: MED_TD, gaps: [Y, Y], interburst: 7.0 },
});
const RISE = 0.15; // of td
const HARMONICS = [0, 1, 0.6, 0.45, 0.3, 0.2]; // f0 and 4 harmonics: 5 components in 300-4000 Hz
const LEVEL = 0.25;

export function burstOffsets(p) {
  const out = [0];
  for (const g of p.gaps) out.push(out[out.length - 1] + p.td + g);
  return out;
}

export function burstLength(p) {
  const o = burstOffsets(p);
  return o[o.length - 1] + p.td;
}

export class AlarmSound {
  constructor() {
    this.ctx = null;
    this.priority = null;
    this.nextBurst = null; // AudioContext time of the next burst
    this.pausedUntil = null; // performance.now() seconds
    this.burst = 0;
    this.scheduled = [];
    this.log = { pulses: [], bursts: [], blocked: 0 };
    window.__p2pmedAudio = this.log;
  }

  // Browsers start audio only after a user gesture: called from the first click or key press.
  unlock() {
    try {
      if (!this.ctx) {
        this.ctx = new AudioContext();
        const n = HARMONICS.length;
        this.wave = this.ctx.createPeriodicWave(new Float32Array(n), Float32Array.from(HARMONICS));
      }
      if (this.ctx.state !== "running") this.ctx.resume().catch(() => {});
    } catch (e) {
      console.warn("no WebAudio", e);
    }
  }

  get blocked() { return !this.ctx || this.ctx.state !== "running"; }

  pause(seconds, t) { this.pausedUntil = t + seconds; this.silence(); }
  resume() { this.pausedUntil = null; }
  pausedLeft(t) {
    if (this.pausedUntil === null) return 0;
    if (t >= this.pausedUntil) { this.pausedUntil = null; return 0; }
    return this.pausedUntil - t;
  }

  // `priority`: "high" | "medium" | null, the highest alarm still signalled. `t`: seconds.
  update(priority, t) {
    if (priority !== "high" && priority !== "medium") priority = null;
    if (priority !== this.priority) {
      // another priority (or none): what is scheduled stops, the new pattern starts at once
      this.priority = priority;
      this.silence();
    }
    if (!priority || this.pausedLeft(t) > 0) return;
    if (this.blocked) { this.log.blocked++; return; }
    const now = this.ctx.currentTime;
    if (this.nextBurst === null || this.nextBurst < now) this.nextBurst = now + 0.05;
    if (this.nextBurst - now > 0.3) return; // scheduled a little ahead only, so a change takes effect
    const p = PATTERNS[priority];
    const start = this.nextBurst;
    const n = ++this.burst;
    this.log.bursts.push({ priority, burst: n, at: start });
    const now2 = this.ctx.currentTime;
    this.scheduled = this.scheduled.filter((s) => s.at + s.entry.td > now2);
    for (const off of burstOffsets(p)) this._pulse(p, start + off, priority, n);
    this.nextBurst = start + burstLength(p) + p.interburst;
  }

  _pulse(p, at, priority, burst) {
    const ctx = this.ctx;
    const osc = ctx.createOscillator();
    osc.setPeriodicWave(this.wave);
    osc.frequency.value = p.f0;
    const g = ctx.createGain();
    const tr = RISE * p.td;
    g.gain.setValueAtTime(0, at);
    g.gain.linearRampToValueAtTime(LEVEL, at + tr);
    g.gain.setValueAtTime(LEVEL, at + p.td - tr);
    g.gain.linearRampToValueAtTime(0, at + p.td);
    osc.connect(g).connect(ctx.destination);
    osc.start(at);
    osc.stop(at + p.td + 0.01);
    const entry = { priority, burst, at, td: p.td, f0: p.f0, cancelled: false };
    this.log.pulses.push(entry);
    this.scheduled.push({ osc, at, entry });
  }

  // Stop what is scheduled and not yet played (acknowledged, cleared, paused).
  silence() {
    this.nextBurst = null;
    if (!this.ctx) return;
    const now = this.ctx.currentTime;
    for (const s of this.scheduled) {
      if (s.at + s.entry.td <= now) continue;
      try { s.osc.stop(); } catch { /* already stopped */ }
      if (s.at > now) s.entry.cancelled = true;
    }
    this.scheduled = [];
  }
}
