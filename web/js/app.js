// The clinician page: joins from `{server}/join#token=...`, answers the patient's WebRTC offer, runs the
// p2pmed session over the direct DataChannels and the signaling relay, and shows the vitals.
import { Identity } from "./identity.js";
import { Session, nowUs } from "./session.js";
import { SignalingClient } from "./signaling.js";
import { decode as decodeVitals, encodeAlarmAck, isEcg, Stream } from "./vitals.js";
import { SweepTrace } from "./waveform.js";
import { $, announce, showView, showError, showFingerprint, Tiles, AlarmList, TILES_ALL, DevicePanel } from "./ui.js";
import { FrameType, CryptoError, MessageClass } from "./frame.js";
import { checkSdp, SdpError } from "./sdp.js";
import { checkPin, getPin, markMismatch, markVerified, rememberLabel } from "./pins.js";
import { AlarmSound } from "./audio.js";
import { Binder, decodePathBind, dtlsFingerprints, dtlsTransport, encodePathBind } from "./bind.js";
import { TileBridge } from "./tilebridge.js";

const CHANNELS = [["control", 0], ["vitals", 1], ["bulk", 2]];
const GRADES = ["normal", "mild", "moderate", "severe"];
const now = () => performance.now() / 1000;
const AUDIO_PAUSE = 120; // seconds of audio pause (IEC 60601-1-8 AUDIO PAUSED)
const ACK_TIMEOUT = 10; // seconds for the patient node to confirm an alarm acknowledgement

// Test and benchmark hooks (read-only figures; no secrets).
const metrics = {
  firstEcgDrawnMs: null, latenciesUs: [], pageUs: [], delivered: {}, rejected: 0, rejectedReasons: {},
  codecRejected: 0, ecgSourceGaps: 0, ecgSamples: 0, lastNumerics: null, alarmAcks: [], path: null,
  signalingJoins: 0, sdpRejected: 0, sdpRejectedReasons: {}, binds: null,
};
window.p2pmed = { metrics, state: "starting" };

function gradeOf(rtt, loss) {
  let g = 0;
  const lossT = [0.01, 0.05, 0.1], latT = [0.2, 0.5, 1.0];
  for (let i = 0; i < 3; i++) if (loss > lossT[i] || rtt > latT[i]) g = i + 1;
  return GRADES[g];
}

// The token travels in the fragment (never sent to the server in the URL). It is kept in sessionStorage
// for reloads of this tab and removed from the address bar and history.
function parseFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (TILE) return { token: params.get("token") || "", session: null };
  let token = params.get("token") || "";
  let session = params.get("session") || null;
  if (token) {
    sessionStorage.setItem("p2pmed-join", JSON.stringify({ token, session }));
    history.replaceState(null, "", location.pathname);
  } else {
    try { ({ token, session } = JSON.parse(sessionStorage.getItem("p2pmed-join") || "{}")); } catch { /* none */ }
  }
  return { token: token || "", session: session || null };
}

// A bed tile of the station page (station.js): the station's endpoint id and the bed come in the
// fragment; the station's sessionStorage keys (shared with same-origin frames) are left alone.
const TILE = (() => {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const eid = params.get("eid"), bed = params.get("bed");
  if (window.parent === window || params.get("tile") !== "1" || !eid || !bed) return null;
  return { eid, bed };
})();

function endpointId() {
  if (TILE) return TILE.eid;
  let id = sessionStorage.getItem("p2pmed-endpoint");
  if (!id) {
    const b = crypto.getRandomValues(new Uint8Array(6));
    id = "web-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem("p2pmed-endpoint", id);
  }
  return id;
}

// Claims of a JWT, unverified (the server verifies); {} when unreadable.
function claims(token) {
  try {
    const p = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const v = JSON.parse(atob(p + "=".repeat((4 - (p.length % 4)) % 4)));
    return v && typeof v === "object" ? v : {};
  } catch { return {}; }
}

// The resume token kept for this tab, if it descends from this join token and endpoint: after a
// reload the page can rejoin even when the join token in the URL has expired.
function storedResume(key, token, eid) {
  const t = sessionStorage.getItem(key);
  if (!t) return null;
  const mine = claims(t), join = claims(token);
  const same = mine.eid === eid && mine.root === join.jti && mine.sub === join.sub && mine.role === join.role;
  return same ? t : null;
}

