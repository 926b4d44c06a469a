"""PATIENT_STATUS: what a patient node tells each clinician about itself, as CONTROL command 5.

Sent by the patient when a session is established and again whenever something in it
changes (the source ended). It carries the patient label, the FHIR subject the patient's
data belong to, where the HR comes from, and whether the stream is still running, so a
clinician can tell "the recording is over" (the link is up, no more vitals will come) from
"the link is lost".

Layout (docs/protocol.md section 7.5 style; all strings str8 = u8 length || bytes):

    0  1  kind = 0x05 (CONTROL)      1  1  version = 0x01
    2  1  command = 0x05 PATIENT_STATUS
    3  4  request_id  u32: the sender's status counter (a later status replaces an earlier one)
    7  1  stream      u8: 0 STREAMING, 1 ENDED (the source has no more data)
    8  .. label       str8 UTF-8, 0..255 bytes, no control characters; empty = no label
    .. .. subject     str8 ASCII 0x21..0x7E, 0..255 bytes: FHIR reference of the patient
                      (e.g. "Patient/123"); empty = "Patient/<sender's endpoint id>"
    .. .. hr_source   str8 ASCII [a-z0-9-], 0..32 bytes: "synthetic", "annotations",
                      "ecg-detector" ...; empty = the source has no HR

The codec module does not know command 5 yet (it rejects it as `command`): until it does,
this module encodes and decodes it, with the same rules and CodecError reasons.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass

from p2pmed.core.errors import CodecError
from p2pmed.vitals.codec import VERSION, Kind

PATIENT_STATUS = 5
MAX_LABEL = 255
MAX_SUBJECT = 255
_HEAD = struct.Struct(">BBBIB")
_SUBJECT_RE = re.compile(r"[\x21-\x7e]{0,255}")
_HR_SOURCE_RE = re.compile(r"[a-z0-9-]{0,32}")


class Stream(enum.IntEnum):
    STREAMING = 0
    ENDED = 1


def _check(cond: bool, reason: str, detail: str = "") -> None:
    if not cond:
        raise CodecError(reason, detail)


@dataclass(frozen=True)
class PatientStatus:
    counter: int = 0
    stream: Stream = Stream.STREAMING
    label: str = ""
    subject: str = ""
    hr_source: str = ""

    def __post_init__(self) -> None:
        _check(
            isinstance(self.counter, int) and 0 <= self.counter <= 0xFFFFFFFF,
            "request-id",
            "must be a u32",
        )
        _check(self.stream in set(Stream), "stream", repr(self.stream))
        object.__setattr__(self, "stream", Stream(self.stream))
        _check(isinstance(self.label, str), "label", "must be str")
        try:
            raw = self.label.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CodecError("label", "not encodable as UTF-8") from exc
        _check(len(raw) <= MAX_LABEL, "label", f"{len(raw)} bytes")
        _check(
            not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in self.label),
            "label",
            "control character",
        )
        _check(
            isinstance(self.subject, str) and _SUBJECT_RE.fullmatch(self.subject) is not None,
            "subject",
            repr(self.subject)[:80],
        )
        _check(
            isinstance(self.hr_source, str) and _HR_SOURCE_RE.fullmatch(self.hr_source) is not None,
            "hr-source",
            repr(self.hr_source)[:80],
        )

    def encode(self) -> bytes:
        out = _HEAD.pack(Kind.CONTROL, VERSION, PATIENT_STATUS, self.counter, self.stream)
        for text in (self.label, self.subject, self.hr_source):
            raw = text.encode()
            out += bytes([len(raw)]) + raw
        return out


def is_status(data: bytes) -> bool:
    """True for bytes that claim to be a PATIENT_STATUS (decode() still checks them)."""
    return len(data) >= 3 and data[0] == Kind.CONTROL and data[2] == PATIENT_STATUS


def decode(data: bytes) -> PatientStatus:
    data = bytes(data)
    _check(len(data) >= _HEAD.size, "truncated", "shorter than the PATIENT_STATUS head")
    kind, version, command, counter, stream = _HEAD.unpack_from(data)
    _check(kind == Kind.CONTROL, "kind", f"0x{kind:02x}")
    _check(version == VERSION, "version", str(version))
    _check(command == PATIENT_STATUS, "command", str(command))
    _check(stream in set(Stream), "stream", str(stream))
    pos = _HEAD.size
    texts: list[str] = []
    for reason in ("label", "subject", "hr-source"):
        _check(pos < len(data), "truncated", f"no {reason} length")
        n = data[pos]
        _check(pos + 1 + n <= len(data), "truncated", f"{reason} needs {n} bytes")
        raw = data[pos + 1 : pos + 1 + n]
        pos += 1 + n
        try:
            texts.append(raw.decode("utf-8" if reason == "label" else "ascii"))
        except UnicodeDecodeError as exc:
            raise CodecError(reason, "invalid encoding") from exc
    _check(pos == len(data), "trailing", f"{len(data) - pos} bytes after the message")
    return PatientStatus(counter, Stream(stream), *texts)
