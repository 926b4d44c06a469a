// Long-term Ed25519 identity: a non-extractable private key kept in IndexedDB.
import { sha256 } from "./crypto.js";
import { CryptoError, toHex } from "./frame.js";

const subtle = globalThis.crypto?.subtle;
const DB = "p2pmed";
const STORE = "identity";

function idb(mode, fn) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const tx = open.result.transaction(STORE, mode);
      const req = fn(tx.objectStore(STORE));
      tx.oncomplete = () => { open.result.close(); resolve(req.result); };
      tx.onerror = () => { open.result.close(); reject(tx.error); };
    };
  });
}

// Same text as Python's fingerprint_of(): "p2pmed:" + the first 128 bits of SHA-256(public key)
// as 8 groups of 4 hex digits.
export async function fingerprintOf(publicBytes) {
  const hex = toHex((await sha256(publicBytes)).subarray(0, 16));
  return "p2pmed:" + hex.match(/.{4}/g).join(" ");
}

export class Identity {
  constructor(keyPair, publicBytes) {
    this.keyPair = keyPair;
    this.publicBytes = publicBytes;
  }

  static async generate() {
    const kp = await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    const pub = new Uint8Array(await subtle.exportKey("raw", kp.publicKey));
    return new Identity(kp, pub);
  }

  // Loads the page's identity from IndexedDB, creating and storing it on first use.
  static async loadOrCreate(name = "clinician") {
    const stored = await idb("readonly", (s) => s.get(name));
    if (stored && stored.privateKey && stored.publicKey) {
      const pub = new Uint8Array(await subtle.exportKey("raw", stored.publicKey));
      return new Identity(stored, pub);
    }
    const id = await Identity.generate();
    await idb("readwrite", (s) => s.put({ privateKey: id.keyPair.privateKey, publicKey: id.keyPair.publicKey }, name));
    return id;
  }

  async sign(data) {
    return new Uint8Array(await subtle.sign({ name: "Ed25519" }, this.keyPair.privateKey, data));
  }

  fingerprint() { return fingerprintOf(this.publicBytes); }
}

export async function verifySignature(publicBytes, signature, data) {
  let ok = false;
  try {
    const key = await subtle.importKey("raw", publicBytes, { name: "Ed25519" }, false, ["verify"]);
    ok = await subtle.verify({ name: "Ed25519" }, key, signature, data);
  } catch {
    ok = false;
  }
  if (!ok) throw new CryptoError("signature", "Ed25519 signature does not verify");
}
