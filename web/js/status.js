// PATIENT_STATUS (CONTROL command 5, p2pmed/vitals/status.py): the patient's label, FHIR subject,
// HR source and whether its stream is still running. Decoded here with the same checks and
// CodecError reasons until vitals.js knows command 5.
import { CodecError } from "./frame.js";

export const PATIENT_STATUS = 5;
export const Stream = Object.freeze({ STREAMING: 0, ENDED: 1 });
const CONTROL = 0x05;
const VERSION = 1;
const SUBJECT_RE = /^[\x21-\x7e]{0,255}$/;
const HR_SOURCE_RE = /^[a-z0-9-]{0,32}$/;
const CONTROL_CHARS = /[\x00-\x1f\x7f-\x9f]/;

export const isStatus = (b) => b.length >= 3 && b[0] === CONTROL && b[2] === PATIENT_STATUS;

const check = (cond, reason, detail = "") => { if (!cond) throw new CodecError(reason, detail); };

export function decodeStatus(bytes) {
  const b = new Uint8Array(bytes);
  check(b.length >= 8, "truncated", "shorter than the PATIENT_STATUS head");
  check(b[0] === CONTROL, "kind");
  check(b[1] === VERSION, "version");
  check(b[2] === PATIENT_STATUS, "command");
  const counter = new DataView(b.buffer, b.byteOffset, b.length).getUint32(3);
  const stream = b[7];
  check(stream === 0 || stream === 1, "stream", String(stream));
  let pos = 8;
  const texts = [];
  for (const reason of ["label", "subject", "hr-source"]) {
    check(pos < b.length, "truncated", `no ${reason} length`);
    const n = b[pos];
    check(pos + 1 + n <= b.length, "truncated", `${reason} needs ${n} bytes`);
    const raw = b.subarray(pos + 1, pos + 1 + n);
    pos += 1 + n;
    let text;
    try {
      text = new TextDecoder(reason === "label" ? "utf-8" : "ascii", { fatal: true, ignoreBOM: true }).decode(raw);
    } catch {
      throw new CodecError(reason, "invalid encoding");
    }
    if (reason !== "label") check(raw.every((c) => c < 0x80), reason, "not ASCII");
    texts.push(text);
  }
  check(pos === b.length, "trailing", `${b.length - pos} bytes after the message`);
  const [label, subject, hrSource] = texts;
  check(!CONTROL_CHARS.test(label), "label", "control character");
  check(SUBJECT_RE.test(subject), "subject");
  check(HR_SOURCE_RE.test(hrSource), "hr-source");
  return { kind: "patient_status", counter, stream, label, subject, hrSource };
}