class App {
  constructor(identity, token, session) {
    this.identity = identity;
    this.token = token;
    this.eid = endpointId();
    this.patientId = null;
    this.relayTo = null; // our patient while the server has it present and admitted with us
    this.sessionId = null;
    this.session = null;
    this.pc = null;
    this.channels = [];
    this.localStream = null;
    this.remoteStream = null;
    this.binder = new Binder();
    metrics.binds = this.binder.stats;
    this.iceServers = [];
    this.lastVitals = -Infinity;
    this.lastVideoFrame = null;
    this.streamEnded = false;
    this.patientLabel = null;
    this.statusCounter = null;
    this.ended = null;
    this.everLive = false;
    this.revoked = new Set(); // endpoints whose token was revoked, until they join anew
    this.ackSeqs = new Map(); // CRITICAL seq -> alarm list item
    this.tiles = new Tiles();
    this.device = new DevicePanel();
    this.sound = new AlarmSound();
    this.alarms = new AlarmList((id, it) => this.ackAlarm(id, it));
    this.ecg = new SweepTrace($("ecg"), {
      color: "#39ff6a", mode: "ecg",
      onFirstDraw: () => { metrics.firstEcgDrawnMs = performance.now(); },
    });
    this.pleth = new SweepTrace($("pleth"), { color: "#5ad1ff", mode: "pleth" });
    const base = location.pathname.replace(/\/join\/?$/, "");
    const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${base}/ws`;
    this.httpBase = `${location.origin}${base}`;
    const resumeKey = TILE ? `p2pmed-resume:${this.eid}:${TILE.bed}` : `p2pmed-resume:${this.eid}`;
    this.sig = new SignalingClient({
      wsUrl, token, endpointId: this.eid, session,
      resumeToken: storedResume(resumeKey, token, this.eid),
      onResumeToken: (t) => { try { sessionStorage.setItem(resumeKey, t); } catch { /* storage full: memory only */ } },
      onMessage: (m) => this.onSignal(m),
      onRelay: (peer, frame) => {
        if (this.revoked.has(peer)) metrics.revokedRelay = (metrics.revokedRelay || 0) + 1;
        else if (peer === this.patientId) this.feed(frame, "relay");
      },
      onState: (up, joined) => this.onSignalState(up, joined),
      onFatal: (code, message) => { window.p2pmed.state = "error"; showError(code, message); },
    });
  }

  async start() {
    showFingerprint($("my-fp"), await this.identity.fingerprint());
    $("btn-camera").addEventListener("click", () => this.toggleCamera());
    $("btn-unmute").addEventListener("click", () => {
      const v = $("remote-video");
      v.muted = !v.muted;
      $("btn-unmute").textContent = v.muted ? "Unmute patient audio" : "Mute patient audio";
    });
    $("btn-verify").addEventListener("click", () => this.markVerified());
    $("btn-mismatch").addEventListener("click", () => this.codesMismatch());
    // Browsers allow sound only after a gesture: the first click or key press anywhere unlocks it.
    const unlock = () => this.sound.unlock();
    if (!TILE) { // a tile is silent: the station page sounds for every bed
      document.addEventListener("pointerdown", unlock, true);
      document.addEventListener("keydown", unlock, true);
    }
    $("btn-audio-unlock").addEventListener("click", unlock);
    $("btn-audio-pause").addEventListener("click", () => {
      const t = now();
      if (this.sound.pausedLeft(t) > 0) this.sound.resume();
      else this.sound.pause(AUDIO_PAUSE, t);
      this.renderAlarmSignals();
    });
    this.sig.start();
    // [ms, what]: a station tile gets these from the station page's one timer (tilebridge.js), so
    // its beds' periodic work does not wake the shared main thread once per bed
    const periodic = [
      [TILE ? 250 : 100, () => this.renderAlarmSignals()], // a tile is silent: outlines only
      [50, () => this.session && this.session.tick()],
      [TILE ? 500 : 200, () => this.renderStatus()], // a tile's status is read twice a second
      [TILE ? 5000 : 2000, () => this.pollStats()], // getStats per bed: TURN or direct
    ];
    if (TILE) this.bridge = new TileBridge(this, TILE.bed, periodic);
    else for (const [ms, f] of periodic) setInterval(f, ms);
    this.startDrawing();
  }

  drawTraces() {
    const t = now();
    this.ecg.frame(t);
    this.pleth.frame(t);
  }

  // The sweeps follow the screen's frames; a small station tile is drawn by the station page
  // instead, all tiles in one animation frame (tilebridge.js), until it is shown full size.
  startDrawing() {
    if (this.drawing) return;
    this.drawing = true;
    const loop = () => {
      if (this.bridge && this.bridge.compact) { this.drawing = false; return; }
      this.drawTraces();
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }

  // ---- signaling ----
  onSignalState(up, joined) {
    // A (re)join, e.g. to a restarted server: relay only once the server lists the patient as admitted,
    // or every heartbeat is refused (unknown-peer / not-admitted) until the server closes us.
    this.relayTo = null;
    this.readmitSent = null;
    if (up && joined) {
      metrics.signalingJoins++;
      window.p2pmed.state = "joined";
      this.sessionId = joined.session;
      for (const p of joined.peers || []) {
        if (p.role !== "patient") continue;
        if (p.admitted) this.setPatient(p.endpoint_id);
        else this.addWaiting(p.endpoint_id);
      }
      if (!this.patientId) {
        showView("view-waiting");
        this.renderWaiting();
      }
      this.fetchTurn();
    }
  }

  async fetchTurn() {
    try {
      const r = await fetch(`${this.httpBase}/turn-credentials`, { headers: { Authorization: `Bearer ${this.token}` } });
      if (r.ok) {
        const body = await r.json();
        this.iceServers = Array.isArray(body.iceServers) ? body.iceServers.filter((s) => s && s.urls) : [];
      }
    } catch { /* no TURN: direct and relay still work */ }
  }

  onSignal(m) {
    switch (m.type) {
      case "peer-waiting":
        if (m.role !== "patient") break;
        this.revoked.delete(m.endpoint_id); // a waiting patient joined anew with a valid token
        if (m.endpoint_id === this.relayTo) this.relayTo = null;
        this.addWaiting(m.endpoint_id);
        break;
      case "peer-joined":
        this.revoked.delete(m.endpoint_id); // joined anew with a valid token
        if (m.role === "patient") this.setPatient(m.endpoint_id);
        break;
      case "peer-revoked": this.peerRevoked(m.endpoint_id); break;
      case "peer-left": if (m.endpoint_id === this.patientId) this.patientLeft(); break;
      case "offer": this.onOffer(m).catch((e) => console.error("offer failed", e)); break;
      case "candidate":
        if (this.pc && m.from === this.patientId && m.candidate) this.pc.addIceCandidate(m.candidate).catch(() => {});
        break;
      case "error":
        if ((m.code === "unknown-peer" || m.code === "not-admitted") && m.to === this.relayTo) {
          this.relayTo = null; // until the server says it is back and admitted
          metrics.relayRefused = (metrics.relayRefused || 0) + 1;
        }
        console.warn("signaling error", m.code, m.message);
        break;
      default: break;
    }
  }

  addWaiting(id) {
    if (this.patientId === id) {
      // Our patient waits again: the server restarted and forgot who was admitted. Same endpoint
      // (its token is bound to it) and its session is checked end to end, so it is admitted again
      // without a click and the running session continues.
      if (!this.ended && this.trust !== "refused" && window.p2pmed.state !== "error") {
        if (this.readmitSent === id) return; // listed in joined and announced by peer-waiting
        this.readmitSent = id;
        metrics.readmitted = (metrics.readmitted || 0) + 1;
        this.sig.sendJson({ type: "admit", endpoint_id: id });
        announce("The patient's device reconnected after a server restart and was admitted again");
        return;
      }
      // the session had ended: it waits to be admitted like a new patient
      this.closePc();
      this.patientId = null;
    }
    const list = $("waiting-list");
    if (list.querySelector(`[data-endpoint="${CSS.escape(id)}"]`)) return;
    const li = document.createElement("li");
    li.dataset.endpoint = id;
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = `Unidentified patient (device ${id}) is waiting`;
    const btn = document.createElement("button");
    btn.type = "button";
    btn.textContent = "Admit patient";
    btn.setAttribute("aria-label", `Admit patient ${id}, unidentified patient`);
    // The label is confirmed only after admission (it comes over the secure session); a label this
    // browser saw for this session before is shown as such.
    getPin(this.sessionId, "patient").then((pin) => {
      if (!pin || !pin.label || !li.isConnected) return;
      label.textContent = `“${pin.label}” (label from an earlier visit, confirmed after admission; device ${id}) is waiting`;
      btn.setAttribute("aria-label", `Admit patient ${id}, ${pin.label}`);
    }).catch(() => {});
    btn.addEventListener("click", () => {
      btn.disabled = true;
      btn.textContent = "Admitting…";
      this.sig.sendJson({ type: "admit", endpoint_id: id });
    });
    li.append(label, btn);
    list.append(li);
    if (TILE) { btn.click(); return; } // the station admits every patient of its ward's beds
    showView("view-waiting");
    this.renderWaiting();
    announce(`Patient ${id} is waiting to be admitted`);
    btn.focus();
  }

  // Header and waiting room say the same thing: someone is waiting, or nobody yet.
  renderWaiting() {
    const n = $("waiting-list").children.length;
    $("waiting-text").textContent = n
      ? `${n === 1 ? "A patient is" : `${n} patients are`} waiting. Admit to start the session.`
      : "Joined the session. The patient has not arrived yet.";
    if (!this.patientId) $("conn-state").textContent = n ? "A patient is waiting to be admitted" : "Waiting for the patient to arrive";
  }

  setPatient(id) {
    $("waiting-list").querySelector(`[data-endpoint="${CSS.escape(id)}"]`)?.remove();
    this.relayTo = id;
    if (this.patientId !== id) {
      this.patientId = id;
      this.newSession();
    }
    const wasWaiting = !$("view-waiting").hidden;
    showView("main");
    // the Admit button is gone: focus goes to the monitor, not to <body>
    const a = document.activeElement;
    if (!TILE && wasWaiting && (!a || a === document.body)) $("main").focus({ preventScroll: true });
    window.p2pmed.state = "admitted";
  }

  // Left for good (a `leave`, or not back within the server's reconnect grace): if it joins again
  // it waits to be admitted like a new patient.
  // The patient's token was revoked (protocol.md 8.3.6): end the session on every path, refuse
  // the endpoint until it joins anew, and confirm so the server can audit when access ended.
  peerRevoked(id) {
    if (typeof id !== "string") return;
    this.revoked.add(id);
    if (id === this.patientId) {
      const s = this.session;
      if (s && !s.closed) s.close(0, "revoked");
      this.endSession("the patient's access was revoked");
      this.closePc();
      this.patientId = null;
      this.relayTo = null;
    }
    this.sig.sendJson({ type: "revocation-done", endpoint_id: id });
  }

  patientLeft() {
    this.endSession("the patient left");
    this.closePc();
    this.patientId = null;
    this.relayTo = null;
  }

  // The patient ended the session: shown as ended (not as a lost link), the last data greyed.
  endSession(why) {
    if (this.ended) return;
    this.ended = { why, at: now(), clock: new Date().toLocaleTimeString() };
    window.p2pmed.ended = why;
    announce(`Session ended: ${why}`);
  }

  // A new session with the patient, or the one this tab had before a reload (see Session.resume).
  async newSession({ fresh = false } = {}) {
    if (this.session) this.session.closed = true;
    this.session = null;
    const key = `p2pmed-session:${this.sessionId}:${this.patientId}`;
    const opts = {
      sessionId: this.sessionId, identity: this.identity, now,
      transmit: (path, frame) => this.transmit(path, frame),
      onEvent: (ev) => this.onSessionEvent(s, ev),
      // The handshake carries zero fingerprints; the direct path is bound by PATH_BIND against what
      // our DTLS verified (bind.js), never against SDP.
      onPathBind: (pt) => this.onPeerBind(s, pt),
    };
    let s = null;
    let snap = null;
    if (fresh) sessionStorage.removeItem(key);
    else try { snap = JSON.parse(sessionStorage.getItem(key) || "null"); } catch { snap = null; }
    if (snap && snap.v === 1 && snap.sessionId === this.sessionId) {
      try { s = await Session.resume(opts, snap); } catch (e) { console.warn("cannot resume", e); s = null; }
    }
    if (!s) s = new Session(opts);
    s.persist = (state) => {
      try { sessionStorage.setItem(key, JSON.stringify(state)); } catch { /* quota: resume not possible */ }
    };
    s.addPath("relay");
    this.binder.resetPeer();
    this.bindSentFor = null;
    this.unbindDirect();
    this.session = s;
    this.ended = null;
    this.streamEnded = false;
    this.patientLabel = null;
    this.statusCounter = null;
    this.statusKey = `p2pmed-status:${this.sessionId}:${this.patientId}`;
    if (fresh) sessionStorage.removeItem(this.statusKey);
    else if (s.send) {
      try { const st = JSON.parse(sessionStorage.getItem(this.statusKey) || "null"); if (st) this.onPatientStatus(st); } catch { /* none */ }
    }
    this.renderLabel();
    window.p2pmed.ended = null;
    this.trust = "pending"; // until the patient's identity matches its pin (onSecured)
    this.heldMessages = [];
    window.p2pmed.session = s;
    this.ackSeqs.clear();
    this.alarms.restore(`p2pmed-alarms:${this.sessionId}:${this.patientId}`, fresh, (seq, it) => this.ackSeqs.set(seq, it));
    if (s.send) {
      window.p2pmed.resumed = true;
      this.onSecured({ sas: s.result.sas, peerFingerprint: s.result.peer_fingerprint });
    }
  }

  // A frame from the patient. After the patient closed the session, a new HS_COMMIT (the patient
  // node started again) opens a new one; anything else for the closed session is dropped.
  feed(frame, path) {
    const s = this.session;
    if (!s) return;
    if (!s.closed) { s.receive(frame, path); return; }
    const bytes = new Uint8Array(frame);
    if (bytes[1] !== FrameType.HS_COMMIT || this.reopening) return;
    if (this.trust === "refused" || window.p2pmed.state === "error") return; // a security failure: reload to retry
    this.reopening = true;
    this.newSession({ fresh: true }).then(() => this.session.receive(bytes, path)).finally(() => { this.reopening = false; });
  }

  transmit(path, frame) {
    if (path === "relay") { if (this.patientId && this.relayTo === this.patientId) this.sig.sendRelay(this.patientId, frame); return; }
    // our PATH_BIND may also go on the control channel of a direct path not bound yet
    const bindOnly = path === "direct-bind" && this.channels.length;
    if (!bindOnly && (path !== "direct" || !this.directOpen)) return;
    const cls = frame[3];
    const ch = bindOnly || frame[1] !== 1 || cls <= 1 ? this.channels[0] : cls === 2 ? this.channels[1] : this.channels[2];
    if (ch.readyState !== "open" || ch.bufferedAmount > 1024 * 1024) return; // retransmitted later
    try { ch.send(frame); } catch { /* closing: the session retransmits on another path */ }
  }

  // ---- WebRTC (the patient offers, the page answers; a new peer connection per offer) ----
  async onOffer(m) {
    // Refused before the browser sees it: no answer, the current path stays as it is.
    try {
      checkSdp(m.sdp);
    } catch (e) {
      if (!(e instanceof SdpError)) throw e;
      metrics.sdpRejected++;
      metrics.sdpRejectedReasons[e.reason] = (metrics.sdpRejectedReasons[e.reason] || 0) + 1;
      const note = $("rejected-note");
      note.hidden = false;
      note.textContent = `Refused a connection offer (${e.reason}): ${e.message}. Possible tampering on the server; vitals continue on the secure session.`;
      console.warn("offer refused", e.reason, e.message);
      return;
    }
    if (m.from !== this.patientId) this.setPatient(m.from);
    this.closePc();
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    this.directOpen = false;
    this.binder.negotiate(pc);
    this.channels = CHANNELS.map(([label, id]) => {
      const ch = pc.createDataChannel(label, { negotiated: true, id, ordered: true });
      ch.binaryType = "arraybuffer";
      ch.onmessage = (e) => { if (this.pc === pc && typeof e.data !== "string") this.feed(e.data, "direct"); };
      ch.onopen = () => this.maybeDirectOpen(pc);
      ch.onclose = () => this.directLost(pc);
      return ch;
    });
    // Received media is shown only once the path is bound (showMedia).
    pc.ontrack = (e) => {
      if (this.pc !== pc) return;
      this.remoteStream = e.streams[0] || new MediaStream([e.track]);
      this.showMedia();
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") this.directLost(pc);
      if (pc.connectionState === "connected") this.onDtlsConnected(pc);
    };
    await pc.setRemoteDescription({ type: "offer", sdp: m.sdp });
    // Senders start with no track: our camera goes out only after binding (sendMedia).
    for (const t of pc.getTransceivers()) t.direction = "sendrecv";
    await pc.setLocalDescription(await pc.createAnswer());
    const dtls = dtlsTransport(pc);
    if (dtls) dtls.addEventListener("statechange", () => { if (dtls.state === "connected") this.onDtlsConnected(pc); });
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const t = setTimeout(resolve, 1500);
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); } });
    });
    if (this.pc !== pc) return;
    this.sig.sendJson({ type: "answer", to: m.from, sdp: pc.localDescription.sdp });
    if (dtls && dtls.state === "connected") this.onDtlsConnected(pc);
  }

  // Our DTLS connected: bind to the certificates it verified, tell the peer, check a held PATH_BIND.
  async onDtlsConnected(pc) {
    if (this.pc !== pc || this.binder.fps) return;
    let fps;
    try {
      fps = await dtlsFingerprints(pc);
    } catch (e) {
      console.warn("no DTLS certificates", e);
      return;
    }
    if (this.pc !== pc || this.binder.fps) return;
    const held = this.binder.connected(pc, fps);
    this.sendBind();
    if (held) {
      try { this.onBindResult(held); } catch { /* counted in bindFailed */ }
    }
  }

  sendBind() {
    const s = this.session;
    const fps = this.binder.fps;
    if (!s || !s.send || !fps || s.closed || this.bindSentFor === fps) return;
    this.bindSentFor = fps;
    const body = encodePathBind("direct", fps.local, fps.remote);
    s.sendPathBind(body, ["relay", "direct-bind"]);
  }

  // A PATH_BIND from the patient node, decrypted and length-checked by the session.
  onPeerBind(s, pt) {
    const b = decodePathBind(pt);
    if (s !== this.session) return;
    this.onBindResult(this.binder.check(b));
  }

  onBindResult(result) {
    if (result === "bound") {
      this.maybeDirectOpen(this.pc);
      this.showMedia();
      this.sendMedia();
    } else if (result === "mismatch") {
      this.bindFailed();
      throw new CryptoError("fingerprint", "PATH_BIND names other DTLS certificates than ours");
    }
  }

  // Someone is in the middle of the direct path: end the session and say so loudly.
  bindFailed() {
    const s = this.session;
    this.closePc();
    this.alarms.technical("fingerprint", true, "security check of the direct connection failed (crypto/fingerprint): session closed. Someone may be intercepting it. Call the patient's site.");
    if (s && !s.closed) s.close(1, "crypto/fingerprint: the peer's DTLS saw other certificates than ours");
    window.p2pmed.state = "error";
    $("conn").className = "conn conn-lost";
    $("conn-state").textContent = "Session closed: security check failed";
  }

  showMedia() {
    const v = $("remote-video");
    const stream = this.binder.bound ? this.remoteStream : null;
    if (v.srcObject !== stream) {
      v.srcObject = stream;
      if (stream) { v.muted = true; v.play().catch(() => {}); }
    }
  }

  async sendMedia() {
    if (!this.pc || !this.binder.bound) return;
    for (const t of this.pc.getTransceivers()) {
      const track = this.localStream?.getTracks().find((x) => x.kind === t.receiver.track.kind) || null;
      if (t.sender.track !== track && t.currentDirection !== "inactive") await t.sender.replaceTrack(track).catch(() => {});
    }
  }

  unbindDirect() {
    if (this.directOpen && this.session) this.session.removePath("direct");
    this.directOpen = false;
    this.showMedia();
    for (const t of this.pc?.getTransceivers() || []) if (t.sender.track) t.sender.replaceTrack(null).catch(() => {});
  }

  maybeDirectOpen(pc) {
    if (!pc || this.pc !== pc || this.directOpen || !this.binder.bound) return;
    if (!this.channels.every((c) => c.readyState === "open")) return;
    this.directOpen = true;
    this.session?.addPath("direct", { preferred: true });
  }

  directLost(pc) {
    if (this.pc !== pc) return;
    if (this.directOpen) this.session?.removePath("direct");
    this.directOpen = false;
  }

  closePc() {
    const pc = this.pc;
    if (!pc) return;
    this.directLost(pc);
    this.pc = null;
    this.binder.negotiate(null);
    this.remoteStream = null;
    this.showMedia();
    for (const c of this.channels) try { c.close(); } catch { /* already closed */ }
    this.channels = [];
    pc.close();
  }

  async toggleCamera() {
    const btn = $("btn-camera");
    if (this.localStream) {
      for (const t of this.localStream.getTracks()) t.stop();
      this.localStream = null;
      $("local-video").srcObject = null;
      $("local-video").hidden = true;
      for (const s of this.pc?.getSenders() || []) await s.replaceTrack(null);
      btn.textContent = "Share my camera and microphone";
      btn.setAttribute("aria-pressed", "false");
      return;
    }
    try {
      this.localStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch (e) {
      announce(`Camera or microphone not available: ${e.name}`);
      return;
    }
    $("local-video").srcObject = this.localStream;
    $("local-video").hidden = false;
    await this.sendMedia();
    btn.textContent = "Stop my camera and microphone";
    btn.setAttribute("aria-pressed", "true");
  }

  // ---- session events ----
  onSessionEvent(s, ev) {
    if (s !== this.session) return;
    switch (ev.type) {
      case "message":
        if (this.trust === "ok") return this.onMessage(ev);
        if (this.trust === "pending" && this.heldMessages.length < 10000) this.heldMessages.push(ev);
        return;
      case "handshake-completed": return this.onSecured(ev);
      case "handshake-failed":
        window.p2pmed.state = "error";
        return showError("handshake-failed", `End-to-end handshake refused: ${ev.reason}`);
      case "frame-rejected": {
        if (ev.reason === "no_keys") {
          // Encrypted frames for a secure session this page does not hold (e.g. after a reload).
          metrics.noKeys = (metrics.noKeys || 0) + 1;
          return;
        }
        metrics.rejected++;
        const key = `${ev.kind}/${ev.reason}`;
        metrics.rejectedReasons[key] = (metrics.rejectedReasons[key] || 0) + 1;
        $("st-rejected").textContent = String(metrics.rejected);
        const note = $("rejected-note");
        note.hidden = false;
        note.textContent = `${metrics.rejected} frame${metrics.rejected === 1 ? "" : "s"} rejected (corrupt or tampered): ` +
          Object.entries(metrics.rejectedReasons).map(([k, v]) => `${k} ×${v}`).join(", ");
        return;
      }
      case "acked": {
        if (ev.cls !== MessageClass.CRITICAL) return;
        const it = this.ackSeqs.get(ev.seq);
        if (it) {
          for (const [seq, other] of this.ackSeqs) if (other === it) this.ackSeqs.delete(seq);
          if (!it.mine) { this.alarms.markAcked(it, true); announce(`Alarm acknowledgement delivered: ${it.alarm.condition}`); }
        }
        return;
      }
      case "rehandshake": {
        // An HS_COMMIT is not authenticated: while the established session still hears from the
        // patient node, a new one is someone else's (e.g. the server's) and must not reset it. A
        // restarted node goes silent on the old session; its resent HS_COMMIT is taken then.
        const live = [...s.paths.values()].some((p) => p.alive);
        if (live) {
          metrics.rehandshakeIgnored = (metrics.rehandshakeIgnored || 0) + 1;
          console.warn("HS_COMMIT for an established, live session ignored");
          return;
        }
        this.newSession({ fresh: true }).then(() => this.session.receive(ev.frame, ev.path));
        return;
      }
      case "closed": {
        const why = ev.reason ? `closed by the patient (${ev.reason})` : "closed by the patient";
        this.endSession(why);
        return;
      }
      default: return;
    }
  }

  // The patient's identity key is pinned per session id on first use; a different key is refused.
  async onSecured(ev) {
    const s = this.session;
    $("sas").textContent = ev.sas;
    showFingerprint($("peer-fp"), ev.peerFingerprint);
    let pin;
    try {
      pin = await checkPin(this.sessionId, "patient", ev.peerFingerprint);
    } catch (e) {
      console.warn("identity pin store unavailable", e);
      pin = { status: "unstored", pin: null };
    }
    if (s !== this.session) return;
    if (pin.status === "changed") return this.identityChanged(s, pin.pin.fingerprint, ev.peerFingerprint);
    if (pin.pin && pin.pin.mismatchAt) return this.sasRefused(s, ev.peerFingerprint, pin.pin.mismatchAt);
    this.trust = "ok";
    const held = this.heldMessages;
    this.heldMessages = [];
    for (const m of held) this.onMessage(m);
    this.sendBind();
    if (pin.pin && pin.pin.verified) {
      $("verify-state").textContent = "Verified earlier (same patient node key)";
      $("verify-state").className = "verify-state ok";
      this.verifyButtons(false);
    } else {
      $("verify-state").textContent = pin.status === "unstored"
        ? "Not verified (this browser cannot store keys): compare the code by voice"
        : "Not verified: compare the code by voice";
      $("verify-state").className = "verify-state";
      this.verifyButtons(true);
    }
    window.p2pmed.state = "secured";
    window.p2pmed.sas = ev.sas;
    window.p2pmed.pin = pin.status;
    announce(`Connection secured. Verification code ${ev.sas}`);
  }

  identityChanged(s, pinned, seen) {
    this.trust = "refused";
    this.heldMessages = [];
    metrics.identityRefused = (metrics.identityRefused || 0) + 1;
    if (!s.closed) s.close(1, "identity changed: the patient key differs from the one pinned for this session");
    this.closePc();
    window.p2pmed.state = "error";
    window.p2pmed.pin = "changed";
    $("sas").textContent = "--- ---";
    this.verifyButtons(false, { hide: false });
    $("verify-state").textContent = `REFUSED: the patient node's key changed. Pinned ${pinned}, now ${seen}.`;
    $("verify-state").className = "verify-state bad";
    this.alarms.technical("identity-changed", true, `patient identity changed for this session (pinned ${pinned}, presented ${seen}): connection refused. Someone may be impersonating the patient's device; call the patient's site.`);
    $("conn").className = "conn conn-lost";
    $("conn-state").textContent = "Refused: patient identity changed";
    showView("main");
  }

