// Application messages (docs/protocol.md section 7). Mirrors p2pmed/vitals/codec.py.
import { CodecError } from "./frame.js";

export const Kind = Object.freeze({ NUMERICS: 1, WAVEFORM: 2, ALARM: 3, ALARM_ACK: 4, CONTROL: 5, METRIC: 6, DEVICE: 7 });
export const VERSION = 1;
export const MAX_MESSAGE = 16 * 1024;
export const MAX_SAMPLES = 4096;
const ABSENT = 0xffff;
const VALID_FLAGS = 0x3f07;
export const PARAMS = [
  { key: "hr", scale: 0.1 }, { key: "sys", scale: 0.1 }, { key: "dia", scale: 0.1 },
  { key: "spo2", scale: 0.01 }, { key: "temp", scale: 0.01 }, { key: "rr", scale: 0.1 },
];
export const Status = Object.freeze({ CRITICAL: 1, SENSOR_FAULT: 2, LOW_BATTERY: 4 });
export const Priority = Object.freeze({ LOW: 1, MEDIUM: 2, HIGH: 3 });
export const PRIORITY_NAME = { 1: "low", 2: "medium", 3: "high" };
export const AlarmState = Object.freeze({ ACTIVE: 0, LATCHED: 1, ESCALATED: 2, CLEARED: 3 });
export const STATE_NAME = { 0: "active", 1: "latched", 2: "escalated", 3: "cleared" };
export const Category = Object.freeze({ PHYSIOLOGICAL: 0, TECHNICAL: 1, DEVICE_PHYSIOLOGICAL: 2, DEVICE_TECHNICAL: 3 });
export const isDeviceAlarm = (a) => a.category === 2 || a.category === 3;
export const isTechnicalAlarm = (a) => a.category === 1 || a.category === 3;
const ECG_LEADS = new Set(["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6", "MLII", "MLIII"]);

export function rateLimits(signal) {
  if (ECG_LEADS.has(signal)) return [250, 1000];
  if (signal === "PLETH") return [100, 125];
  throw new CodecError("signal", `unknown signal ${signal}`);
}
export const isEcg = (signal) => ECG_LEADS.has(signal);

// ignoreBOM: a leading U+FEFF is part of the text (Python keeps it too).
const dec = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    this.pos = 0;
  }
  need(n) {
    if (this.pos + n > this.b.length) throw new CodecError("truncated", `need ${n} bytes at offset ${this.pos}`);
  }
  u8() { this.need(1); return this.b[this.pos++]; }
  u16() { this.need(2); const v = this.dv.getUint16(this.pos); this.pos += 2; return v; }
  u32() { this.need(4); const v = this.dv.getUint32(this.pos); this.pos += 4; return v; }
  u64() {
    this.need(8);
    const v = this.dv.getBigUint64(this.pos);
    this.pos += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  f32() { this.need(4); const v = this.dv.getFloat32(this.pos); this.pos += 4; return v; }
  f64opt(reason) {
    this.need(8);
    const hi = this.dv.getUint32(this.pos);
    const lo = this.dv.getUint32(this.pos + 4);
    const v = this.dv.getFloat64(this.pos);
    this.pos += 8;
    if (hi === 0x7ff80000 && lo === 0) return null;
    if (!Number.isFinite(v)) throw new CodecError(reason, "non-finite float");
    return v;
  }
  take(n) { this.need(n); const out = this.b.subarray(this.pos, this.pos + n); this.pos += n; return out; }
  ascii(reason) {
    const raw = this.take(this.u8());
    for (const c of raw) if (c < 0x20 || c > 0x7e) throw new CodecError(reason, "not printable ASCII");
    return String.fromCharCode(...raw);
  }
  // Returns [text, byte length].
  utf8(reason) {
    const raw = this.take(this.u8());
    try { return [dec.decode(raw), raw.length]; } catch {
      throw new CodecError(reason, "invalid UTF-8");
    }
  }
  end() {
    if (this.pos !== this.b.length) throw new CodecError("trailing", `${this.b.length - this.pos} bytes after the message`);
  }
}

const check = (cond, reason, detail = "") => { if (!cond) throw new CodecError(reason, detail); };
const CODE_RE = /^[a-z0-9][a-z0-9._-]{0,31}$/;
const WHO_RE = /^[A-Za-z0-9_-]{1,64}$/;
const UNIT_RE = /^[\x21-\x7e]{1,8}$/;
const CONTROL_RE = /[\x00-\x1f\x7f-\x9f]/; // C0, DEL, C1
const U64_MAX = (1n << 64n) - 1n;

