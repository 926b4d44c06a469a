// The central station page (docs/wards.md): the same `/join#token=` entry with a station token.
// Its own signaling connection learns the ward's beds and a bed token for each; every bed is the
// single-patient page in a same-origin iframe (tile mode, tilebridge.js) running its own E2E session
// with the station's endpoint id. This page draws the grid, the one alarm list across all beds
// (priority, then age: the oldest first) and owns the alarm sound (the tiles are silent).
import { SignalingClient } from "./signaling.js";
import { AlarmSound } from "./audio.js";
import { $, announce, showError } from "./ui.js";

const AUDIO_PAUSE = 120; // seconds (IEC 60601-1-8 AUDIO PAUSED), as the single page
const TILE_TICK = 50; // ms: the tiles' periodic work (tilebridge.js; their sessions' timers need 50 ms)
const TILE_FPS = 20; // sweep frames a second in a tile
const PING_EVERY = 30000; // ms: keeps the ward connection (it carries no relay frames) from idle logoff
const RANK = { high: 3, medium: 2, low: 1 };
const STATE_TEXT = { waiting: "waiting", live: "live", "link-lost": "LINK LOST", ended: "ended" };
// A bed frame whose first join the server refuses for a limit of the moment (a station joins
// every bed at once, all from one address) or that could not join at all (its own client's
// tries, each up to its join timeout, used up: "unreachable") is loaded again after
// RETRY_MS[0], doubling up to RETRY_MS[1], as the terminal station does (p2pmed/node/station.py)
const RETRY_CODES = new Set(["too-many-joins", "unreachable"]);
const RETRY_MS = [1000, 30000];
const now = () => performance.now() / 1000;

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  e.append(...kids);
  return e;
}

function claims(token) {
  try {
    const p = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(p + "=".repeat((4 - (p.length % 4)) % 4))) || {};
  } catch { return {}; }
}

const fmt = (v, d = 0) => (v === null || v === undefined || Number.isNaN(v) ? "--" : Number(v).toFixed(d));
const round = (v) => Math.round(v * 10) / 10;

export async function startStation(token, eid) {
  const st = new Station(token, eid);
  window.p2pmedStation = st;
  st.start();
}

class Station {
  constructor(token, eid) {
    this.token = token;
    this.eid = eid;
    this.ward = claims(token).ward || "?";
    this.beds = new Map(); // bed -> {id, state, tile, frame, snap, ...}
    this.rows = new Map(); // alarm row key -> {li, ...}
    this.firstSeen = new Map(); // alarm row key -> Date.now() when first listed
    this.pending = new Map(); // alarm row key -> when the station asked its tile to acknowledge
    this.full = null;
    this.sound = new AlarmSound();
    // alarmLatencyUs: per alarm announcement (raised, escalated) first listed here, from the
    // patient node's alarm time; only those raised after this page started (benchmark hook)
    this.metrics = { joins: 0, alarmShown: [], alarmLatencyUs: [], acks: [], posts: 0, bedMessages: 0, bedRetries: 0, startUs: Date.now() * 1000 };
    this.announced = new Set();
    this.inSight = new Set(); // beds whose tile is in the viewport
    this.sight = new IntersectionObserver((seen) => {
      for (const e of seen) this.inSight[e.isIntersecting ? "add" : "delete"](e.target.dataset.bed);
    });
    this.base = location.pathname.replace(/\/join\/?$/, "");
  }