  // Both answers to the code comparison: enabled while it is open; once answered they are gone
  // (a verified key stays verified across reloads; a mismatch ends the session).
  verifyButtons(open, { hide = !open } = {}) {
    for (const id of ["btn-verify", "btn-mismatch"]) {
      $(id).disabled = !open;
      $(id).hidden = hide;
    }
  }

  async markVerified() {
    const fp = $("peer-fp").textContent;
    this.verifyButtons(false, { hide: false });
    let ok = false;
    try { ok = await markVerified(this.sessionId, "patient", fp); } catch (e) { console.warn("cannot record verification", e); }
    $("verify-state").textContent = ok ? "Verified by you" : "Could not record the verification";
    $("verify-state").className = ok ? "verify-state ok" : "verify-state bad";
    this.verifyButtons(!ok);
    $("verify-state").setAttribute("tabindex", "-1");
    $("verify-state").focus();
  }

  // The codes differ: someone may sit between the page and the patient node. End the session,
  // raise a HIGH technical alarm and record the key as failed, so it is refused from now on.
  async codesMismatch() {
    const s = this.session;
    const fp = $("peer-fp").textContent;
    this.verifyButtons(false, { hide: false });
    let recorded = false;
    try { recorded = await markMismatch(this.sessionId, "patient", fp); } catch (e) { console.warn("cannot record the mismatch", e); }
    metrics.sasMismatch = (metrics.sasMismatch || 0) + 1;
    this.sasRefused(s, fp, recorded ? Date.now() : null);
  }

