// Direct-path binding (docs/protocol.md, PATH_BIND): the certificates the browser's DTLS really used,
// never values parsed from SDP.
import { concat, utf8, bytesEqual } from "./frame.js";
import { sha256 } from "./crypto.js";

const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

// The DTLS transport of a peer connection (bundled: one for everything).
export function dtlsTransport(pc) {
  if (pc.sctp && pc.sctp.transport) return pc.sctp.transport;
  for (const t of pc.getTransceivers()) if (t.sender.transport) return t.sender.transport;
  return null;
}

// {local, remote}: SHA-256 of the DER of our certificate and of the one the peer presented, as the
// completed DTLS handshake used them. Throws when DTLS is not connected or the sources disagree.
export async function dtlsFingerprints(pc) {
  const dtls = dtlsTransport(pc);
  if (!dtls || dtls.state !== "connected") throw new Error("DTLS not connected");
  const stats = await pc.getStats();
  let transport = null;
  stats.forEach((r) => { if (r.type === "transport" && r.dtlsState === "connected" && r.remoteCertificateId) transport = r; });
  const certOf = async (id) => {
    const c = id && stats.get(id);
    return c && c.base64Certificate ? sha256(b64(c.base64Certificate)) : null;
  };
  const local = transport && (await certOf(transport.localCertificateId));
  let remote = transport && (await certOf(transport.remoteCertificateId));
  if (typeof dtls.getRemoteCertificates === "function") {
    const certs = dtls.getRemoteCertificates();
    if (certs && certs.length) {
      const r = await sha256(new Uint8Array(certs[0]));
      if (remote && !bytesEqual(r, remote)) throw new Error("DTLS remote certificate differs between getRemoteCertificates and getStats");
      remote = r;
    }
  }
  if (!local || !remote) throw new Error("DTLS certificates not available");
  return { local, remote };
}

export function encodePathBind(pathId, local, remote) {
  const id = utf8(pathId);
  return concat(new Uint8Array([id.length]), id, local, remote);
}

// {pathId, peerCert, myCert}: the sender's own certificate and the one its DTLS saw from us. The
// length was checked by the session (session.js checkControl: frame/payload).
export function decodePathBind(pt) {
  const n = pt[0];
  return {
    pathId: new TextDecoder().decode(pt.subarray(1, 1 + n)),
    peerCert: pt.slice(1 + n, 33 + n),
    myCert: pt.slice(33 + n, 65 + n),
  };
}

// The page's side of the binding for the current peer connection: what our DTLS verified, the
// latest peer PATH_BIND held until our DTLS connects, and the last four pairs (stale binds).
export class Binder {
  constructor() {
    this.pc = null;
    this.fps = null; // {local, remote} once our DTLS connected
    this.peerOk = false;
    this.held = null;
    this.pairs = [];
    this.stats = { held: 0, bound: 0, stale: 0, mismatch: 0 };
  }

  // A new negotiation: nothing is bound until its DTLS connects and the peer's PATH_BIND matches.
  negotiate(pc) {
    this.pc = pc;
    this.fps = null;
    this.peerOk = false;
  }

  // The session changed (new handshake): the peer must bind again over it.
  resetPeer() { this.peerOk = false; this.held = null; }

  get bound() { return !!(this.fps && this.peerOk); }

  connected(pc, fps) {
    if (pc !== this.pc) return null;
    this.fps = fps;
    this.pairs.push(fps);
    if (this.pairs.length > 4) this.pairs.shift();
    const held = this.held;
    this.held = null;
    return held ? this.check(held) : null;
  }

  // "bound" | "held" | "stale" | "mismatch" for a peer's PATH_BIND {peerCert, myCert}.
  check(b) {
    if (!this.fps) { this.held = b; this.stats.held++; return "held"; }
    if (bytesEqual(b.peerCert, this.fps.remote) && bytesEqual(b.myCert, this.fps.local)) {
      this.peerOk = true;
      this.stats.bound++;
      return "bound";
    }
    if (this.pairs.some((p) => bytesEqual(b.peerCert, p.remote) && bytesEqual(b.myCert, p.local))) {
      this.stats.stale++;
      return "stale";
    }
    this.stats.mismatch++;
    return "mismatch";
  }
}