  start() {
    this.build();
    const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${this.base}/ws`;
    this.sig = new SignalingClient({
      wsUrl, token: this.token, endpointId: this.eid,
      onMessage: (m) => this.onSignal(m),
      onRelay: () => {},
      onState: (up) => this.onState(up),
      onFatal: (code, message) => {
        window.p2pmed.state = "error";
        $("station").hidden = true;
        showError(code, message);
      },
    });
    this.sig.start();
    window.addEventListener("message", (e) => this.onTile(e));
    const unlock = () => this.sound.unlock();
    document.addEventListener("pointerdown", unlock, true);
    document.addEventListener("keydown", unlock, true);
    $("st-audio-unlock").addEventListener("click", unlock);
    $("st-audio-pause").addEventListener("click", () => {
      const t = now();
      if (this.sound.pausedLeft(t) > 0) this.sound.resume();
      else this.sound.pause(AUDIO_PAUSE, t);
      this.renderSignals();
    });
    $("st-back").addEventListener("click", () => this.closeFull());
    setInterval(() => this.renderSignals(), 100);
    // every tile's periodic work (session timers, status, snapshot) from this one timer, and
    // every tile's sweeps in one animation frame: one main thread serves all frames
    setInterval(() => this.eachTile((w) => w.tick(performance.now())), TILE_TICK);
    let drawn = -Infinity;
    const draw = (ms) => {
      // only tiles in sight: not those scrolled away, none behind a bed in full view (that bed
      // draws itself)
      if (ms - drawn >= 1000 / TILE_FPS - 4 && !this.full) {
        drawn = ms;
        this.eachTile((w, bed) => { if (this.inSight.has(bed.id)) w.draw(); });
      }
      requestAnimationFrame(draw);
    };
    requestAnimationFrame(draw);
    setInterval(() => this.sig.sendJson({ type: "ping" }), PING_EVERY);
  }

  build() {
    window.p2pmed.state = "station";
    document.title = `Ward ${this.ward} — p2pmed central station`;
    document.querySelector(".top .sub").textContent = `central station — ward ${this.ward}`;
    for (const id of ["main", "view-waiting", "view-error", "patient-label"]) $(id).hidden = true;
    document.querySelector(".skip").setAttribute("href", "#station");
    document.querySelector(".skip").textContent = "Skip to the ward";
    document.head.append(el("link", { rel: "stylesheet", href: "static/css/station.css" }));
    const main = el("main", { id: "station", class: "station", tabindex: "-1" },
      el("section", { class: "alarms alarm-bar", "aria-labelledby": "st-alarms-title" },
        el("div", { class: "audio-controls" },
          el("h2", { id: "st-alarms-title", class: "st-title", text: "Alarms — all beds" }),
          el("button", { id: "st-audio-unlock", type: "button", hidden: "", text: "Turn on alarm sound" }),
          el("button", { id: "st-audio-pause", type: "button", "aria-pressed": "false", text: "Pause alarm audio for 2 min" }),
          el("span", { id: "st-audio-state", class: "audio-state", role: "status" })),
        el("ul", { id: "st-alarm-list", class: "alarm-list", tabindex: "-1", "aria-labelledby": "st-alarms-title" })),
      el("section", { class: "ward", "aria-labelledby": "st-beds-title" },
        el("div", { class: "ward-head" },
          el("h2", { id: "st-beds-title", class: "st-title", text: "Beds" }),
          el("button", { id: "st-back", type: "button", hidden: "", text: "Back to ward" })),
        el("p", { id: "st-empty", text: "No bed has joined this ward yet." }),
        el("div", { id: "st-grid", class: "ward-grid", "data-cols": "1", "data-rows": "1" })));
    $("view-error").before(main);
    $("conn").className = "conn conn-connecting";
    $("conn-state").textContent = "Connecting to the ward…";
  }

  // ---- the ward connection ----
  onState(up) {
    if (up) this.metrics.joins++;
    $("conn").className = `conn ${up ? "conn-live" : "conn-lost"}`;
    $("conn-state").textContent = up ? `Ward ${this.ward}: connected` : "Ward connection lost — reconnecting (beds keep their own connections)";
  }

  onSignal(m) {
    if (m.type === "ward" && Array.isArray(m.beds)) for (const b of m.beds) this.onBed(b);
    else if (m.type === "bed") this.onBed(m);
  }

  onBed(b) {
    if (!b || typeof b.session !== "string" || typeof b.token !== "string") return;
    this.metrics.bedMessages++;
    let bed = this.beds.get(b.session);
    if (!bed) {
      bed = this.addBed(b);
      announce(`Bed ${b.session} joined the ward`);
    } else if (bed.state !== b.state) {
      if (b.state === "link-lost" || b.state === "ended") announce(`Bed ${b.session}: ${STATE_TEXT[b.state] || b.state}`);
    }
    bed.state = b.state;
    bed.patient = b.patient;
    bed.token = b.token; // the newest: a frame loaded again joins with it
    bed.tile.dataset.state = b.state;
    this.renderBed(bed);
  }

  addBed(b) {
    const id = b.session;
    const frame = el("iframe", { title: `Bed ${id} monitor`, src: this.frameSrc(id, b.token, 0), tabindex: "-1" });
    frame.inert = true;
    const name = el("h3", { class: "bedname", text: `Bed ${id}` });
    const state = el("span", { class: "bedstate" });
    const alarm = el("span", { class: "bedalarm" });
    const nums = el("span", { class: "bednums" });
    const path = el("span", { class: "bedpath" });
    const open = el("button", { type: "button", class: "bedopen" });
    open.addEventListener("click", () => this.openFull(id));
    const tile = el("div", { class: "bedtile", "data-bed": id },
      el("div", { class: "bedhead" }, name, state, alarm), frame,
      el("div", { class: "bedfoot" }, nums, path), open);
    const bed = { id, state: b.state, patient: b.patient, token: b.token, tile, frame, name, stateEl: state, alarmEl: alarm, nums, path, open, snap: null, alarm: null, tries: 0, retryMs: 0, retryTimer: null };
    this.beds.set(id, bed);
    $("st-grid").append(tile);
    this.sight.observe(tile);
    $("st-empty").hidden = true;
    this.layout();
    return bed;
  }

  // the query keeps the frame's URL apart from this page's (no frame may load its ancestor's URL)
  // and, with the try number, apart from the frame's previous load
  frameSrc(id, token, tries) {
    const params = new URLSearchParams({ tile: "1", bed: id, eid: this.eid, token });
    const again = tries ? `&try=${tries}` : "";
    return `${this.base}/join?bed=${encodeURIComponent(id)}${again}#${params}`;
  }

