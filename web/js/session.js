// Session core of the page (docs/protocol.md sections 1-4): handshake (responder), AEAD, replay window,
// per-class seq with cumulative + SACK acks, in-order exactly-once delivery, chunking, PING/PONG per path,
// retransmission on whichever path is alive. I/O is injected: `transmit(pathId, bytes)`; time is `now()`.
import {
  FrameType, MessageClass, Flags, FrameError, StateError, CryptoError, DEFAULT_CHUNK, decode, encode, concat,
  bytesEqual, HANDSHAKE_TYPES, toHex, fromHex,
} from "./frame.js";
import { SendKeys, RecvKeys, ReplayWindow } from "./crypto.js";
import { Handshake } from "./handshake.js";

export const CLASSES = [0, 1, 2, 3, 4];
const MAX_RANGES = 32;
const MAX_BUFFERED = 4096; // out-of-order frames held per class
const MAX_MESSAGE = 64 * 1024 * 1024;
const PN_BLOCK = 4096;
export const FIRST_PN = 4; // pn 0..3 belong to the plaintext handshake frames

export function splitBatch(p) {
  const out = [];
  const dv = new DataView(p.buffer, p.byteOffset, p.length);
  let o = 0;
  while (o < p.length) {
    if (o + 4 > p.length) return null;
    const n = dv.getUint32(o);
    o += 4;
    if (o + n > p.length) return null;
    out.push(p.slice(o, o + n));
    o += n;
  }
  return out.length ? out : null;
}

function u64be(v) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v));
  return b;
}

export function encodeAck(largestPn, ackDelayUs, entries) {
  const parts = [];
  const head = new Uint8Array(13);
  const dv = new DataView(head.buffer);
  dv.setBigUint64(0, BigInt(largestPn));
  dv.setUint32(8, Math.min(ackDelayUs, 0xffffffff));
  head[12] = entries.length;
  parts.push(head);
  for (const e of entries) {
    const h = new Uint8Array(10);
    h[0] = e.cls;
    new DataView(h.buffer).setBigUint64(1, BigInt(e.cumulative));
    h[9] = e.ranges.length;
    parts.push(h);
    for (const [s, t] of e.ranges) parts.push(u64be(s), u64be(t));
  }
  return concat(...parts);
}

// Same checks as p2pmed/core/reliability.py decode_ack: anything malformed is frame/payload.
// Values past 2^53 stay BigInt (as frame.js does); they compare correctly with Numbers.
export function decodeAck(p) {
  const dv = new DataView(p.buffer, p.byteOffset, p.length);
  const fail = (d) => { throw new FrameError("payload", d); };
  const num = (o) => { const v = dv.getBigUint64(o); return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v; };
  if (p.length < 13) fail("truncated ACK");
  const largestPn = num(0);
  const ackDelayUs = dv.getUint32(8);
  const n = p[12];
  let o = 13;
  const entries = [];
  const seen = new Set();
  for (let i = 0; i < n; i++) {
    if (o + 10 > p.length) fail("truncated ACK");
    const cls = p[o];
    const cumulative = num(o + 1);
    const nr = p[o + 9];
    if (cls > 4 || seen.has(cls) || nr > MAX_RANGES) fail("bad ACK class entry");
    seen.add(cls);
    o += 10;
    const ranges = [];
    for (let j = 0; j < nr; j++) {
      if (o + 16 > p.length) fail("truncated ACK");
      const s = num(o), t = num(o + 8);
      if (!(cumulative <= s && s < t)) fail("bad ACK range");
      ranges.push([s, t]);
      o += 16;
    }
    entries.push({ cls, cumulative, ranges });
  }
  if (o !== p.length) fail("trailing bytes after ACK");
  return { largestPn, ackDelayUs, entries };
}

