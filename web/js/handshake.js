// E2E handshake (docs/protocol.md section 3). The page is always the responder.
import { CryptoError, FrameType, bytesEqual, concat, utf8 } from "./frame.js";
import { sha256, hkdf, deriveSas } from "./crypto.js";
import { verifySignature, fingerprintOf } from "./identity.js";

const subtle = globalThis.crypto?.subtle;
const ZERO32 = new Uint8Array(32);

function u16(n) { return new Uint8Array([(n >> 8) & 0xff, n & 0xff]); }

export class Handshake {
  // x25519: optional {privateKey, publicBytes} for deterministic tests; otherwise a fresh key.
  constructor(identity, { sessionId, localFp = ZERO32, remoteFp = ZERO32, x25519 = null }) {
    this.identity = identity;
    this.sessionId = sessionId;
    this.localFp = localFp;
    this.remoteFp = remoteFp;
    this.x25519 = x25519;
    this.step = "commit";
    this.result = null;
    this.replyPayload = null;
  }

  get complete() { return this.result !== null; }

  start() { return null; } // responder waits for HS_COMMIT

  // Returns [type, payload] to send next, or null. Throws CryptoError on any check failure.
  async receive(type, payload) {
    if (this.step === "commit" && type === FrameType.HS_COMMIT) return this._onCommit(payload);
    if (this.step === "reveal" && type === FrameType.HS_REVEAL) return this._onReveal(payload);
    // A resent earlier step (byte-identical) is answered with our last message.
    if (this.step === "reveal" && type === FrameType.HS_COMMIT && bytesEqual(payload, this.commit)) {
      return [FrameType.HS_REPLY, this.replyPayload];
    }
    if (this.step === "done" && type === FrameType.HS_REVEAL && bytesEqual(payload, this.revealPayload)) {
      return [FrameType.HS_CONFIRM, this.confirmPayload];
    }
    throw new CryptoError("handshake", `unexpected handshake frame 0x${type.toString(16)} in step ${this.step}`);
  }

  async _onCommit(payload) {
    if (payload.length !== 32) throw new CryptoError("handshake", "HS_COMMIT payload must be 32 bytes");
    this.commit = new Uint8Array(payload);
    if (!this.x25519) {
      const kp = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
      this.x25519 = { privateKey: kp.privateKey, publicBytes: new Uint8Array(await subtle.exportKey("raw", kp.publicKey)) };
    }
    this.replyPayload = concat(this.x25519.publicBytes, this.identity.publicBytes, this.localFp, this.remoteFp);
    this.step = "reveal";
    return [FrameType.HS_REPLY, this.replyPayload];
  }

  async _onReveal(payload) {
    if (payload.length !== 192) throw new CryptoError("handshake", "HS_REVEAL payload must be 192 bytes");
    const eI = payload.slice(0, 32);
    const idI = payload.slice(32, 64);
    const fpILocal = payload.slice(64, 96);
    const fpRSeenByI = payload.slice(96, 128);
    const sigI = payload.slice(128, 192);
    const c = await sha256(concat(utf8("p2pmed v1 commit"), eI, idI));
    if (!bytesEqual(c, this.commit)) throw new CryptoError("commit", "reveal does not match the commitment");
    const sid = utf8(this.sessionId);
    const T = await sha256(concat(utf8("p2pmed v1 transcript"), u16(sid.length), sid,
      this.commit, this.replyPayload, payload.subarray(0, 128)));
    await verifySignature(idI, sigI, concat(utf8("p2pmed v1 initiator"), T));
    if (!bytesEqual(fpILocal, this.remoteFp) || !bytesEqual(fpRSeenByI, this.localFp)) {
      throw new CryptoError("fingerprint", "DTLS fingerprints differ from what the peer saw");
    }
    let shared;
    try {
      const peer = await subtle.importKey("raw", eI, { name: "X25519" }, false, []);
      shared = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: peer }, this.x25519.privateKey, 256));
    } catch {
      throw new CryptoError("handshake", "X25519 agreement failed");
    }
    const [i2r, r2i, sas, sigR, peerFingerprint] = await Promise.all([
      hkdf(shared, T, "p2pmed v1 i2r", 32),
      hkdf(shared, T, "p2pmed v1 r2i", 32),
      deriveSas(T),
      this.identity.sign(concat(utf8("p2pmed v1 responder"), T)),
      fingerprintOf(idI),
    ]);
    shared.fill(0);
    this.revealPayload = new Uint8Array(payload);
    this.confirmPayload = sigR;
    this.result = {
      send_chain: r2i, recv_chain: i2r, transcript_hash: T, sas,
      peer_public: idI, peer_fingerprint: peerFingerprint,
    };
    this.step = "done";
    return [FrameType.HS_CONFIRM, sigR];
  }
}
