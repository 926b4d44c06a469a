// Frame format v1 (docs/protocol.md section 1). Mirrors p2pmed/core/frame.py.
import { crc32 } from "./crc32.js";

export const VERSION = 1;
export const HEADER_SIZE = 44;
export const CRC_SIZE = 4;
export const TAG_SIZE = 16;
export const MAX_CHUNK = 63 * 1024; // largest DATA plaintext a receiver accepts
export const DEFAULT_CHUNK = 16 * 1024; // what this page cuts its own messages into
export const MAX_PAYLOAD = MAX_CHUNK + TAG_SIZE;
export const MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE;
export const MIN_FRAME = HEADER_SIZE + CRC_SIZE;

export const FrameType = Object.freeze({
  DATA: 0x01, ACK: 0x02, PING: 0x03, PONG: 0x04, CLOSE: 0x05, PATH_BIND: 0x06,
  HS_COMMIT: 0x10, HS_REPLY: 0x11, HS_REVEAL: 0x12, HS_CONFIRM: 0x13,
});
const KNOWN_TYPES = new Set(Object.values(FrameType));
export const HANDSHAKE_TYPES = new Set([0x10, 0x11, 0x12, 0x13]);
export const MessageClass = Object.freeze({ CRITICAL: 0, HIGH: 1, MEDIUM: 2, LOW: 3, BACKGROUND: 4 });
export const Flags = Object.freeze({ NONE: 0, FIRST: 1, LAST: 2, BATCH: 4 });
const DEFINED_FLAGS = 7;

export class ProtocolError extends Error {
  constructor(kind, reason, detail = "") {
    super(detail ? `${kind}/${reason}: ${detail}` : `${kind}/${reason}`);
    this.kind = kind;
    this.reason = reason;
  }
}
export class FrameError extends ProtocolError {
  constructor(reason, detail) { super("frame", reason, detail); }
}
export class CryptoError extends ProtocolError {
  constructor(reason, detail) { super("crypto", reason, detail); }
}
export class StateError extends ProtocolError {
  constructor(reason, detail) { super("state", reason, detail); }
}
export class CodecError extends ProtocolError {
  constructor(reason, detail) { super("codec", reason, detail); }
}

const U64_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
function getU64(dv, off) {
  const v = dv.getBigUint64(off);
  return v <= U64_SAFE ? Number(v) : v; // values past 2^53 stay BigInt (only hostile input)
}
function setU64(dv, off, v) { dv.setBigUint64(off, BigInt(v)); }

// header: {type, flags, cls, epoch, pn, seq, ack, timestamp_us, length}
export function packHeader(h, out = new Uint8Array(HEADER_SIZE), off = 0) {
  const dv = new DataView(out.buffer, out.byteOffset + off, HEADER_SIZE);
  dv.setUint8(0, VERSION);
  dv.setUint8(1, h.type);
  dv.setUint8(2, h.flags);
  dv.setUint8(3, h.cls);
  dv.setUint32(4, h.epoch);
  setU64(dv, 8, h.pn);
  setU64(dv, 16, h.seq);
  setU64(dv, 24, h.ack);
  setU64(dv, 32, h.timestamp_us);
  dv.setUint32(40, h.length);
  return out;
}

export function encode(h, payload) {
  if (h.length !== payload.length) throw new Error("header length does not match payload");
  if (payload.length > MAX_PAYLOAD) throw new Error("payload too large for one frame");
  const out = new Uint8Array(HEADER_SIZE + payload.length + CRC_SIZE);
  packHeader(h, out, 0);
  out.set(payload, HEADER_SIZE);
  const end = HEADER_SIZE + payload.length;
  new DataView(out.buffer).setUint32(end, crc32(out, 0, end));
  return out;
}

// Returns {header, payload}; payload is a view into `data`. Throws FrameError with a stable reason.
export function decode(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  const n = bytes.length;
  if (n < MIN_FRAME) throw new FrameError("truncated", `frame of ${n} bytes is shorter than ${MIN_FRAME}`);
  if (n > MAX_FRAME) throw new FrameError("oversized", `frame of ${n} bytes exceeds ${MAX_FRAME}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, n);
  if (crc32(bytes, 0, n - CRC_SIZE) !== dv.getUint32(n - CRC_SIZE)) throw new FrameError("crc", "CRC-32 mismatch");
  const version = dv.getUint8(0);
  if (version !== VERSION) throw new FrameError("version", `unsupported frame version ${version}`);
  const length = dv.getUint32(40);
  if (length !== n - MIN_FRAME) throw new FrameError("length", `length field ${length} != payload size ${n - MIN_FRAME}`);
  const type = dv.getUint8(1);
  if (!KNOWN_TYPES.has(type)) throw new FrameError("type", `unknown frame type 0x${type.toString(16)}`);
  const cls = dv.getUint8(3);
  if (cls > MessageClass.BACKGROUND) throw new FrameError("class", `unknown message class ${cls}`);
  const flags = dv.getUint8(2);
  if (flags & ~DEFINED_FLAGS) throw new FrameError("flags", `undefined flag bits 0x${flags.toString(16)}`);
  const epoch = dv.getUint32(4);
  if (HANDSHAKE_TYPES.has(type) !== (epoch === 0)) throw new FrameError("epoch", "handshake frames use epoch 0 and only they do");
  const header = {
    type, flags, cls, epoch,
    pn: getU64(dv, 8), seq: getU64(dv, 16), ack: getU64(dv, 24), timestamp_us: getU64(dv, 32),
    length,
  };
  return { header, payload: bytes.subarray(HEADER_SIZE, n - CRC_SIZE) };
}

export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
export const utf8 = (s) => new TextEncoder().encode(s);
export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}
export const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
export function fromHex(s) {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}