// Payload checks of PING, PONG, CLOSE and PATH_BIND (docs/protocol.md section 4), as the
// node does them: a malformed one is frame/payload.
export function checkControl(type, pt) {
  const bad = (d) => { throw new FrameError("payload", d); };
  if ((type === FrameType.PING || type === FrameType.PONG) && pt.length !== 8) bad("PING/PONG payload is 8 bytes");
  if (type === FrameType.CLOSE && pt.length < 2) bad("CLOSE payload too short");
  if (type === FrameType.PATH_BIND && (pt.length < 1 || pt.length !== 1 + pt[0] + 64)) bad("malformed PATH_BIND");
}

class Path {
  constructor(id, now) {
    this.id = id;
    this.alive = false;
    this.lastRx = -Infinity;
    this.added = now;
    this.rtt = null;
    this.pings = new Map(); // ping id -> sent time
    this.sent = 0;
    this.answered = 0;
    this.history = []; // 1 answered / 0 lost, last 40 pings
    this.nextPing = now;
  }
  get loss() {
    if (!this.history.length) return 0;
    return this.history.filter((x) => x === 0).length / this.history.length;
  }
}

export class Session {
  constructor({ sessionId, identity, transmit, now, onEvent, onPathBind = null, heartbeatInterval = 0.25, pathDeadAfter = 1.0 }) {
    this.sessionId = sessionId;
    // (payload, pathId) => void for a received, well-formed PATH_BIND; without one the payload is checked
    // against setFingerprints (tests). A throw rejects the frame with the error's kind/reason.
    this.onPathBind = onPathBind;
    this.identity = identity;
    this.transmit = transmit;
    this.now = now;
    this.onEvent = onEvent;
    this.heartbeatInterval = heartbeatInterval;
    this.pathDeadAfter = pathDeadAfter;
    this.localFp = new Uint8Array(32);
    this.remoteFp = new Uint8Array(32);
    this.paths = new Map();
    this.preferred = null;
    this.state = "HANDSHAKING";
    this.hs = null;
    this.send = null;
    this.recv = null;
    this.replay = new ReplayWindow();
    this.pn = FIRST_PN;
    this.recent = new Map(); // pn & 1023 -> crc of accepted frames: copies from another path are not attacks
    this.hsFrames = new Map(); // handshake type -> our frame, resent byte-identical
    this.nextSeq = CLASSES.map(() => 0);
    this.unacked = CLASSES.map(() => new Map()); // seq -> {flags, plaintext, sentAt, path, tries}
    this.queue = []; // DATA waiting for keys
    this.cumulative = CLASSES.map(() => 0);
    this.buffered = CLASSES.map(() => new Map()); // seq -> {flags, plaintext, ts, path}
    this.partial = CLASSES.map(() => null); // {start, chunks, size} of a message being reassembled
    this.receivedAny = CLASSES.map(() => false);
    this.largestPn = -1;
    this.largestPnAt = 0;
    this.ackPending = false;
    this.rto = 0.3;
    this.srtt = null;
    this.stats = { frames_received: 0, frames_sent: 0, messages_delivered: 0, duplicates: 0, retransmits: 0, frames_rejected: 0 };
    this.chain = Promise.resolve();
    this.closed = false;
    this.persist = null; // (snapshot) => void: keeps the state for resuming after a page reload
    this.pnCeiling = FIRST_PN;
  }

  // Packet numbers are reserved in blocks so a resumed page never reuses one (same as the node).
  _takePn() {
    const pn = this.pn++;
    if (pn >= this.pnCeiling) {
      this.pnCeiling = pn + PN_BLOCK;
      this._persist();
    }
    return pn;
  }

