// Trust on first use of the patient's identity key, kept in IndexedDB per session id and role:
// the first fingerprint seen is pinned; a different one later is refused. "SAS verified" is
// recorded with the pin when the clinician marks it.
const DB = "p2pmed-pins";
const STORE = "pins";

function withStore(mode, fn) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const tx = db.transaction(STORE, mode);
      const req = fn(tx.objectStore(STORE));
      tx.oncomplete = () => { db.close(); resolve(req.result); };
      tx.onerror = tx.onabort = () => { db.close(); reject(tx.error); };
    };
  });
}

const keyOf = (sessionId, role) => `${sessionId}\n${role}`;

export async function getPin(sessionId, role) {
  return (await withStore("readonly", (s) => s.get(keyOf(sessionId, role)))) || null;
}

// {status: "pinned"|"match"|"changed", pin}: pins on first use, never overwrites a different key.
export async function checkPin(sessionId, role, fingerprint) {
  const key = keyOf(sessionId, role);
  let result = null;
  await withStore("readwrite", (s) => {
    const req = s.get(key);
    req.onsuccess = () => {
      const pin = req.result;
      if (!pin) {
        const fresh = { fingerprint, verified: false, pinnedAt: Date.now(), verifiedAt: null };
        s.put(fresh, key);
        result = { status: "pinned", pin: fresh };
      } else result = { status: pin.fingerprint === fingerprint ? "match" : "changed", pin };
    };
    return req;
  });
  return result;
}

// Records that the clinician compared the SAS for this pinned key; false if the pin is another key.
export async function markVerified(sessionId, role, fingerprint) {
  const key = keyOf(sessionId, role);
  let ok = false;
  await withStore("readwrite", (s) => {
    const req = s.get(key);
    req.onsuccess = () => {
      const pin = req.result || { fingerprint, pinnedAt: Date.now() };
      if (pin.fingerprint !== fingerprint) return;
      s.put({ ...pin, verified: true, verifiedAt: Date.now() }, key);
      ok = true;
    };
    return req;
  });
  return ok;
}

// The clinician said the codes do not match: the pinned key is recorded as failed (not verified),
// and a session with it is refused from then on. A pin of another key is left as it is.
export async function markMismatch(sessionId, role, fingerprint) {
  const key = keyOf(sessionId, role);
  let ok = false;
  await withStore("readwrite", (s) => {
    const req = s.get(key);
    req.onsuccess = () => {
      const pin = req.result || { fingerprint, pinnedAt: Date.now() };
      if (pin.fingerprint !== fingerprint) return;
      s.put({ ...pin, verified: false, verifiedAt: null, mismatchAt: Date.now() }, key);
      ok = true;
    };
    return req;
  });
  return ok;
}

// The label the patient node gave itself, kept with its pin for the waiting room of a later visit.
export async function rememberLabel(sessionId, role, fingerprint, label) {
  const key = keyOf(sessionId, role);
  await withStore("readwrite", (s) => {
    const req = s.get(key);
    req.onsuccess = () => {
      const pin = req.result;
      if (pin && pin.fingerprint === fingerprint && pin.label !== label) s.put({ ...pin, label }, key);
    };
    return req;
  });
}