  // a bed frame refused for a limit of the moment: loaded again later, waiting longer each time
  retryLater(bed) {
    if (bed.retryTimer !== null) return;
    bed.retryMs = bed.retryMs ? Math.min(bed.retryMs * 2, RETRY_MS[1]) : RETRY_MS[0];
    bed.retryTimer = setTimeout(() => {
      bed.retryTimer = null;
      // a post of the frame's previous document may have asked again after its reload
      if (!this.beds.has(bed.id) || bed.state === "ended" || !RETRY_CODES.has(bed.snap?.error)) return;
      bed.tries++;
      this.metrics.bedRetries++;
      bed.snap = null;
      bed.frame.src = this.frameSrc(bed.id, bed.token, bed.tries);
      this.renderBed(bed);
    }, bed.retryMs);
  }

  layout() {
    const n = this.beds.size;
    const cols = n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : n <= 16 ? 4 : n <= 25 ? 5 : n <= 36 ? 6 : n <= 49 ? 7 : 8;
    const grid = $("st-grid");
    grid.dataset.cols = String(cols);
    grid.dataset.rows = String(Math.ceil(n / cols));
    $("st-beds-title").textContent = `Beds (${n})`;
  }

  // f(tile hooks, bed) for every bed frame that has loaded (tilebridge.js); one failing tile does
  // not stop the others
  eachTile(f) {
    for (const bed of this.beds.values()) {
      let w = null;
      try { w = bed.frame.contentWindow && bed.frame.contentWindow.p2pmedTile; } catch { w = null; }
      if (!w) continue;
      try { f(w, bed); } catch (e) { console.error(`bed ${bed.id}: tile work failed`, e); }
    }
  }