  // Everything needed to continue this session after a reload of the tab: keys, packet numbers,
  // what was delivered (cumulative), what was received above it (and acked as such), unacked sends.
  snapshot() {
    if (!this.send || !this.recv) return null;
    const frames = (m) => [...m].map(([seq, f]) => [seq, f.flags, toHex(f.pt), f.ts ?? 0]);
    return {
      v: 1, sessionId: this.sessionId, sas: this.result.sas, peerFingerprint: this.result.peer_fingerprint,
      send: this.send.snapshot(), recv: this.recv.snapshot(), pn: this.pnCeiling,
      replayHighest: this.replay.highest, cumulative: this.cumulative, receivedAny: this.receivedAny,
      buffered: this.buffered.map(frames),
      partial: this.partial.map((p) => (p ? { start: p.start, chunks: p.chunks.map(toHex) } : null)),
      nextSeq: this.nextSeq, unacked: this.unacked.map(frames),
    };
  }

  static async resume(opts, snap) {
    const s = new Session(opts);
    const now = s.now();
    s.send = await SendKeys.restore(snap.send, now);
    s.recv = await RecvKeys.restore(snap.recv);
    s.result = { sas: snap.sas, peer_fingerprint: snap.peerFingerprint };
    s.hs = { complete: true, commit: null };
    s.state = "ESTABLISHED";
    s.pn = s.pnCeiling = snap.pn;
    s.replay.highest = s.replay.floor = snap.replayHighest;
    s.cumulative = snap.cumulative.slice();
    s.receivedAny = snap.receivedAny.slice();
    s.buffered = snap.buffered.map((fs) => new Map(fs.map(([seq, flags, pt, ts]) => [seq, { flags, pt: fromHex(pt), ts, path: "resumed" }])));
    s.partial = snap.partial.map((p) => (p ? { start: p.start, chunks: p.chunks.map(fromHex), size: p.chunks.reduce((n, c) => n + c.length / 2, 0) } : null));
    s.nextSeq = snap.nextSeq.slice();
    s.unacked = snap.unacked.map((fs) => new Map(fs.map(([seq, flags, pt, ts]) => [seq, { flags, pt: fromHex(pt), ts: ts || undefined, sentAt: -Infinity, path: null, tries: 1 }])));
    s._takePn(); // reserve a fresh block at once
    return s;
  }

  _persist() {
    if (this.persist && this.send && !this.closed) this.persist(this.snapshot());
  }

  setFingerprints(local, remote) {
    this.localFp = local;
    this.remoteFp = remote;
  }

  addPath(id, { preferred = false } = {}) {
    if (!this.paths.has(id)) this.paths.set(id, new Path(id, this.now()));
    if (preferred) this.preferred = id;
  }

  removePath(id) {
    const p = this.paths.get(id);
    if (!p) return;
    this.paths.delete(id);
    if (p.alive) this.onEvent({ type: "path-down", path: id });
    // Unacked frames last sent on it go out again on a live path at once.
    for (const m of this.unacked) for (const u of m.values()) if (u.path === id) u.sentAt = -Infinity;
    this._kick();
  }

  pathStatus(id) {
    const p = this.paths.get(id);
    return p ? { alive: p.alive, rtt: p.rtt, loss: p.loss, lastRx: p.lastRx } : null;
  }

  // Best live path: the preferred one if alive, else any alive one, else the preferred/any known one.
  bestPath() {
    const pref = this.preferred && this.paths.get(this.preferred);
    if (pref && pref.alive) return pref.id;
    for (const p of this.paths.values()) if (p.alive) return p.id;
    if (pref) return pref.id;
    const first = this.paths.keys().next();
    return first.done ? null : first.value;
  }

  reject(kind, reason, pathId) {
    this.stats.frames_rejected++;
    const key = `frames_rejected_${reason}`;
    this.stats[key] = (this.stats[key] || 0) + 1;
    this.onEvent({ type: "frame-rejected", kind, reason, path: pathId });
  }

  // Feed one received frame. Never throws: bad input is counted.
  receive(data, pathId) {
    const bytes = new Uint8Array(data);
    const arrived = performance.now();
    this.chain = this.chain.then(() => this._receive(bytes, pathId, arrived)).catch((e) => {
      if (e && e.kind) this.reject(e.kind, e.reason, pathId);
      else this.reject("state", "internal", pathId), console.error(e);
    });
    return this.chain;
  }

