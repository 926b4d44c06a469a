// Signaling WebSocket client: join, JSON messages, relay envelopes (docs/protocol.md section 5),
// reconnect with the same endpoint id, using the server's resume token once it has one (so the page
// can rejoin after its join token expired). Fatal refusals are reported once and stop it.
const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
// After a first join, only these refusals (and every "token-..." one) are final; the rest
// (rate limits, capacity) are retried. See FATAL_CODES in p2pmed/signaling_client.py.
const FATAL_CODES = new Set(["wrong-session", "role-mismatch", "forbidden"]);
// A limit or capacity of the moment: retried before a first join too (many clinicians behind one
// hospital address at a shift change), within the tries below; see BUSY_CODES in
// p2pmed/signaling_client.py.
const BUSY_CODES = new Set(["too-many-joins", "rate-limited", "server-full", "session-full"]);
const MAX_FIRST_TRIES = 6; // connections that failed before a first join, then it gives up
// A connection not joined this long after it was opened (an overloaded or stuck server, a
// connect that hangs) is closed and tried again, as the node's --join-timeout does.
const JOIN_TIMEOUT_MS = 10000;
const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

export function encodeEnvelope(peerId, frame) {
  if (!ID_RE.test(peerId)) throw new Error(`invalid endpoint id ${peerId}`);
  const id = enc.encode(peerId);
  const out = new Uint8Array(1 + id.length + frame.length);
  out[0] = id.length;
  out.set(id, 1);
  out.set(frame, 1 + id.length);
  return out;
}

// Returns [peerId, frame] or null when malformed.
export function decodeEnvelope(bytes) {
  if (bytes.length < 2) return null;
  const n = bytes[0];
  if (n === 0 || bytes.length < 1 + n) return null;
  let id;
  try { id = dec.decode(bytes.subarray(1, 1 + n)); } catch { return null; }
  if (!ID_RE.test(id)) return null;
  return [id, bytes.subarray(1 + n)];
}

export class SignalingClient {
  constructor({ wsUrl, token, endpointId, session = null, onMessage, onRelay, onState, onFatal,
    resumeToken = null, onResumeToken = null }) {
    this.wsUrl = wsUrl;
    this.token = token;
    this.resumeToken = resumeToken;
    this.onResumeToken = onResumeToken;
    this.joins = 0;
    this.endpointId = endpointId;
    this.session = session;
    this.onMessage = onMessage;
    this.onRelay = onRelay;
    this.onState = onState;
    this.onFatal = onFatal;
    this.ws = null;
    this.joined = false;
    this.everJoined = false;
    this.closing = false;
    this.backoff = 100;
    this.paused = new Set();
    this.envelopesRejected = 0;
    this.failures = 0;
    this.busy = null; // the last connection's BUSY_CODES refusal of a first join: [code, message]
    this.joinTimeouts = 0;
    this.errorCloses = []; // when the server closed us for too many bad messages (last 2 min)
  }

  start() { this._connect(); }

  _connect() {
    if (this.closing) return;
    const ws = new WebSocket(this.wsUrl);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let reconnectAfter = null;
    let refused = null; // the server is closing us for our own messages: retrying repeats it
    let busy = null; // this connection's join refused for a limit of the moment
    const token = this.resumeToken || this.token;
    let joinTimer = setTimeout(() => {
      joinTimer = null;
      if (this.ws !== ws || this.joined) return;
      this.joinTimeouts++;
      ws.close(); // onclose reconnects (or, after repeated failures, reports "unreachable")
    }, JOIN_TIMEOUT_MS);
    const stopJoinTimer = () => {
      if (joinTimer !== null) clearTimeout(joinTimer);
      joinTimer = null;
    };
    ws.onopen = () => {
      const join = { type: "join", token, endpoint_id: this.endpointId };
      if (this.session) join.session = this.session;
      ws.send(JSON.stringify(join));
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") {
        const env = decodeEnvelope(new Uint8Array(ev.data));
        if (!env) { this.envelopesRejected++; return; }
        this.onRelay(env[0], env[1]);
        return;
      }
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (!msg || typeof msg !== "object") return;
      if (msg.type === "joined" || msg.type === "resume-token") {
        const t = msg.type === "joined" ? msg.resume_token : msg.token;
        if (typeof t === "string" && t.length > 0 && t.length <= 4096 && t !== this.resumeToken) {
          this.resumeToken = t;
          if (this.onResumeToken) this.onResumeToken(t);
        }
        if (msg.type === "resume-token") return;
      }
      if (msg.type === "joined") {
        stopJoinTimer();
        this.joins++;
        this.joined = true;
        this.everJoined = true;
        this.backoff = 100;
        this.paused.clear();
        this.onState(true, msg);
      } else if (msg.type === "reconnect") {
        reconnectAfter = Math.max(0, Math.min(30000, Number(msg.after_ms) || 500));
      } else if (msg.type === "backpressure") {
        if (msg.paused) this.paused.add(String(msg.to)); else this.paused.delete(String(msg.to));
      } else if (msg.type === "error" && msg.code === "too-many-errors") {
        refused = String(msg.message || "");
      } else if (msg.type === "error" && !this.joined) {
        const code = String(msg.code || "error");
        const tokenError = code.startsWith("token-");
        if (tokenError && token !== this.token) { // the resume token was refused: try the join token
          this.resumeToken = null;
          reconnectAfter = 0;
          return;
        }
        if (this.everJoined && !tokenError && !FATAL_CODES.has(code)) return; // retried on close
        if (!this.everJoined && BUSY_CODES.has(code)) { // retried on close, up to MAX_FIRST_TRIES
          busy = [code, String(msg.message || "")];
          return;
        }
        this.closing = true;
        this.onFatal(String(msg.code || "error"), String(msg.message || ""));
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = (ev) => {
      stopJoinTimer();
      const was = this.joined;
      this.joined = false;
      this.ws = null;
      if (was) this.onState(false, null);
      if (this.closing) return;
      if (refused !== null) {
        const t = performance.now();
        this.errorCloses = this.errorCloses.filter((x) => t - x < 120000);
        this.errorCloses.push(t);
        if (this.errorCloses.length >= 3) {
          this.closing = true;
          this.onFatal("too-many-errors", refused);
          return;
        }
      }
      this.busy = busy;
      if (!this.everJoined && ++this.failures >= MAX_FIRST_TRIES) {
        this.closing = true;
        if (this.busy) this.onFatal(this.busy[0], this.busy[1]);
        else this.onFatal("unreachable", "The signaling server cannot be reached.");
        return;
      }
      const delay = reconnectAfter ?? this.backoff;
      this.backoff = Math.min(2000, this.backoff * 2);
      setTimeout(() => this._connect(), delay * (0.8 + 0.4 * Math.random()));
    };
  }

  sendJson(msg) {
    if (!this.joined || !this.ws) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  sendRelay(peerId, frame) {
    if (!this.joined || !this.ws || this.paused.has(peerId)) return false;
    if (this.ws.bufferedAmount > 4 * 1024 * 1024) return false; // the session retransmits
    this.ws.send(encodeEnvelope(peerId, frame));
    return true;
  }

  close() {
    this.closing = true;
    if (this.ws) {
      try { this.ws.send(JSON.stringify({ type: "leave" })); } catch { /* closing anyway */ }
      this.ws.close();
    }
  }
}
