// A bed tile of the station page (station.js): this page runs one bed's session in a same-origin
// iframe and tells the station what it shows (numerics, alarms, link), by postMessage. The station
// asks for acknowledgements and for the full view the same way. Messages are accepted only from
// the parent window of this origin.
import { $ } from "./ui.js";
import { PRIORITY_NAME, STATE_NAME, isTechnicalAlarm } from "./vitals.js";

const POST_EVERY = 500; // ms between snapshots (numerics come once a second); alarm changes are posted at once

const TICK_SLACK = 5; // ms: a station tick a little early still runs what is due

const num = (v) => (typeof v === "bigint" ? Number(v) : v);

export class TileBridge {
  // periodic: [ms, what] of the page's periodic work, run from the station's ticks (tick below)
  constructor(app, bed, periodic = []) {
    this.app = app;
    this.bed = bed;
    this.compact = true;
    this.queued = false;
    this.periodic = [...periodic, [POST_EVERY, () => this.post()]].map(([ms, run]) => ({ ms, run, due: null }));
    document.documentElement.classList.add("embedded", "tile-mode");
    const css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = "static/css/station.css";
    document.head.append(css);
    // alarm changes reach the station without waiting for the next snapshot
    const list = app.alarms;
    for (const name of ["upsert", "technical", "_ackState"]) {
      const orig = list[name].bind(list);
      list[name] = (...args) => { const r = orig(...args); this.soon(); return r; };
    }
    window.addEventListener("message", (e) => this.onMessage(e));
    // the station page calls these for every tile from one timer and one animation frame
    window.p2pmedTile = { tick: (ms) => this.tick(ms), draw: () => { if (this.compact) app.drawTraces(); } };
  }

  // One station tick (every 50 ms): whatever periodic work is due. Each tile starts at its own
  // phase, so the beds' slower work (status, snapshots) spreads over the ticks.
  tick(ms) {
    for (const p of this.periodic) {
      if (p.due === null) p.due = ms + Math.random() * p.ms;
      if (ms < p.due - TICK_SLACK) continue;
      p.due = p.due + p.ms > ms ? p.due + p.ms : ms + p.ms;
      try { p.run(); } catch (e) { console.error("tile periodic work failed", e); }
    }
  }

  soon() {
    if (this.queued) return;
    this.queued = true;
    queueMicrotask(() => { this.queued = false; this.post(); });
  }

  onMessage(e) {
    if (e.source !== window.parent || e.origin !== location.origin) return;
    const m = e.data;
    if (!m || typeof m !== "object") return;
    if (m.type === "p2pmed-ack") {
      const it = this.app.alarms.items.get(String(m.alarm_id));
      if (!it || it.technical || it.ack === "delivered" || it.ack === "sending") return;
      this.app.ackAlarm(it.alarm.alarm_id, it);
    } else if (m.type === "p2pmed-view") {
      this.compact = !m.full;
      document.documentElement.classList.toggle("tile-mode", this.compact);
      if (!this.compact) this.app.startDrawing(); // full size: at the screen's frame rate
    }
  }

  alarms() {
    const out = [];
    for (const [key, it] of this.app.alarms.items) {
      if (it.technical) {
        out.push({ key, technical: true, priority: "high", text: it.li.textContent, acked: false });
        continue;
      }
      const a = it.alarm;
      out.push({
        key, technical: isTechnicalAlarm(a), alarm_id: num(a.alarm_id), priority: PRIORITY_NAME[a.priority] || "high",
        condition: a.condition, value: a.value, now: it.now ?? null, state: STATE_NAME[a.state],
        time_us: num(a.time_us), ack: it.ack || null, acked: !!it.acked, ackText: it.st.textContent,
      });
    }
    return out;
  }

  post() {
    const app = this.app;
    const p = window.p2pmed;
    const m = p.metrics;
    const text = (id) => $(id)?.textContent || "";
    const snap = {
      type: "p2pmed-bed", bed: this.bed, state: p.state, conn: text("conn-state"),
      connClass: $("conn")?.className || "", path: m.path, rtt: text("st-rtt"), loss: text("st-loss"),
      grade: text("st-grade"), age: text("st-age"), label: app.patientLabel, sas: p.sas || null,
      numerics: app.tiles.last ? { ...app.tiles.last } : null,
      live: (performance.now() / 1000 - app.lastVitals) < 3,
      error: p.state === "error" ? text("error-code") || text("conn-state") : null,
      alarms: this.alarms(),
    };
    for (const [k, v] of Object.entries(snap.numerics || {})) if (typeof v === "bigint") snap.numerics[k] = Number(v);
    window.parent.postMessage(snap, location.origin);
  }
}