  async _receive(bytes, pathId, arrived) {
    if (this.closed) return;
    const { header, payload } = decode(bytes);
    const now = this.now();
    if (HANDSHAKE_TYPES.has(header.type)) return this._handshake(header, payload, pathId, bytes);
    if (!this.recv) throw new StateError("no_keys", "encrypted frame before the handshake completed");
    if (typeof header.pn !== "number") throw new CryptoError("replay", "pn out of range");
    const crc = bytes.subarray(bytes.length - 4).join(",");
    try {
      this.replay.check(header.pn);
    } catch (e) {
      if (this.recent.get(header.pn & 1023) === `${header.pn}:${crc}`) {
        this.stats.duplicate_frames = (this.stats.duplicate_frames || 0) + 1; // same frame on another path
        this._markAlive(pathId, now);
        return;
      }
      throw e;
    }
    const pt = await this.recv.open(header, bytes, now);
    this.replay.accept(header.pn);
    this.recent.set(header.pn & 1023, `${header.pn}:${crc}`);
    this.stats.frames_received++;
    this._markAlive(pathId, now);
    checkControl(header.type, pt);
    switch (header.type) {
      case FrameType.DATA: return this._onData(header, pt, pathId, now, arrived);
      case FrameType.ACK: return this._onAck(decodeAck(pt), now);
      case FrameType.PING:
        return this._sendControl(FrameType.PONG, pt, pathId);
      case FrameType.PONG: return this._onPong(pt, pathId, now);
      case FrameType.CLOSE: {
        const code = (pt[0] << 8) | pt[1];
        const reason = new TextDecoder().decode(pt.subarray(2));
        this.closed = true;
        this.state = "CLOSED";
        this.onEvent({ type: "closed", code, reason });
        return;
      }
      case FrameType.PATH_BIND: return this._onPathBind(pt, pathId);
      default: throw new FrameError("type", "unexpected type");
    }
  }

  _markAlive(pathId, now) {
    const p = this.paths.get(pathId);
    if (!p) return;
    p.lastRx = now;
    if (!p.alive) {
      p.alive = true;
      this.onEvent({ type: "path-up", path: pathId });
      // Anything unacked goes out again on the better path right away.
      if (pathId === this.preferred) for (const m of this.unacked) for (const u of m.values()) if (u.path !== pathId) u.sentAt = -Infinity;
    }
  }

  async _handshake(header, payload, pathId, bytes) {
    if (this.hs && this.hs.complete && header.type === FrameType.HS_COMMIT && !(this.hs.commit && bytesEqual(payload, this.hs.commit))) {
      // Maybe the patient node restarted its side (a new session with a new handshake), maybe a forgery:
      // the owner decides, this session stays as it is.
      this.onEvent({ type: "rehandshake", frame: bytes, path: pathId });
      return;
    }
    // As the node: class, flags, seq and ack of a handshake frame are ignored (not authenticated,
    // not in the transcript); the pn must be the step number.
    if (header.pn !== header.type - FrameType.HS_COMMIT) throw new FrameError("pn", "handshake frame with a wrong pn");
    if (!this.hs) {
      if (header.type !== FrameType.HS_COMMIT) throw new CryptoError("handshake", "handshake must start with HS_COMMIT");
      this.hs = new Handshake(this.identity, { sessionId: this.sessionId, localFp: this.localFp, remoteFp: this.remoteFp });
    }
    let reply;
    try {
      reply = await this.hs.receive(header.type, payload);
    } catch (e) {
      if (e.reason && e.reason !== "handshake") {
        // A failed check refuses the session.
        this.state = "FAILED";
        this.onEvent({ type: "handshake-failed", reason: e.reason });
      }
      throw e;
    }
    const now = this.now();
    this._markAlive(pathId, now);
    if (reply) {
      const [type, body] = reply;
      let frame = this.hsFrames.get(type);
      if (!frame) {
        const pn = type === FrameType.HS_REPLY ? 1 : 3;
        frame = encode({ type, flags: 0, cls: 0, epoch: 0, pn, seq: 0, ack: 0, timestamp_us: nowUs(), length: body.length }, body);
        this.hsFrames.set(type, frame);
      }
      this.transmit(pathId, frame);
    }
    if (this.hs.complete && !this.send) {
      const r = this.hs.result;
      this.send = await SendKeys.create(r.send_chain, { now });
      this.recv = await RecvKeys.create(r.recv_chain);
      this.state = "ESTABLISHED";
      this.result = r;
      this._persist();
      this.onEvent({ type: "handshake-completed", sas: r.sas, peerFingerprint: r.peer_fingerprint });
      const q = this.queue;
      this.queue = [];
      for (const [cls, data, resolve] of q) resolve(this.sendMessage(cls, data));
    }
  }