function checkText([text, size], reason, min, max) {
  check(size >= min && size <= max, reason, `${size} bytes`);
  check(!CONTROL_RE.test(text), reason, "control character");
  return text;
}

// Same order of checks as p2pmed/vitals/codec.py: every field of the message is read first
// (truncated, and the per-field checks the reader does), then the fields are validated in
// declaration order, then trailing bytes. tests/vectors/wire_v1.json pins the order.
// Returns {kind: "numerics"|"waveform"|"alarm"|"alarm_ack"|"control"|"patient_status"|"metric"|"device", ...} or throws
// CodecError.
export function decode(bytes) {
  check(bytes.length <= MAX_MESSAGE, "oversized", `${bytes.length} bytes`);
  check(bytes.length >= 2, "truncated", "shorter than kind + version");
  const kind = bytes[0];
  check(kind >= 1 && kind <= 7, "kind", `unknown kind 0x${kind.toString(16)}`);
  check(bytes[1] === VERSION, "version", `unsupported version ${bytes[1]}`);
  const r = new Reader(bytes);
  r.pos = 2;
  let msg;
  if (kind === Kind.NUMERICS) {
    const timestamp_us = r.u64();
    const pid = r.utf8("patient");
    const raw = PARAMS.map(() => r.u16());
    const flags = r.u16();
    const patient_id = checkText(pid, "patient", 1, 64);
    check((flags & ~VALID_FLAGS) === 0, "flags", "undefined flag bits");
    const values = {};
    PARAMS.forEach((p, i) => {
      const suspect = (flags & (0x100 << i)) !== 0;
      check(!(suspect && raw[i] === ABSENT), "flags", `suspect bit on absent ${p.key}`);
      values[p.key] = raw[i] === ABSENT ? null : Math.round(raw[i] * p.scale * 100) / 100;
      values[p.key + "_suspect"] = suspect;
    });
    msg = { kind: "numerics", timestamp_us, patient_id, values, flags };
  } else if (kind === Kind.WAVEFORM) {
    const signal = r.ascii("signal");
    const sample_rate = r.u16();
    const t0_us = r.u64();
    const first_seq = r.u64();
    const scale = r.f32();
    const unit = r.ascii("unit");
    const n = r.u16();
    check(n >= 1 && n <= MAX_SAMPLES, "count", `${n} samples`);
    r.need(2 * n);
    const samples = new Int16Array(n);
    for (let i = 0; i < n; i++) samples[i] = r.dv.getInt16(r.pos + 2 * i);
    r.pos += 2 * n;
    check(signal.length <= 16, "signal", "bad id");
    const [lo, hi] = rateLimits(signal);
    check(sample_rate >= lo && sample_rate <= hi, "rate", `${signal} needs ${lo}..${hi} Hz`);
    check(BigInt(first_seq) + BigInt(n) - 1n <= U64_MAX, "seq", "sample seq overflows u64");
    check(Number.isFinite(scale) && scale > 0, "scale", "scale must be a finite float > 0");
    check(UNIT_RE.test(unit), "unit", unit);
    msg = { kind: "waveform", signal, sample_rate, t0_us, first_seq, scale, unit, samples };
  } else if (kind === Kind.ALARM) {
    const alarm_id = r.u64();
    const priority = r.u8();
    const state = r.u8();
    const category = r.u8();
    const time_us = r.u64();
    const value = r.f64opt("value");
    const condition = r.ascii("condition");
    const pid = r.utf8("patient");
    check(priority >= 1 && priority <= 3, "priority", String(priority));
    check(state <= 3, "state", String(state));
    check(category <= 3, "category", String(category));
    check(CODE_RE.test(condition), "condition", condition);
    const patient_id = checkText(pid, "patient", 1, 64);
    msg = { kind: "alarm", alarm_id, priority, state, category, time_us, value, condition, patient_id };
  } else if (kind === Kind.ALARM_ACK) {
    const alarm_id = r.u64();
    const time_us = r.u64();
    const who = r.ascii("who");
    check(WHO_RE.test(who), "who", who);
    msg = { kind: "alarm_ack", alarm_id, time_us, who };
  } else if (kind === Kind.METRIC) {
    msg = metric(r);
  } else if (kind === Kind.DEVICE) {
    msg = device(r);
  } else {
    const command = r.u8();
    const request_id = r.u32();
    if (command === 1 || command === 2) {
      const signal = r.ascii("signal");
      if (signal !== "") rateLimits(signal);
      msg = { kind: "control", command, request_id, signal };
    } else if (command === 3) {
      const rule = r.ascii("rule");
      const limit = r.f64opt("limit");
      check(CODE_RE.test(rule), "rule", rule);
      msg = { kind: "control", command, request_id, rule, limit };
    } else if (command === 4) {
      const text = checkText(r.utf8("text"), "text", 0, 255);
      msg = { kind: "control", command, request_id, text };
    } else if (command === PATIENT_STATUS) {
      msg = patientStatus(r, request_id);
    } else throw new CodecError("command", `unknown command ${command}`);
  }
  r.end();
  return msg;
}

