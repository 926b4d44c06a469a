// DOM rendering: numeric tiles, alarm list, connection status, error and waiting views.
import { PRIORITY_NAME, STATE_NAME, AlarmState, isDeviceAlarm, isTechnicalAlarm } from "./vitals.js";

export const $ = (id) => document.getElementById(id);

// The one screen-reader channel (the alarm list itself is not a live region): texts announced in
// the same moment are read together, none is dropped.
let pendingTexts = [];
export function announce(text) {
  pendingTexts.push(text);
  if (pendingTexts.length > 1) return;
  const el = $("sr-announce");
  el.textContent = "";
  setTimeout(() => { el.textContent = pendingTexts.join(". "); pendingTexts = []; }, 30);
}

export function showView(name) {
  for (const v of ["view-error", "view-waiting", "main"]) $(v).hidden = v !== name;
}

const ERROR_HINTS = {
  "too-many-errors": "Reload the page to join again. If it happens again, call the patient's site by phone and tell the service operator (the server log names the refused messages).",
  "token-expired": "This join link has expired. Ask the patient's care team for a new link.",
  "token-missing": "The address has no join token. Open the full link you were given (it ends in #token=…).",
  "token-malformed": "The join link is damaged or incomplete. Copy the whole link again.",
  "token-signature": "The join link was not issued by this server.",
  "token-revoked": "This join link was revoked.",
  "token-audience": "The join link belongs to another p2pmed server.",
  "token-issuer": "The join link belongs to another p2pmed server.",
  "token-in-use": "Each join link works in one browser tab at a time. Switch to the tab or window where this session is already open. If you closed that tab, reopening it from the browser's recently closed tabs (Ctrl+Shift+T) restores it; otherwise ask the patient's care team for a new link.",
  "token-not-yet-valid": "This join link is not valid yet. Check the computer's clock.",
  "wrong-session": "This join link is for a different session than the one requested.",
  "role-mismatch": "This join link is for a different role.",
  "insecure-context": "Open the page over HTTPS (or on localhost). Browsers only allow the camera, microphone and the encryption this page needs in a secure context.",
  "unsupported": "This browser lacks the WebCrypto or WebRTC features p2pmed needs (X25519, Ed25519, AES-GCM, RTCPeerConnection). Use a current Chromium-based browser.",
  "unreachable": "Check the network connection and the server address, then reload.",
  "handshake-failed": "The end-to-end security check failed. Someone may be interfering with the connection. Do not continue; call the patient's site.",
};

// What happened, in words; the server's own text is kept below as detail.
const ERROR_MESSAGES = {
  "too-many-errors": "The server closed this page's connection three times in two minutes for messages it refused, so the page stopped reconnecting. The session is not live here.",
  "token-in-use": "This join link is already open in another tab or window, so it cannot be used here too.",
};

// A key fingerprint ("p2pmed:958e 5bfc ..."), one unbreakable span per group: it wraps only between
// groups, and its text stays the same string.
export function showFingerprint(el, fp) {
  const parts = [];
  String(fp).split(" ").forEach((g, i) => {
    if (i) parts.push(" ");
    const s = document.createElement("span");
    s.className = "grp";
    s.textContent = g;
    parts.push(s);
  });
  el.replaceChildren(...parts);
}

export function showError(code, message) {
  $("error-code").textContent = code;
  const plain = ERROR_MESSAGES[code];
  $("error-message").textContent = plain || message || "The session cannot be opened.";
  $("error-detail").textContent = plain && message ? `Server said: ${message}` : "";
  $("error-detail").hidden = !(plain && message);
  $("error-hint").textContent = ERROR_HINTS[code] || (code.startsWith("token-") ? "The join link is not valid. Ask for a new link." : "");
  $("conn").className = "conn conn-lost";
  $("conn-state").textContent = "Not connected";
  showView("view-error");
  document.title = "p2pmed — cannot join";
  $("error-title").focus?.();
}

// ---- numeric tiles ----
const TILES = ["hr", "spo2", "bp", "temp", "rr"];
const STALE_AFTER = 3; // seconds without NUMERICS (sent at 1 Hz) before the values are greyed