  async _onData(h, pt, pathId, now, arrived) {
    const cls = h.cls;
    // largest_pn of an ACK is the largest pn of a DATA frame received (the node takes its RTT
    // sample from it; a PING's pn would give none)
    if (h.pn > this.largestPn) { this.largestPn = h.pn; this.largestPnAt = now; }
    this.receivedAny[cls] = true;
    if (cls === MessageClass.CRITICAL) this.ackAllPaths = true;
    this._scheduleAck();
    if (h.seq < this.cumulative[cls] || this.buffered[cls].has(h.seq)) {
      this.stats.duplicates++;
      return;
    }
    if (h.seq >= this.cumulative[cls] + MAX_BUFFERED) throw new StateError("window", "seq too far ahead");
    this.buffered[cls].set(h.seq, { flags: h.flags, pt, ts: h.timestamp_us, path: pathId, arrived });
    this._onPeerAck(cls, h.ack);
    // Deliver in seq order.
    const buf = this.buffered[cls];
    while (buf.has(this.cumulative[cls])) {
      const seq = this.cumulative[cls];
      const f = buf.get(seq);
      buf.delete(seq);
      this.cumulative[cls] = seq + 1;
      this._deliver(cls, seq, f);
    }
    this._persist();
  }

  // Same rules as p2pmed/core/reliability.py RecvStream.messages.
  _deliver(cls, seq, f) {
    const base = { type: "message", cls, seq, sentUs: f.ts, path: f.path, arrived: f.arrived };
    const FL = Flags.FIRST | Flags.LAST;
    const bad = (why) => { this.partial[cls] = null; this.reject("state", why, f.path); };
    const part = this.partial[cls];
    if (f.flags === FL) {
      if (part) return bad("chunk");
      return this._emit({ ...base, data: f.pt });
    }
    if (f.flags === Flags.BATCH) {
      if (part) return bad("chunk");
      const msgs = splitBatch(f.pt);
      if (!msgs) return bad("batch");
      for (const data of msgs) this._emit({ ...base, data });
      return;
    }
    if (f.flags === Flags.FIRST) {
      this.partial[cls] = { start: seq, chunks: [f.pt], size: f.pt.length };
      if (part) this.reject("state", "chunk", f.path);
      return;
    }
    if (f.flags & (Flags.BATCH | Flags.FIRST) || !part) return bad("chunk");
    part.chunks.push(f.pt);
    part.size += f.pt.length;
    if (part.size > MAX_MESSAGE) return bad("oversized");
    if (f.flags === Flags.LAST) {
      this.partial[cls] = null;
      this._emit({ ...base, data: concat(...part.chunks) });
    }
  }

  ackPoint(cls) {
    const part = this.partial[cls];
    return part ? part.start : this.cumulative[cls];
  }

  _emit(ev) {
    this.stats.messages_delivered++;
    this.onEvent(ev);
  }

  _scheduleAck() {
    if (this.ackPending) return;
    this.ackPending = true;
    setTimeout(() => { this.ackPending = false; this._sendAck(); }, 0);
  }