  sasRefused(s, fp, at) {
    this.trust = "refused";
    this.heldMessages = [];
    if (s && !s.closed) s.close(1, "sas-mismatch: the clinician's verification code differs from the patient's");
    this.closePc();
    window.p2pmed.state = "error";
    window.p2pmed.pin = "mismatch";
    this.verifyButtons(false, { hide: false });
    const when = at ? ` (recorded ${new Date(at).toLocaleString()})` : " (could not be recorded in this browser)";
    $("verify-state").textContent = `Codes did NOT match${when}: session ended; this patient node key (${fp}) is refused for this session.`;
    $("verify-state").className = "verify-state bad";
    this.alarms.technical("sas-mismatch", true, "verification codes did not match: someone may be intercepting the connection. Session ended. Call the patient's site by phone and have their device checked before reconnecting.");
    $("conn").className = "conn conn-lost";
    $("conn-state").textContent = "Session closed: verification codes did not match";
    showView("main");
    $("verify-state").setAttribute("tabindex", "-1");
    $("verify-state").focus();
  }

  onMessage(ev) {
    const t = now();
    const d = (metrics.delivered[ev.cls] ||= { count: 0, first: ev.seq, last: null, gaps: 0, paths: {} });
    if (d.last !== null && ev.seq !== d.last && ev.seq !== d.last + 1) d.gaps++;
    d.last = ev.seq;
    d.count++;
    d.paths[ev.path] = (d.paths[ev.path] || 0) + 1;
    let msg;
    try {
      msg = decodeVitals(ev.data);
    } catch (e) {
      metrics.codecRejected++;
      return;
    }
    if (msg.kind === "patient_status") return this.onPatientStatus(msg); // not vitals
    this.lastVitals = t;
    this.everLive = true;
    if (metrics.latenciesUs.length < 100000) {
      metrics.latenciesUs.push(nowUs() - ev.sentUs);
      // the page's own share: from the transport handing over the frame to here
      if (ev.arrived !== undefined) metrics.pageUs.push(Math.round((performance.now() - ev.arrived) * 1000));
    }
    if (msg.kind === "waveform") {
      if (isEcg(msg.signal)) {
        const before = this.ecg.gaps;
        this.ecg.push(msg, t);
        metrics.ecgSourceGaps += this.ecg.gaps - before;
        metrics.ecgSamples += msg.samples.length;
        $("ecg-label").textContent = `ECG ${msg.signal}`;
      } else this.pleth.push(msg, t);
    } else if (msg.kind === "numerics") {
      metrics.lastNumerics = { ...msg.values, timestamp_us: msg.timestamp_us, flags: msg.flags };
      this.tiles.update(msg.values, t);
      this.alarms.updateNow(msg.values);
    } else if (msg.kind === "alarm") {
      this.alarms.upsert(msg);
      if (this.tiles.last) this.alarms.updateNow(this.tiles.last);
    } else if (msg.kind === "metric" || msg.kind === "device") {
      // from a bedside device (docs/devices.md): the device panel, and the metrics view
      const dev = (metrics.device ||= { metrics: {}, status: null });
      if (msg.kind === "metric") {
        dev.metrics[msg.code] = { value: msg.value, unit: msg.unit, label: msg.label, invalid: (msg.flags & 1) === 1 };
        this.device.metric(msg);
      } else {
        dev.status = { state: msg.state, protocol: msg.protocol, device_id: msg.device_id };
        this.device.status(msg);
      }
    } else if (msg.kind === "alarm_ack") {
      // another clinician's acknowledgement, forwarded by the patient node (ours are confirmed by acks)
      metrics.ackedElsewhere = (metrics.ackedElsewhere || 0) + 1;
      if (msg.who !== this.eid) this.alarms.ackedBy(msg.alarm_id, msg.who, Number(msg.time_us));
    }
  }