  // ---- what each tile reports ----
  onTile(e) {
    if (e.origin !== location.origin) return;
    const m = e.data;
    if (!m || m.type !== "p2pmed-bed") return;
    const bed = this.beds.get(m.bed);
    if (!bed || e.source !== bed.frame.contentWindow) return;
    this.metrics.posts++;
    bed.snap = m;
    if (m.error && RETRY_CODES.has(m.error)) this.retryLater(bed);
    else if (m.live) bed.retryMs = 0;
    this.renderBed(bed);
    // one list render per 40 ms, whatever the number of tiles posting (a timer, not an animation
    // frame: the list must follow in a background tab too)
    if (!this.alarmsQueued) {
      this.alarmsQueued = true;
      setTimeout(() => { this.alarmsQueued = false; this.renderAlarms(); }, 40);
    }
  }

  renderBed(bed) {
    const s = bed.snap;
    const err = s && s.error;
    const stateText = err ? `ERROR: ${err}` : STATE_TEXT[bed.state] || bed.state;
    if (bed.stateEl.textContent !== stateText) bed.stateEl.textContent = stateText;
    bed.tile.toggleAttribute("data-error", !!err);
    const label = s && s.label ? ` — ${s.label}` : "";
    if (bed.name.textContent !== `Bed ${bed.id}${label}`) bed.name.textContent = `Bed ${bed.id}${label}`;
    const v = s && s.numerics;
    const nums = v ? `HR ${fmt(v.hr)} SpO₂ ${fmt(v.spo2)} BP ${fmt(v.sys)}/${fmt(v.dia)} RR ${fmt(v.rr)} T ${fmt(v.temp, 1)}${s.live ? "" : " (not live)"}` : "no vitals yet";
    if (bed.nums.textContent !== nums) bed.nums.textContent = nums;
    const path = s && s.path ? `${s.path} · RTT ${s.rtt} · loss ${s.loss} · ${s.grade}` : s ? s.conn : "connecting…";
    if (bed.path.textContent !== path) bed.path.textContent = path;
    // the tile's alarm: the highest still signalled, else the highest acknowledged one (steady)
    let top = null;
    for (const a of (s && s.alarms) || []) {
      const sig = !a.acked;
      if (!top || sig > top.sig || (sig === top.sig && RANK[a.priority] > RANK[top.a.priority])) top = { a, sig };
    }
    const key = top ? `${top.a.priority}|${top.a.technical}|${top.sig}|${top.a.condition || top.a.text}` : null;
    if (key !== bed.alarm) {
      bed.alarm = key;
      if (top) {
        bed.tile.dataset.alarm = top.a.priority;
        bed.tile.toggleAttribute("data-alarm-acked", !top.sig);
        bed.tile.toggleAttribute("data-alarm-technical", !!top.a.technical);
        const what = top.a.technical ? `TECHNICAL ${top.a.condition || "alarm"}` : top.a.condition;
        bed.alarmEl.textContent = `${top.a.priority.toUpperCase()}: ${what}${top.sig ? "" : " (acknowledged)"}`;
        if (top.sig) this.metrics.alarmShown.push({ bed: bed.id, alarm_id: top.a.alarm_id ?? null, priority: top.a.priority, time_us: top.a.time_us ?? null, at_us: Date.now() * 1000 });
      } else {
        delete bed.tile.dataset.alarm;
        bed.tile.removeAttribute("data-alarm-acked");
        bed.tile.removeAttribute("data-alarm-technical");
        bed.alarmEl.textContent = "";
      }
    }
    const alarmText = bed.alarmEl.textContent ? `, alarm ${bed.alarmEl.textContent}` : ", no alarm";
    const aria = `Bed ${bed.id}${label}: ${stateText}${alarmText}; ${nums}; ${path}. Open the full view`;
    if (bed.open.getAttribute("aria-label") !== aria) bed.open.setAttribute("aria-label", aria);
  }