export class Tiles {
  constructor() {
    this.last = null;
    this.at = -Infinity;
  }
  update(values, now) {
    this.last = values;
    this.at = now;
    const fmt = (v, d) => (v === null || v === undefined ? "--" : v.toFixed(d));
    $("val-hr").textContent = fmt(values.hr, 0);
    $("val-spo2").textContent = fmt(values.spo2, 0);
    $("val-bp").textContent = `${fmt(values.sys, 0)}/${fmt(values.dia, 0)}`;
    $("val-temp").textContent = fmt(values.temp, 1);
    $("val-rr").textContent = fmt(values.rr, 0);
    this.render(now, true);
  }
  render(now, live) {
    const stale = !live || now - this.at > STALE_AFTER;
    for (const k of TILES) {
      const tile = $(`tile-${k}`);
      const mark = $(`mark-${k}`);
      let state;
      let text = "";
      const v = this.last;
      const absent = !v || (k === "bp" ? v.sys === null && v.dia === null : v[k] === null);
      const suspect = v && (k === "bp" ? v.sys_suspect || v.dia_suspect : v[`${k}_suspect`]);
      if (!v) state = "nodata";
      else if (stale) { state = "stale"; text = live ? "STALE" : "NOT LIVE"; }
      else if (absent) { state = "nodata"; text = "no value"; }
      else if (suspect) { state = "suspect"; text = "? SUSPECT"; }
      else state = "live";
      if (tile.dataset.state !== state) tile.dataset.state = state;
      if (mark.textContent !== text) mark.textContent = text;
      const label = tile.querySelector(".label").textContent.replace(/\s+/g, " ").trim();
      const alarm = tile.dataset.alarm ? `, ${tile.dataset.alarm} priority alarm` : "";
      tile.setAttribute("aria-label", `${label} ${tile.querySelector(".value").textContent}${text ? " " + text : ""}${alarm}`);
    }
  }
}

// ---- alarms ----
// Alarm condition codes start with the parameter (p2pmed/vitals/alarms.py: "hr-high", "spo2-low", ...).
const NUMERIC_OF = { hr: "hr", spo2: "spo2", rr: "rr", temp: "temp", sys: "sys", dia: "dia", bp: "sys" };
const TILE_OF = { hr: "hr", spo2: "spo2", rr: "rr", temp: "temp", sys: "bp", dia: "bp" };
const numericOf = (condition) => NUMERIC_OF[String(condition).split("-")[0]] || null;
export const TILES_ALL = ["hr", "spo2", "bp", "temp", "rr"];
export class AlarmList {
  constructor(onAck) {
    this.onAck = onAck;
    this.items = new Map(); // key -> {li, alarm}
    this.storeKey = null;
    this.earlyAcks = new Map(); // alarm id -> [who, time_us] of an ALARM_ACK that came before its alarm
  }

  // The list survives a reload of the tab: alarms already delivered are not sent again.
  restore(storeKey, fresh, onAckSeq) {
    for (const it of this.items.values()) it.li.remove();
    this.items.clear();
    this.storeKey = storeKey;
    if (fresh) { sessionStorage.removeItem(storeKey); return; }
    let saved = [];
    try { saved = JSON.parse(sessionStorage.getItem(storeKey) || "[]"); } catch { saved = []; }
    for (const r of saved) {
      this.upsert(r.alarm, { quiet: true });
      const it = this.items.get(String(r.alarm.alarm_id));
      if (!it || !r.ack) continue;
      if (r.by && r.by !== "you") this.ackedBy(it.alarm.alarm_id, r.by, r.byAtUs, { quiet: true });
      if (r.ack === "delivered" && r.mine !== false) { this.markAcked(it, true); continue; }
      if (r.ack === "delivered") continue;
      if (r.ack === "sending") this.markSending(it);
      else this.markFailed(it, r.why || "not confirmed");
      if (r.ackSeq !== undefined) { it.ackSeq = r.ackSeq; onAckSeq(r.ackSeq, it); }
    }
  }

  _save() {
    if (!this.storeKey) return;
    const rows = [...this.items.values()].filter((it) => !it.technical).map((it) => ({
      alarm: it.alarm, ack: it.ack || null, why: it.why, ackSeq: it.ackSeq, by: it.by, byAtUs: it.byAtUs, mine: !!it.mine,
    }));
    try {
      sessionStorage.setItem(this.storeKey, JSON.stringify(rows, (k, v) => (typeof v === "bigint" ? Number(v) : v)));
    } catch { /* quota */ }
  }

  setAckSeq(it, seq) { it.ackSeq = seq; this._save(); }