  ackEntries() {
    const entries = [];
    for (const cls of CLASSES) {
      if (!this.receivedAny[cls]) continue;
      const above = [...this.buffered[cls].keys()].sort((a, b) => b - a);
      const ranges = [];
      for (const s of above) {
        const last = ranges[ranges.length - 1];
        if (last && last[0] === s + 1) last[0] = s;
        else ranges.push([s, s + 1]);
      }
      const part = this.partial[cls];
      if (part && part.start < this.cumulative[cls]) ranges.push([part.start, this.cumulative[cls]]);
      entries.push({ cls, cumulative: this.ackPoint(cls), ranges: ranges.slice(0, MAX_RANGES) });
    }
    return entries;
  }

  _sendAck() {
    if (!this.send || this.closed) return;
    const delay = Math.max(0, Math.round((this.now() - this.largestPnAt) * 1e6));
    const body = encodeAck(Math.max(0, this.largestPn), delay, this.ackEntries());
    const live = [...this.paths.values()].filter((p) => p.alive).map((p) => p.id);
    const targets = this.ackAllPaths && live.length ? live : [this.bestPath()];
    this.ackAllPaths = false;
    this._sendControl(FrameType.ACK, body, targets);
  }

  _onPeerAck(cls, cumulative) {
    const m = this.unacked[cls];
    if (!m.size) return;
    for (const seq of m.keys()) if (seq < cumulative) { m.delete(seq); this.onEvent({ type: "acked", cls, seq }); }
  }

  _onAck(ack, now) {
    for (const e of ack.entries) {
      this._onPeerAck(e.cls, e.cumulative);
      const m = this.unacked[e.cls];
      for (const [s, t] of e.ranges) for (const seq of [...m.keys()]) if (seq >= s && seq < t) { m.delete(seq); this.onEvent({ type: "acked", cls: e.cls, seq }); }
    }
  }

  _onPong(pt, pathId, now) {
    const p = this.paths.get(pathId);
    if (!p) return;
    const id = Number(new DataView(pt.buffer, pt.byteOffset, 8).getBigUint64(0));
    const sent = p.pings.get(id);
    if (sent === undefined) return;
    p.pings.delete(id);
    const rtt = now - sent;
    p.rtt = p.rtt === null ? rtt : 0.8 * p.rtt + 0.2 * rtt;
    p.history.push(1);
    if (p.history.length > 40) p.history.shift();
    this.srtt = p.rtt;
    this.rto = Math.min(2, Math.max(0.2, 3 * p.rtt + 0.05));
    this.onEvent({ type: "path-quality", path: pathId, rtt: p.rtt, loss: p.loss });
  }

  _onPathBind(pt, pathId) {
    if (this.onPathBind) return this.onPathBind(pt, pathId);
    const n = pt[0];
    const id = new TextDecoder().decode(pt.subarray(1, 1 + n));
    const fpLocal = pt.subarray(1 + n, 33 + n);
    const fpRemote = pt.subarray(33 + n, 65 + n);
    const ok = bytesEqual(fpLocal, this.remoteFp) && bytesEqual(fpRemote, this.localFp);
    this.onEvent({ type: "path-bind", path: id, ok });
    if (!ok) throw new CryptoError("fingerprint", "PATH_BIND fingerprints differ from the SDP");
  }

  // Our PATH_BIND (payload from bind.js encodePathBind), sealed once and sent on each of pathIds.
  sendPathBind(body, pathIds) {
    return this._sendControl(FrameType.PATH_BIND, body, pathIds);
  }

