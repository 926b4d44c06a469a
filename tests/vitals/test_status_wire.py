"""PATIENT_STATUS (CONTROL command 5) in the vitals codec: layout, round trip, every rejection
and the order of the checks (docs/protocol.md 7.5 and 7.7)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from p2pmed.core.errors import CodecError
from p2pmed.vitals import codec
from p2pmed.vitals.codec import PatientStatus, Stream


def test_layout_is_as_documented() -> None:
    st = PatientStatus(
        2, Stream.ENDED, label="Bed 7", subject="Patient/p-1", hr_source="annotations"
    )
    data = codec.encode(st)
    assert data == (
        bytes.fromhex("05 01 05 00000002 01")  # CONTROL v1, PATIENT_STATUS, 2, ENDED
        + b"\x05Bed 7"
        + b"\x0bPatient/p-1"
        + b"\x0bannotations"
    )
    assert codec.decode(data) == st
    empty = PatientStatus()
    assert codec.encode(empty) == bytes.fromhex("05 01 05 00000000 00 00 00 00")
    assert codec.decode(codec.encode(empty)) == empty


def test_longest_fields_round_trip() -> None:
    st = PatientStatus(
        0xFFFFFFFF, Stream.STREAMING, "é" * 127 + "x", "P" * 255, "a" * 32
    )  # 255-byte label
    assert codec.decode(codec.encode(st)) == st


def test_non_ascii_label_round_trips() -> None:
    st = PatientStatus(label="Ånna Ö — 床 7")
    got = codec.decode(codec.encode(st))
    assert isinstance(got, PatientStatus) and got.label == "Ånna Ö — 床 7"


def test_other_control_commands_are_still_control() -> None:
    ping = codec.decode(codec.encode(codec.Control(codec.Command.PING_TEXT, 9, text="hi")))
    assert isinstance(ping, codec.Control)


HEAD = "05 01 05 00000000"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (HEAD, "truncated"),  # no stream byte
        (HEAD + "00 00 00", "truncated"),  # no hr_source length
        (HEAD + "00 05 41", "truncated"),  # label shorter than its length
        (HEAD + "00 00 00 00 00", "trailing"),
        (HEAD + "02 00 00 00", "stream"),
        ("05 02 05 00000000 00 00 00 00", "version"),
        ("05 01 06 00000000 00 00 00 00", "command"),
        (HEAD + "00 02 c3 28 00 00", "label"),  # bad UTF-8
        (HEAD + "00 01 07 00 00", "label"),  # BEL
        (HEAD + "00 02 c2 85 00 00", "label"),  # C1 NEL
        (HEAD + "00 00 01 20 00", "subject"),  # space
        (HEAD + "00 00 01 ff 00", "subject"),  # not ASCII
        (HEAD + "00 00 00 01 41", "hr-source"),  # upper case
        (HEAD + "00 00 00 21" + "61" * 33, "hr-source"),  # 33 bytes
        # order of the checks: stream as soon as it is read, encodings as they are read,
        # then trailing, then the content rules (label, subject, hr_source)
        (HEAD + "02 05", "stream"),
        (HEAD + "00 00 01 ff", "subject"),
        (HEAD + "00 01 07 00 00 00", "trailing"),
        (HEAD + "00 01 07 01 20 00", "label"),
    ],
)
def test_rejections(data: str, reason: str) -> None:
    with pytest.raises(CodecError) as exc:
        codec.decode(bytes.fromhex(data))
    assert (exc.value.kind, exc.value.reason) == ("codec", reason)


def test_constructor_refuses_what_the_wire_cannot_carry() -> None:
    for kwargs, reason in [
        ({"label": "x" * 256}, "label"),
        ({"label": "a\nb"}, "label"),
        ({"label": "\ud800"}, "label"),
        ({"subject": "Patient/" + "a" * 248}, "subject"),
        ({"subject": "Patient/a b"}, "subject"),
        ({"hr_source": "ECG"}, "hr-source"),
        ({"request_id": -1}, "request-id"),
        ({"request_id": 2**32}, "request-id"),
        ({"stream": 2}, "stream"),
    ]:
        with pytest.raises(CodecError) as exc:
            PatientStatus(**kwargs)  # type: ignore[arg-type]
        assert exc.value.reason == reason, kwargs


def test_doc_example_and_reasons() -> None:
    """docs/protocol.md 7.5.1's worked example decodes field by field; 7.7 names the reasons."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    hexstr = re.search(r"<!-- example: patient-status -->\s*```hex\n(.*?)```", doc, re.S)
    assert hexstr is not None
    st = codec.decode(bytes.fromhex(hexstr.group(1)))
    assert isinstance(st, PatientStatus)
    assert (st.request_id, st.stream, st.label, st.subject, st.hr_source) == (
        2, Stream.ENDED, "Bed 7", "Patient/p-1", "annotations"
    )  # fmt: skip
    reasons = doc.split("### 7.7 Rejection reasons", 1)[1].split("\n## ", 1)[0]
    for reason in ("stream", "label", "subject", "hr-source", "trailing", "truncated"):
        assert f"`{reason}`" in reasons
    table = doc.split("## 7. Application messages", 1)[1].split("### 7.1", 1)[0]
    assert re.search(r"\| 0x01 \| NUMERICS\s*\| HIGH\s*\|", table)
    assert "class **HIGH**" in doc.split("#### 7.5.1 PATIENT_STATUS", 1)[1]