  // One announcement per alarm event: new, priority or state changed, cleared; a repeat says nothing.
  upsert(alarm, { quiet = false } = {}) {
    const key = String(alarm.alarm_id);
    const prioName = (a) => (PRIORITY_NAME[a.priority] || "high");
    if (alarm.state === AlarmState.CLEARED) {
      const it = this.items.get(key);
      if (it) { it.li.remove(); this.items.delete(key); if (!quiet) announce(`Alarm cleared: ${alarm.condition}`); }
      this._save();
      return;
    }
    let it = this.items.get(key);
    const before = it ? it.alarm : null;
    if (!quiet) {
      const p = prioName(alarm).replace(/^./, (c) => c.toUpperCase());
      const value = alarm.value === null || alarm.value === undefined ? "" : `, value ${Math.round(alarm.value * 10) / 10}`;
      if (!before) announce(`${p} priority alarm: ${alarm.condition}${value}`);
      else if (before.priority !== alarm.priority || before.state !== alarm.state) {
        announce(`${p} priority alarm ${alarm.condition} is now ${STATE_NAME[alarm.state]}`);
      }
    }
    if (!it) {
      const li = document.createElement("li");
      const text = document.createElement("span");
      text.className = "text";
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "ack";
      btn.textContent = "Acknowledge";
      btn.addEventListener("click", () => {
        this.onAck(alarm.alarm_id, it);
        this._focusAfterAck(it);
      });
      const st = document.createElement("span");
      st.className = "ack-state";
      li.append(text, st, btn);
      it = { li, text, btn, st, alarm, acked: false };
      this.items.set(key, it);
      $("alarm-list").prepend(li);
    }
    it.alarm = alarm;
    this._render(it);
    this._sort();
    this._save();
    const early = this.earlyAcks.get(key);
    if (early) { this.earlyAcks.delete(key); this.ackedBy(alarm.alarm_id, early[0], early[1], { quiet }); }
  }

  technical(key, active, text) {
    const k = `tech:${key}`;
    const it = this.items.get(k);
    if (!active) {
      if (it) { it.li.remove(); this.items.delete(k); announce(`Technical alarm over: ${text}`); }
      return;
    }
    if (it) return;
    announce(`High priority technical alarm: ${text}`);
    const li = document.createElement("li");
    li.className = "alarm alarm-high alarm-technical";
    li.dataset.priority = "high";
    li.dataset.key = k;
    li.textContent = `TECHNICAL ALARM (high): ${text}`;
    this.items.set(k, { li, technical: true });
    $("alarm-list").prepend(li);
  }

  // The alarm stays signalled (flashing, sounding) until the patient node confirmed the
  // acknowledgement: "sending" and "failed" are not acknowledged.
  markSending(it) {
    this._ackState(it, "sending", "Acknowledging…", true, "sending…");
  }

  markFailed(it, why) {
    if (it.ack === "delivered") return;
    it.why = why;
    this._ackState(it, "failed", "Acknowledge again", false, `✗ not delivered: ${why}`);
  }

  // Our own acknowledgement, confirmed by the patient node.
  markAcked(it, delivered) {
    if (!delivered) return this.markSending(it);
    it.mine = true;
    if (!it.by) { it.by = "you"; it.byAtUs = null; }
    this._ackState(it, "delivered", "Acknowledged", true, this._ackText(it));
  }

  // Another clinician acknowledged (the patient node forwards the first ALARM_ACK of an alarm to
  // every other clinician): the alarm stops being signalled here too, and the list says who.
  ackedBy(alarmId, who, timeUs, { quiet = false } = {}) {
    const key = String(alarmId);
    const it = this.items.get(key);
    if (!it) {
      if (this.earlyAcks.size < 1000) this.earlyAcks.set(key, [who, timeUs]);
      return;
    }
    if (it.by && it.by !== "you") return;
    if (!it.mine) { it.by = who; it.byAtUs = timeUs; }
    else if (it.by === "you") return; // ours reached the patient node first
    if (!quiet) announce(`Alarm ${it.alarm.condition} acknowledged by another clinician (${who})`);
    this._ackState(it, "delivered", "Acknowledged", true, this._ackText(it));
  }

  _ackText(it) {
    const at = (us) => (typeof us === "number" && us > 0 ? ` at ${new Date(us / 1000).toLocaleTimeString()}` : "");
    if (it.by === "you" || !it.by) return "✓ acknowledged by you — delivered to patient node";
    const first = `✓ acknowledged by another clinician (${it.by})${at(it.byAtUs)}`;
    return it.mine ? `${first}; yours delivered too` : first;
  }

  _ackState(it, state, label, disabled, status) {
    it.ack = state;
    it.acked = state === "delivered";
    it.btn.disabled = disabled;
    it.btn.textContent = label;
    it.st.textContent = status;
    it.li.dataset.ack = state;
    it.li.dataset.ackDelivered = String(it.acked);
    this._render(it);
    this._save();
  }