  // ---- the one alarm list ----
  renderAlarms() {
    const rows = [];
    for (const bed of this.beds.values()) {
      for (const a of (bed.snap && bed.snap.alarms) || []) {
        const key = `${bed.id}\u0000${a.key}`;
        if (!this.firstSeen.has(key)) this.firstSeen.set(key, Date.now() * 1000);
        const ann = `${key}\u0000${a.time_us}`;
        if (a.time_us && !this.announced.has(ann)) {
          this.announced.add(ann);
          if (a.time_us >= this.metrics.startUs && this.metrics.alarmLatencyUs.length < 100000) this.metrics.alarmLatencyUs.push(Date.now() * 1000 - a.time_us);
        }
        rows.push({ key, bed, a, t: a.time_us || this.firstSeen.get(key) });
      }
    }
    rows.sort((x, y) => RANK[y.a.priority] - RANK[x.a.priority] || x.t - y.t);
    const list = $("st-alarm-list");
    const keep = new Set(rows.map((r) => r.key));
    for (const [key, row] of this.rows) {
      if (keep.has(key)) continue;
      row.li.remove();
      this.rows.delete(key);
      this.firstSeen.delete(key);
      this.pending.delete(key);
      announce(`Alarm over: bed ${row.bed}, ${row.what}`);
    }
    rows.forEach((r, i) => {
      let row = this.rows.get(r.key);
      const what = r.a.technical && !r.a.condition ? r.a.text.replace(/^TECHNICAL ALARM \(high\): /, "") : r.a.condition;
      if (!row) {
        const text = el("span", { class: "text" });
        const st = el("span", { class: "ack-state" });
        const btn = el("button", { type: "button", class: "ack", text: "Acknowledge" });
        btn.addEventListener("click", () => this.ack(r.key));
        const li = el("li", {}, text, st, btn);
        row = { li, text, st, btn, bed: r.bed.id, what };
        this.rows.set(r.key, row);
        announce(`Bed ${r.bed.id}: ${r.a.priority} priority ${r.a.technical ? "technical " : ""}alarm ${what}`);
      }
      row.a = r.a;
      row.what = what;
      const a = r.a;
      const val = a.value === null || a.value === undefined ? "" : ` (${round(a.value)}${a.now === null || a.now === undefined ? "" : `, now ${round(a.now)}`})`;
      const txt = `Bed ${r.bed.id} — ${a.technical ? "TECHNICAL ALARM, " : ""}${a.priority.toUpperCase()} priority: ${what}${val}${a.state ? ` — ${a.state}` : ""}`;
      if (row.text.textContent !== txt) row.text.textContent = txt;
      const cls = `alarm alarm-${a.priority}${a.technical ? " alarm-technical" : ""}${a.acked ? " acked" : ""}`;
      if (row.li.className !== cls) row.li.className = cls;
      const data = { priority: a.priority, bed: r.bed.id, ack: a.ack || (this.pending.has(r.key) ? "sending" : "") };
      if (a.alarm_id !== undefined) data.alarmId = String(a.alarm_id);
      for (const [k, v] of Object.entries(data)) if (row.li.dataset[k] !== v) row.li.dataset[k] = v;
      const canAck = a.alarm_id !== undefined && !a.acked && a.ack !== "sending";
      if (row.btn.hidden !== (a.alarm_id === undefined)) row.btn.hidden = a.alarm_id === undefined;
      if (row.btn.disabled !== !canAck) row.btn.disabled = !canAck;
      const label = a.acked ? "Acknowledged" : a.ack === "sending" ? "Acknowledging…" : a.ack === "failed" ? "Acknowledge again" : "Acknowledge";
      if (row.btn.textContent !== label) row.btn.textContent = label;
      const aria = `Acknowledge ${a.priority} priority alarm ${what} of bed ${r.bed.id}`;
      if (row.btn.getAttribute("aria-label") !== aria) row.btn.setAttribute("aria-label", aria);
      const stTxt = a.ackText || "";
      if (row.st.textContent !== stTxt) row.st.textContent = stTxt;
      if (list.children[i] !== row.li) list.insertBefore(row.li, list.children[i] || null);
    });
  }