  // Control frames (ACK, PING, PONG, CLOSE): one sealed frame, sent on one path or several.
  async _sendControl(type, body, pathIds) {
    const targets = (Array.isArray(pathIds) ? pathIds : [pathIds]).filter((p) => p != null);
    if (!this.send || !targets.length) return;
    const header = { type, flags: 0, cls: 0, epoch: 0, pn: this._takePn(), seq: 0, ack: 0, timestamp_us: nowUs(), length: 0 };
    const frame = await this.send.seal(header, body);
    for (const p of targets) {
      this.stats.frames_sent++;
      this.transmit(p, frame);
    }
  }

  // Queue an application message; returns the seq of its last chunk. Resolves once sent (not acked).
  sendMessage(cls, data) {
    if (!this.send) return new Promise((resolve) => this.queue.push([cls, data, resolve]));
    const chunks = [];
    for (let o = 0; o < data.length || o === 0; o += DEFAULT_CHUNK) chunks.push(data.subarray(o, o + DEFAULT_CHUNK));
    let seq = 0;
    const ts = nowUs(); // header timestamp: when the message was queued, kept on every resend
    const jobs = chunks.map((c, i) => {
      let flags = 0;
      if (i === 0) flags |= Flags.FIRST;
      if (i === chunks.length - 1) flags |= Flags.LAST;
      seq = this.nextSeq[cls]++;
      const u = { flags, pt: c, ts, sentAt: this.now(), path: null, tries: 0 };
      this.unacked[cls].set(seq, u);
      this._persist();
      return this._transmitData(cls, seq, u);
    });
    return Promise.all(jobs).then(() => seq);
  }

  // CRITICAL frames go out on every live path (the copies share one pn; the receiver drops the second).
  async _transmitData(cls, seq, u) {
    const best = this.bestPath();
    if (best == null) return;
    const live = [...this.paths.values()].filter((p) => p.alive).map((p) => p.id);
    const targets = cls === MessageClass.CRITICAL && live.length > 1 ? live : [best];
    u.path = best;
    u.paths = targets;
    u.sentAt = this.now();
    u.tries++;
    const header = { type: FrameType.DATA, flags: u.flags, cls, epoch: 0, pn: this._takePn(), seq, ack: this.ackPoint(cls), timestamp_us: u.ts ?? nowUs(), length: 0 };
    const frame = await this.send.seal(header, u.pt);
    for (const p of targets) {
      this.stats.frames_sent++;
      this.transmit(p, frame);
    }
  }

  _kick() { setTimeout(() => this.tick(), 0); }

  // Heartbeats, liveness and retransmission; call every ~50 ms.
  async tick() {
    if (this.closed) return;
    const now = this.now();
    for (const p of this.paths.values()) {
      if (p.alive && now - p.lastRx > this.pathDeadAfter) {
        p.alive = false;
        this.onEvent({ type: "path-down", path: p.id });
        for (const m of this.unacked) for (const u of m.values()) if (u.path === p.id) u.sentAt = -Infinity;
        this._kick();
      }
      for (const [id, t] of p.pings) if (now - t > 2) { p.pings.delete(id); p.history.push(0); if (p.history.length > 40) p.history.shift(); }
      if (this.send && now >= p.nextPing) {
        p.nextPing = now + this.heartbeatInterval;
        const id = Math.floor(Math.random() * 2 ** 48);
        p.pings.set(id, now);
        await this._sendControl(FrameType.PING, u64be(id), p.id);
      }
    }
    if (!this.send) return;
    if (this.send.needsRatchet(now)) await this.send.ratchet(now);
    for (const cls of CLASSES) {
      for (const [seq, u] of this.unacked[cls]) {
        if (now - u.sentAt >= this.rto) {
          if (u.tries > 0) this.stats.retransmits++;
          await this._transmitData(cls, seq, u);
        }
      }
    }
  }

  close(code = 0, reason = "") {
    if (this.closed) return;
    const body = concat(new Uint8Array([(code >> 8) & 0xff, code & 0xff]), new TextEncoder().encode(reason));
    this._sendControl(FrameType.CLOSE, body, this.bestPath());
    this.closed = true;
    this.state = "CLOSED";
  }
}

export function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}