  _render(it) {
    const a = it.alarm;
    const prio = PRIORITY_NAME[a.priority] || "high";
    const device = isDeviceAlarm(a);
    it.li.className = `alarm alarm-${prio}${isTechnicalAlarm(a) ? " alarm-technical" : ""}${device ? " alarm-device" : ""}${it.acked ? " acked" : ""}`;
    it.li.dataset.source = device ? "device" : "p2pmed";
    it.li.dataset.priority = prio;
    it.li.dataset.alarmId = String(a.alarm_id);
    it.li.dataset.state = STATE_NAME[a.state];
    const r = (v) => Math.round(v * 10) / 10;
    const now = it.now === undefined || it.now === null ? "" : `, now ${r(it.now)}`;
    const value = a.value === null ? (now ? ` (${now.slice(2)})` : "") : ` (${r(a.value)}${now})`;
    const from = device ? "DEVICE ALARM, " : "";
    it.text.textContent = `${from}${prio.toUpperCase()} priority: ${a.condition}${value} — ${STATE_NAME[a.state]}`;
    it.btn.setAttribute("aria-label", `Acknowledge ${prio} priority alarm ${a.condition}`);
  }

  // The value now, from the latest NUMERICS, next to the value that raised each alarm.
  updateNow(values) {
    for (const it of this.items.values()) {
      if (it.technical) continue;
      const key = numericOf(it.alarm.condition);
      const v = key ? values[key] : undefined;
      if (v === undefined || v === it.now) continue;
      it.now = v;
      this._render(it);
    }
  }

  // Tiles of parameters in alarm: {tile: {priority, acked}} (the highest priority per tile).
  tileAlarms() {
    const rank = { high: 3, medium: 2, low: 1 };
    const out = {};
    for (const it of this.items.values()) {
      if (it.technical) continue;
      const tile = TILE_OF[numericOf(it.alarm.condition)];
      if (!tile) continue;
      const prio = PRIORITY_NAME[it.alarm.priority] || "high";
      const cur = out[tile];
      if (!cur || rank[prio] > rank[cur.priority]) out[tile] = { priority: prio, acked: it.acked };
      else if (prio === cur.priority) cur.acked = cur.acked && it.acked;
    }
    return out;
  }

  // The highest priority still signalled: present, not cleared, acknowledgement not confirmed.
  signalling() {
    const rank = { high: 3, medium: 2, low: 1 };
    let best = null;
    for (const it of this.items.values()) {
      const prio = it.technical ? "high" : PRIORITY_NAME[it.alarm.priority];
      if (!it.technical && it.ack === "delivered") continue;
      if (!best || rank[prio] > rank[best]) best = prio;
    }
    return best;
  }

  // The pressed button is now disabled: focus goes to the next alarm to acknowledge, or the list.
  _focusAfterAck(it) {
    const next = [...$("alarm-list").querySelectorAll("button.ack:not(:disabled)")].find((b) => b !== it.btn);
    (next || $("alarm-list")).focus();
  }

  _sort() {
    const list = $("alarm-list");
    const rank = { high: 0, medium: 1, low: 2 };
    const lis = [...list.children].sort((x, y) => rank[x.dataset.priority] - rank[y.dataset.priority]);
    for (const li of lis) list.append(li);
  }
}

// ---- the bedside device (--source hl7-mllp: / sdc:): who it is, and its other metrics ----
const PROTOCOL_NAME = { hl7: "HL7 v2", sdc: "IEEE 11073 SDC" };
export class DevicePanel {
  constructor() {
    this.metrics = new Map(); // MDC code -> li
  }
  status(d) {
    $("device").hidden = false;
    const about = [d.manufacturer, d.model, d.serial && `serial ${d.serial}`].filter(Boolean).join(", ");
    const state = d.state === 0 ? "connected" : "LOST — no data from the device";
    const el = $("device-id");
    el.textContent = `${PROTOCOL_NAME[d.protocol] || d.protocol} ${d.device_id}${about ? ` (${about})` : ""}: ${state}`;
    el.dataset.state = d.state === 0 ? "connected" : "lost";
  }
  metric(m) {
    $("device").hidden = false;
    let li = this.metrics.get(m.code);
    if (!li) {
      li = document.createElement("li");
      this.metrics.set(m.code, li);
      $("device-metrics").append(li);
    }
    const invalid = (m.flags & 1) === 1;
    li.dataset.code = String(m.code);
    li.dataset.invalid = String(invalid);
    const value = Math.round(m.value * 100) / 100;
    li.textContent = `${m.label || `MDC ${m.code}`} ${value} ${m.unit}${invalid ? " — INVALID (device)" : ""}`;
  }
}