  ack(key) {
    const row = this.rows.get(key);
    const bed = row && this.beds.get(row.bed);
    if (!row || !bed || row.a.alarm_id === undefined) return;
    this.pending.set(key, now());
    row.btn.disabled = true;
    row.btn.textContent = "Acknowledging…";
    this.metrics.acks.push({ bed: row.bed, alarm_id: row.a.alarm_id });
    bed.frame.contentWindow.postMessage({ type: "p2pmed-ack", alarm_id: row.a.alarm_id }, location.origin);
    const next = [...$("st-alarm-list").querySelectorAll("button.ack:not(:disabled):not([hidden])")].find((b) => b !== row.btn);
    (next || $("st-alarm-list")).focus();
  }

  // ---- sound, audio pause, tab title ----
  signalling() {
    let best = null;
    for (const bed of this.beds.values()) {
      for (const a of (bed.snap && bed.snap.alarms) || []) {
        if (a.acked) continue;
        if (!best || RANK[a.priority] > RANK[best]) best = a.priority;
      }
    }
    return best;
  }

  renderSignals() {
    const t = now();
    const prio = this.signalling();
    this.sound.update(prio, t);
    const left = this.sound.pausedLeft(t);
    const btn = $("st-audio-pause");
    const label = left > 0 ? "Resume alarm audio" : `Pause alarm audio for ${AUDIO_PAUSE / 60} min`;
    if (btn.textContent !== label) btn.textContent = label;
    btn.setAttribute("aria-pressed", String(left > 0));
    const secs = Math.ceil(left);
    const mmss = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
    const state = left > 0 ? `Alarm audio paused — ${mmss} left`
      : prio && prio !== "low" && this.sound.blocked ? "Alarm sound is off in this browser: press “Turn on alarm sound”"
      : prio && prio !== "low" ? `Alarm sounding (${prio} priority)` : "";
    const el2 = $("st-audio-state");
    if (el2.textContent !== state) el2.textContent = state;
    $("st-audio-unlock").hidden = !this.sound.blocked;
    const base = `Ward ${this.ward} — p2pmed central station`;
    const title = prio ? `${prio === "high" ? "‼ HIGH ALARM" : prio === "medium" ? "! MEDIUM ALARM" : "low alarm"} — ${base}` : base;
    if (document.title !== title) document.title = title;
  }

  // ---- full view of one bed, and back ----
  openFull(id) {
    const bed = this.beds.get(id);
    if (!bed) return;
    if (this.full) this.closeFull({ focus: false });
    this.full = bed;
    $("st-grid").classList.add("has-full");
    bed.tile.classList.add("full");
    for (const b of this.beds.values()) if (b !== bed) b.tile.inert = true;
    bed.frame.inert = false;
    bed.frame.removeAttribute("tabindex");
    bed.open.hidden = true;
    bed.frame.contentWindow.postMessage({ type: "p2pmed-view", full: true }, location.origin);
    $("st-back").hidden = false;
    $("st-back").textContent = `Back to ward (from bed ${id})`;
    $("st-back").focus();
    announce(`Full view of bed ${id}`);
  }

  closeFull({ focus = true } = {}) {
    const bed = this.full;
    if (!bed) return;
    this.full = null;
    $("st-grid").classList.remove("has-full");
    bed.tile.classList.remove("full");
    for (const b of this.beds.values()) b.tile.inert = false;
    bed.frame.inert = true;
    bed.frame.setAttribute("tabindex", "-1");
    bed.open.hidden = false;
    bed.frame.contentWindow.postMessage({ type: "p2pmed-view", full: false }, location.origin);
    $("st-back").hidden = true;
    if (focus) bed.open.focus();
  }
}