// PATIENT_STATUS (CONTROL command 5, codec.PatientStatus): the patient's label, FHIR subject, HR source
// and whether its stream still runs. Python's order: stream, then each text as it is read (encoding;
// subject and hr_source ASCII), trailing bytes, then label control characters, subject, hr_source.
export const PATIENT_STATUS = 5;
export const Stream = Object.freeze({ STREAMING: 0, ENDED: 1 });
const SUBJECT_RE = /^[\x21-\x7e]{0,255}$/;
const HR_SOURCE_RE = /^[a-z0-9-]{0,32}$/;

function patientStatus(r, request_id) {
  const stream = r.u8();
  check(stream === Stream.STREAMING || stream === Stream.ENDED, "stream", String(stream));
  const [label] = r.utf8("label");
  const ascii = (reason) => {
    const raw = r.take(r.u8());
    check(raw.every((c) => c < 0x80), reason, "not ASCII");
    return String.fromCharCode(...raw);
  };
  const subject = ascii("subject");
  const hr_source = ascii("hr-source");
  r.end();
  check(!CONTROL_RE.test(label), "label", "control character");
  check(SUBJECT_RE.test(subject), "subject", subject);
  check(HR_SOURCE_RE.test(hr_source), "hr-source", hr_source);
  return { kind: "patient_status", request_id, stream, label, subject, hr_source };
}

export function encodeAlarmAck(alarmId, timeUs, who) {
  check(/^[A-Za-z0-9_-]{1,64}$/.test(who), "who", who);
  const out = new Uint8Array(2 + 16 + 1 + who.length);
  const dv = new DataView(out.buffer);
  out[0] = Kind.ALARM_ACK;
  out[1] = VERSION;
  dv.setBigUint64(2, BigInt(alarmId));
  dv.setBigUint64(10, BigInt(timeUs));
  out[18] = who.length;
  for (let i = 0; i < who.length; i++) out[19 + i] = who.charCodeAt(i);
  return out;
}

// METRIC (0x06): a device numeric with its MDC code; flags bit 0 = INVALID (shown flagged, never
// alarmed on). Python's order: all fields read, then value (canonical NaN), flags, unit, label, patient.
const METRIC_UNIT_RE = /^[\x21-\x7e]{1,32}$/;
const METRIC_LABEL_RE = /^[\x21-\x7e]{0,64}$/;
function metric(r) {
  const time_us = r.u64();
  const code = r.u32();
  const value = r.f64opt("value");
  const flags = r.u8();
  const unit = r.ascii("unit");
  const label = r.ascii("label");
  const pid = r.utf8("patient");
  check(value !== null, "value", "a metric needs a value");
  check((flags & ~1) === 0, "flags", "undefined flag bits");
  check(METRIC_UNIT_RE.test(unit), "unit", unit);
  check(METRIC_LABEL_RE.test(label), "label", label);
  const patient_id = checkText(pid, "patient", 1, 64);
  return { kind: "metric", time_us, code, value, flags, unit, label, patient_id };
}

// DEVICE (0x07): which bedside device feeds the patient node and which patient it reports.
export const DeviceState = Object.freeze({ CONNECTED: 0, LOST: 1 });
const PROTOCOL_RE = /^[a-z0-9-]{1,16}$/;
function device(r) {
  const time_us = r.u64();
  const state = r.u8();
  const protocol = r.ascii("protocol");
  const texts = [0, 1, 2, 3, 4].map(() => r.utf8("device"));
  check(state <= 1, "state", String(state));
  check(PROTOCOL_RE.test(protocol), "protocol", protocol);
  const [device_id, model, serial, manufacturer, patient_reported] = texts.map((t, i) => checkText(t, "device", i === 0 ? 1 : 0, i === 0 ? 255 : 64));
  return { kind: "device", time_us, state, protocol, device_id, model, serial, manufacturer, patient_reported };
}