  async ackAlarm(alarmId, it) {
    if (!this.session) return;
    const body = encodeAlarmAck(alarmId, nowUs(), this.eid);
    it.ackSentAt = now();
    this.alarms.markSending(it);
    metrics.alarmAcks.push(String(alarmId));
    const seq = await this.session.sendMessage(MessageClass.CRITICAL, body);
    this.ackSeqs.set(seq, it);
    this.alarms.setAckSeq(it, seq);
    this.sig.sendJson({ type: "audit", event: "alarm-ack", alarm_id: String(alarmId) });
  }

  // ---- status ----
  async pollStats() {
    if (!this.pc || !this.directOpen) { this.turn = false; return; }
    try {
      const stats = await this.pc.getStats();
      let pair = null;
      stats.forEach((r) => { if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
      if (!pair) stats.forEach((r) => { if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r; });
      const local = pair && stats.get(pair.localCandidateId);
      const remote = pair && stats.get(pair.remoteCandidateId);
      this.turn = (local && local.candidateType === "relay") || (remote && remote.candidateType === "relay");
    } catch { /* stats are best effort */ }
  }

  // What the header says: "Live" only while vitals are arriving; an ended session is not a lost link.
  renderStatus() {
    const t = now();
    const s = this.session;
    const ended = this.ended;
    const open = s && !s.closed && !ended;
    const path = open ? s.bestPath() : null;
    const st = path ? s.pathStatus(path) : null;
    // the relay path cannot be up while the signaling connection is down
    const alive = !!(st && st.alive) && (path !== "relay" || this.sig.joined);
    const name = alive ? (path === "direct" ? (this.turn ? "TURN" : "direct") : "relay") : "none";
    metrics.path = alive ? name : null;
    $("st-path").textContent = alive ? name : ended ? "none — session ended" : "none — all paths down";
    $("st-rtt").textContent = alive && st.rtt !== null ? `${(st.rtt * 1000).toFixed(1)} ms` : "—";
    $("st-loss").textContent = alive ? `${(st.loss * 100).toFixed(1)} %` : "—";
    const grade = alive && st.rtt !== null ? gradeOf(st.rtt, st.loss) : "—";
    $("st-grade").textContent = grade;
    const age = t - this.lastVitals;
    const ageText = Number.isFinite(age) ? `${age < 10 ? age.toFixed(1) : Math.round(age)} s ago` : "never";
    $("st-age").textContent = ageText;
    const conn = $("conn");
    let cls, text;
    const lost = this.everLive && !alive && !ended;
    const live = alive && age < 2;
    if (window.p2pmed.state === "error") return;
    if (ended) { cls = "conn-ended"; text = `Session ended — ${ended.why}`; }
    else if (lost) { cls = "conn-lost"; text = "CONNECTION LOST"; }
    else if (!alive && metrics.noKeys > 20 && s && !s.send) {
      cls = "conn-degraded";
      text = "Patient node still holds an earlier secure session — waiting for a new handshake";
    } else if (!alive && !this.patientId && this.sig.joined) { cls = "conn-connecting"; text = $("waiting-list").children.length ? "A patient is waiting to be admitted" : "Waiting for the patient to arrive"; }
    else if (!alive) { cls = "conn-connecting"; text = this.patientId ? "Connecting to the patient…" : "Connecting…"; }
    else if (this.streamEnded) { cls = "conn-ended"; text = `Stream ended — the patient's source has no more data (connected via ${name})`; }
    else if (!live) { cls = "conn-degraded"; text = this.everLive ? `Connected via ${name} — no vitals for ${Math.round(age)} s` : `Connected via ${name} — waiting for vitals`; }
    else if (grade !== "normal" && grade !== "—") { cls = "conn-degraded"; text = `Live via ${name} (${grade})`; }
    else { cls = "conn-live"; text = `Live via ${name}`; }
    if (conn.className !== `conn ${cls}`) conn.className = `conn ${cls}`;
    if ($("conn-state").textContent !== text) $("conn-state").textContent = text;
    $("lost-banner").hidden = !lost;
    const banner = $("ended-banner");
    banner.hidden = !ended;
    if (ended) {
      const msg = `Session ended at ${ended.clock}: ${ended.why}. Nothing shown is live; the last data (${ageText}) is kept greyed for reference.`;
      if (banner.textContent !== msg) banner.textContent = msg;
    }
    this.alarms.technical("all-paths-down", lost, "no path to the patient is up — vitals are not live");
    this.checkAcks(t, ended ? "session ended" : !alive ? "connection lost; retried when it is back" : null);
    this.tiles.render(t, live || (alive && age < 3));
    for (const [trace, id] of [[this.ecg, "ecg-status"], [this.pleth, "pleth-status"]]) {
      const el = $(id);
      const bad = !trace.buf || !live || trace.signalLost(t);
      const since = `last data ${ageText}`;
      const txt = !trace.buf ? "no signal" : ended ? `FROZEN — session ended, ${since}` : this.streamEnded ? `FROZEN — stream ended, ${since}` : !alive ? `NOT LIVE — connection lost, ${since}` : bad ? `NO SIGNAL — ${since}` : `${trace.rate} Hz`;
      if (el.textContent !== txt) el.textContent = txt;
      el.classList.toggle("bad", bad && !!trace.buf);
      el.closest(".wave").classList.toggle("frozen", !!trace.buf && (ended || this.streamEnded || !alive || bad));
    }
    this.renderVideo(t, ended || this.streamEnded || !alive);
  }

  // Sound, audio pause countdown and the tab title follow the highest alarm still signalled.
  renderAlarmSignals() {
    const t = now();
    const prio = this.alarms.signalling();
    this.sound.update(prio, t);
    this.renderTileAlarms();
    const left = this.sound.pausedLeft(t);
    const btn = $("btn-audio-pause");
    const label = left > 0 ? "Resume alarm audio" : `Pause alarm audio for ${AUDIO_PAUSE / 60} min`;
    if (btn.textContent !== label) btn.textContent = label;
    btn.setAttribute("aria-pressed", String(left > 0));
    const secs = Math.ceil(left);
    const mmss = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
    const state = left > 0 ? `Alarm audio paused — ${mmss} left`
      : prio && prio !== "low" && this.sound.blocked ? "Alarm sound is off in this browser: press “Turn on alarm sound”"
      : prio && prio !== "low" ? `Alarm sounding (${prio} priority)` : "";
    const el = $("audio-state");
    if (el.textContent !== state) el.textContent = state;
    $("btn-audio-unlock").hidden = !this.sound.blocked;
    const title = prio ? `${prio === "high" ? "‼ HIGH ALARM" : prio === "medium" ? "! MEDIUM ALARM" : "low alarm"} — ${this.titleBase()}` : this.titleBase();
    if (!$("main").hidden && document.title !== title) document.title = title;
  }

  // The tile of a parameter in alarm is outlined in the alarm's colour (flashing until acknowledged).
  renderTileAlarms() {
    const on = this.alarms.tileAlarms();
    for (const k of TILES_ALL) {
      const tile = $(`tile-${k}`);
      const a = on[k];
      if ((tile.dataset.alarm || null) !== (a ? a.priority : null)) {
        if (a) tile.dataset.alarm = a.priority; else delete tile.dataset.alarm;
      }
      tile.toggleAttribute("data-alarm-acked", !!(a && a.acked));
    }
  }

  titleBase() {
    if (!this.patientId) return "p2pmed clinician";
    return `${this.patientLabel || "unidentified patient"} — p2pmed clinician`;
  }

  // PATIENT_STATUS: label, and whether the patient's stream is still running (a later one wins).
  onPatientStatus(st) {
    const counter = st.request_id ?? st.counter; // `counter`: kept by an older page in this tab
    if (this.statusCounter !== null && counter < this.statusCounter) return;
    this.statusCounter = counter;
    this.patientLabel = st.label || null;
    this.renderLabel();
    const ended = st.stream === Stream.ENDED;
    if (ended && !this.streamEnded) announce("The patient's stream ended: no more vitals will come. The connection is still up.");
    this.streamEnded = ended;
    window.p2pmed.patientStatus = st;
    try { sessionStorage.setItem(this.statusKey, JSON.stringify(st)); } catch { /* quota */ }
    const fp = this.session?.result?.peer_fingerprint;
    if (fp && st.label) rememberLabel(this.sessionId, "patient", fp, st.label).catch(() => {});
  }

  renderLabel() {
    const el = $("patient-label");
    el.hidden = !this.patientId;
    el.textContent = this.patientLabel ? `Patient: ${this.patientLabel}` : "Unidentified patient";
    el.classList.toggle("unidentified", !this.patientLabel);
  }

  // An acknowledgement the patient node has not confirmed is shown as failed, never as done.
  checkAcks(t, down) {
    for (const it of new Set(this.ackSeqs.values())) {
      if (it.ack !== "sending") continue;
      if (down) this.alarms.markFailed(it, down);
      else if (it.ackSentAt !== undefined && t - it.ackSentAt > ACK_TIMEOUT) this.alarms.markFailed(it, `no confirmation after ${ACK_TIMEOUT} s`);
    }
  }

  renderVideo(t, down) {
    const v = $("remote-video");
    const cap = $("video-status");
    if (v.srcObject && v.currentTime !== this.lastVideoTime) { this.lastVideoTime = v.currentTime; this.lastVideoFrame = t; }
    const age = this.lastVideoFrame === null ? null : t - this.lastVideoFrame;
    const frozen = age !== null && (down || age > 2);
    v.classList.toggle("frozen", frozen);
    const txt = frozen ? `${this.streamEnded ? "Stream ended — " : ""}last frame ${age < 10 ? age.toFixed(1) : Math.round(age)} s ago, not live` : this.streamEnded ? "Stream ended" : "";
    if (cap.textContent !== txt) cap.textContent = txt;
    cap.hidden = !txt;
  }

}

async function main() {
  if (!window.isSecureContext || !globalThis.crypto?.subtle) {
    showError("insecure-context", "This page is not in a secure context, so it cannot encrypt or use the camera.");
    window.p2pmed.state = "error";
    return;
  }
  if (typeof RTCPeerConnection === "undefined" || typeof indexedDB === "undefined") {
    showError("unsupported", "This browser cannot run p2pmed.");
    window.p2pmed.state = "error";
    return;
  }
  const { token, session } = parseFragment();
  if (!token) {
    showError("token-missing", "This address has no join token.");
    window.p2pmed.state = "error";
    return;
  }
  if (!TILE && claims(token).role === "station") { // a central station: the ward's beds (station.js)
    const { startStation } = await import("./station.js");
    await startStation(token, endpointId());
    return;
  }
  let identity;
  try {
    identity = await Identity.loadOrCreate();
  } catch (e) {
    showError("unsupported", `This browser cannot create an Ed25519 identity key (${e.name || e}).`);
    window.p2pmed.state = "error";
    return;
  }
  const app = new App(identity, token, session);
  window.p2pmed.app = app;
  await app.start();
}

main();
