// E2E crypto with WebCrypto (docs/protocol.md sections 2 and 3). Mirrors p2pmed/core/crypto.py.
import {
  CryptoError, HEADER_SIZE, CRC_SIZE, TAG_SIZE, concat, utf8, encode, packHeader, toHex, fromHex,
} from "./frame.js";
import { crc32 } from "./crc32.js";

const subtle = globalThis.crypto?.subtle;
export const EPOCH_FRAMES = 2 ** 24;
export const EPOCH_SECONDS = 3600;
export const OLD_EPOCH_GRACE = 10;
export const MAX_EPOCH_AHEAD = 2;
export const REPLAY_WINDOW = 4096;

export async function sha256(data) {
  return new Uint8Array(await subtle.digest("SHA-256", data));
}

export async function hkdf(ikm, salt, info, length) {
  const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt, info: typeof info === "string" ? utf8(info) : info },
    key, length * 8);
  return new Uint8Array(bits);
}

const EMPTY = new Uint8Array(0);

// Key and IV of one direction and epoch, plus the chain value of the next epoch.
async function epochMaterial(chain) {
  const [raw, iv, next] = await Promise.all([
    hkdf(chain, EMPTY, "p2pmed v1 key", 32),
    hkdf(chain, EMPTY, "p2pmed v1 iv", 4),
    hkdf(chain, EMPTY, "p2pmed v1 next", 32),
  ]);
  const key = await subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
  raw.fill(0);
  return { key, iv, next, chain: chain.slice() };
}

function nonceOf(iv, pnBytes) {
  const n = new Uint8Array(12);
  n.set(iv, 0);
  n.set(pnBytes, 4);
  return n;
}

export class SendKeys {
  static async create(chain, { epoch = 1, now }) {
    const k = new SendKeys();
    k.epoch = epoch;
    k.started = now;
    k.frames = 0;
    k.mat = await epochMaterial(chain);
    return k;
  }

  // Returns the full wire frame. header.length is recomputed; header.epoch is set to this.epoch.
  async seal(header, plaintext) {
    const length = plaintext.length + TAG_SIZE;
    const h = { ...header, epoch: this.epoch, length };
    const hdr = packHeader(h);
    const nonce = nonceOf(this.mat.iv, hdr.subarray(8, 16));
    const ct = new Uint8Array(await subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: hdr, tagLength: 128 }, this.mat.key, plaintext));
    this.frames++;
    const out = new Uint8Array(HEADER_SIZE + length + CRC_SIZE);
    out.set(hdr, 0);
    out.set(ct, HEADER_SIZE);
    const end = HEADER_SIZE + length;
    new DataView(out.buffer).setUint32(end, crc32(out, 0, end));
    return out;
  }

  // Secret state for resuming after a page reload (kept in this tab's sessionStorage only).
  snapshot() {
    return { epoch: this.epoch, chain: toHex(this.mat.chain), frames: this.frames };
  }

  static async restore(snap, now) {
    const k = await SendKeys.create(fromHex(snap.chain), { epoch: snap.epoch, now });
    k.frames = snap.frames;
    return k;
  }

  needsRatchet(now) {
    return this.frames >= EPOCH_FRAMES || now - this.started >= EPOCH_SECONDS;
  }

  async ratchet(now) {
    const old = this.mat;
    this.mat = await epochMaterial(old.next);
    old.next.fill(0);
    old.chain.fill(0);
    this.epoch += 1;
    this.started = now;
    this.frames = 0;
  }
}

export class RecvKeys {
  static async create(chain, { epoch = 1 } = {}) {
    const k = new RecvKeys();
    k.epoch = epoch;
    k.cur = await epochMaterial(chain);
    k.prev = null; // {epoch, mat}
    k.prevUntil = 0;
    k.ahead = []; // material of epoch+1, epoch+2, used only once a frame opens with it
    return k;
  }

  snapshot() {
    return { epoch: this.epoch, chain: toHex(this.cur.chain) };
  }

  static async restore(snap) {
    return RecvKeys.create(fromHex(snap.chain), { epoch: snap.epoch });
  }

  // frame: full wire bytes (already CRC/format-checked). Returns plaintext or throws CryptoError.
  async open(header, frame, now) {
    if (frame.length < HEADER_SIZE + TAG_SIZE + CRC_SIZE) throw new CryptoError("auth", "frame cannot hold a tag");
    if (this.prev && now >= this.prevUntil) this.prev = null;
    const e = header.epoch;
    const step = e - this.epoch;
    let mat;
    if (step === 0) mat = this.cur;
    else if (this.prev && e === this.prev.epoch) mat = this.prev.mat;
    else if (step > 0 && step <= MAX_EPOCH_AHEAD) {
      while (this.ahead.length < step) {
        const base = this.ahead.length ? this.ahead[this.ahead.length - 1] : this.cur;
        this.ahead.push(await epochMaterial(base.next));
      }
      mat = this.ahead[step - 1];
    } else {
      throw new CryptoError("epoch", `no key for epoch ${e} (holding ${this.epoch})`);
    }
    const pt = await this._decrypt(mat, frame);
    if (step < 0) this.prevUntil = now + OLD_EPOCH_GRACE;
    else if (step > 0) {
      // epoch e becomes current; e-1 stays as previous for the grace period.
      this.prev = { epoch: e - 1, mat: step === 1 ? this.cur : this.ahead[step - 2] };
      this.prevUntil = now + OLD_EPOCH_GRACE;
      this.cur = this.ahead[step - 1];
      this.ahead = this.ahead.slice(step);
      this.epoch = e;
    }
    return pt;
  }

  async _decrypt(mat, frame) {
    const hdr = frame.subarray(0, HEADER_SIZE);
    const body = frame.subarray(HEADER_SIZE, frame.length - CRC_SIZE);
    const nonce = nonceOf(mat.iv, hdr.subarray(8, 16));
    try {
      return new Uint8Array(await subtle.decrypt(
        { name: "AES-GCM", iv: nonce, additionalData: hdr, tagLength: 128 }, mat.key, body));
    } catch {
      throw new CryptoError("auth", "AEAD tag does not verify");
    }
  }
}

export class ReplayWindow {
  constructor(size = REPLAY_WINDOW) {
    this.size = size;
    this.highest = -1;
    this.floor = -1; // after a resume: every pn <= floor counts as seen
    this.seen = new Set();
  }
  check(pn) {
    if (typeof pn !== "number") throw new CryptoError("replay", "packet number out of range");
    if (pn <= this.floor) throw new CryptoError("replay", `pn ${pn} at or below the resume point`);
    if (this.highest >= 0 && pn <= this.highest - this.size) throw new CryptoError("replay", `pn ${pn} too old`);
    if (this.seen.has(pn)) throw new CryptoError("replay", `pn ${pn} already accepted`);
  }
  accept(pn) {
    this.seen.add(pn);
    if (pn > this.highest) {
      this.highest = pn;
      if (this.seen.size > this.size * 2) {
        const floor = this.highest - this.size;
        for (const x of this.seen) if (x <= floor) this.seen.delete(x);
      }
    }
  }
}

export async function deriveSas(transcriptHash) {
  const h = await sha256(concat(utf8("p2pmed v1 sas"), transcriptHash));
  const v = new DataView(h.buffer).getUint32(0) % 1000000;
  const s = String(v).padStart(6, "0");
  return `${s.slice(0, 3)} ${s.slice(3)}`;
}

export { encode };
