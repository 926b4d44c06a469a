"""PATIENT_STATUS (CONTROL command 5): layout, round trip and every rejection."""

from __future__ import annotations

import pytest

from p2pmed.core.errors import CodecError
from p2pmed.vitals import codec, status
from p2pmed.vitals.status import PatientStatus, Stream


def test_layout_is_as_documented() -> None:
    st = PatientStatus(
        2, Stream.ENDED, label="Bed 7", subject="Patient/p-1", hr_source="annotations"
    )
    assert st.encode() == (
        bytes.fromhex("05 01 05 00000002 01")  # CONTROL v1, PATIENT_STATUS, 2, ENDED
        + b"\x05Bed 7"
        + b"\x0bPatient/p-1"
        + b"\x0bannotations"
    )
    assert status.decode(st.encode()) == st
    assert status.is_status(st.encode())
    empty = PatientStatus()
    assert empty.encode() == bytes.fromhex("05 01 05 00000000 00 00 00 00")
    assert status.decode(empty.encode()) == empty


def test_non_ascii_label_round_trips() -> None:
    st = PatientStatus(label="Ånna Ö — 床 7")
    assert status.decode(st.encode()).label == "Ånna Ö — 床 7"


def test_other_control_commands_are_not_status() -> None:
    ping = codec.encode(codec.Control(codec.Command.PING_TEXT, 9, text="hi"))
    assert not status.is_status(ping)
    assert not status.is_status(b"\x05\x01")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex("05 01 05 00000000"), "truncated"),
        (bytes.fromhex("05 01 05 00000000 00 00 00"), "truncated"),
        (bytes.fromhex("05 01 05 00000000 00 05 41"), "truncated"),
        (bytes.fromhex("05 01 05 00000000 00 00 00 00 00"), "trailing"),
        (bytes.fromhex("05 01 05 00000000 02 00 00 00"), "stream"),
        (bytes.fromhex("05 02 05 00000000 00 00 00 00"), "version"),
        (bytes.fromhex("01 01 05 00000000 00 00 00 00"), "kind"),
        (bytes.fromhex("05 01 04 00000000 00 00 00 00"), "command"),
        (bytes.fromhex("05 01 05 00000000 00 02 c3 28 00 00"), "label"),  # bad UTF-8
        (bytes.fromhex("05 01 05 00000000 00 01 07 00 00"), "label"),  # control char
        (bytes.fromhex("05 01 05 00000000 00 00 01 20 00"), "subject"),  # space
        (bytes.fromhex("05 01 05 00000000 00 00 01 ff 00"), "subject"),  # not ASCII
        (bytes.fromhex("05 01 05 00000000 00 00 00 01 41"), "hr-source"),  # upper case
    ],
)
def test_rejections(data: bytes, reason: str) -> None:
    with pytest.raises(CodecError) as exc:
        status.decode(data)
    assert exc.value.reason == reason


def test_constructor_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(CodecError):
        PatientStatus(label="x" * 256)
    with pytest.raises(CodecError):
        PatientStatus(subject="Patient/" + "a" * 250)
    with pytest.raises(CodecError):
        PatientStatus(counter=-1)
    with pytest.raises(CodecError):
        PatientStatus(label="\ud800")
