// Strict checks on a remote SDP before the browser may use it (docs/protocol.md, PATH_BIND contract).
// The page never binds security to these strings (the DTLS-verified certificate is what counts);
// it refuses SDP that parsers could read differently, so nothing ambiguous reaches the browser.
import { fromHex } from "./frame.js";

export class SdpError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = "SdpError";
    this.reason = reason;
  }
}

// Any line break other than CRLF or LF: a lone CR, and the other breaks some parsers split on.
const ODD_BREAK = /\r(?!\n)|[\v\f\x1c\x1d\x1e\x85\u2028\u2029]/;
const FP_LINE = /^a=fingerprint:(\S+)\s+(\S+)\s*$/i;

// Returns the single sha-256 fingerprint (32 bytes) the SDP declares; throws SdpError otherwise.
export function checkSdp(sdp) {
  if (typeof sdp !== "string" || !sdp) throw new SdpError("empty", "no SDP");
  if (ODD_BREAK.test(sdp)) throw new SdpError("line-break", "SDP has a line break other than CRLF or LF (a lone CR?)");
  const sections = [[]]; // [0] = session level, then one per m= section
  for (const line of sdp.split(/\r?\n/)) {
    if (/^m=/.test(line)) sections.push([]);
    if (/^a=fingerprint:/i.test(line)) {
      const m = FP_LINE.exec(line);
      if (!m) throw new SdpError("fingerprint-syntax", `malformed fingerprint line: ${line.slice(0, 80)}`);
      sections[sections.length - 1].push([m[1].toLowerCase(), m[2].toLowerCase()]);
    }
  }
  const byAlg = new Map(); // algorithm -> set of values
  for (const sec of sections) {
    for (const [alg, value] of sec) {
      if (!byAlg.has(alg)) byAlg.set(alg, new Set());
      byAlg.get(alg).add(value);
    }
  }
  for (const [alg, values] of byAlg) {
    if (values.size > 1) throw new SdpError("fingerprint-disagree", `${values.size} different ${alg} fingerprints in the SDP`);
  }
  const sha = byAlg.get("sha-256");
  if (!sha) throw new SdpError("fingerprint-missing", "SDP has no sha-256 fingerprint");
  // every section that names a certificate names the same sha-256 one
  for (let i = 0; i < sections.length; i++) {
    const sec = sections[i];
    if (sec.length && !sec.some(([alg]) => alg === "sha-256")) {
      throw new SdpError("fingerprint-disagree", `SDP section ${i} has fingerprints but no sha-256 one`);
    }
  }
  const hex = [...sha][0];
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){31}$/.test(hex)) throw new SdpError("fingerprint-syntax", "sha-256 fingerprint is not 32 bytes of hex");
  return fromHex(hex.replace(/:/g, ""));
}
