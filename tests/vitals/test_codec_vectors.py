"""p2pmed.vitals.codec against the shared vectors (tests/vectors/wire_v1.json, section 7)."""

from __future__ import annotations

from typing import Any

import pytest

from p2pmed.core.errors import CodecError
from p2pmed.vitals import codec
from tests.vectors.wire import VECTORS, ids, neutral


@pytest.mark.parametrize("v", VECTORS["vitals"], ids=ids("vitals"))
def test_vitals_vector(v: dict[str, Any]) -> None:
    data = bytes.fromhex(v["hex"])
    if "error" in v:
        with pytest.raises(CodecError) as exc:
            codec.decode(data)
        assert [exc.value.kind, exc.value.reason] == v["error"], v.get("why")
        return
    msg = codec.decode(data)
    assert neutral(msg) == v["message"]
    assert codec.encode(msg) == data  # one encoding per message


def test_every_rejection_reason_has_a_vector() -> None:
    reasons = {v["error"][1] for v in VECTORS["vitals"] if "error" in v}
    # `type` (not bytes) and `malformed` (a decoder bug) cannot come from wire bytes;
    # `timestamp`, `value` of NUMERICS, `alarm-id`, `request-id`, `field` and `sample`
    # guard the Python constructors only: every wire value of those fields is valid.
    assert reasons == {
        "oversized", "truncated", "trailing", "kind", "version", "patient", "flags", "signal",
        "rate", "seq", "scale", "unit", "count", "priority", "state", "category", "value",
        "condition", "who", "command", "rule", "limit", "text",
    }  # fmt: skip


@pytest.mark.parametrize("v", VECTORS["patient_status"], ids=ids("patient_status"))
def test_patient_status_vector(v: dict[str, Any]) -> None:
    test_vitals_vector(v)


def test_patient_status_vectors_cover_every_reason() -> None:
    reasons = {v["error"][1] for v in VECTORS["patient_status"] if "error" in v}
    # `kind` and `command` cannot be reached from a PATIENT_STATUS (they select it; `command`
    # has its vitals vector) and `request-id` guards the constructor only
    assert reasons == {
        "truncated", "trailing", "version", "stream", "label", "subject", "hr-source",
    }  # fmt: skip
    kept = {v["message"]["stream"] for v in VECTORS["patient_status"] if "message" in v}
    assert kept == {0, 1}


def test_command_5_only_in_its_own_section() -> None:
    """The page's vitals decoder is held to "vitals" and does not know command 5 yet."""
    assert not [v["name"] for v in VECTORS["vitals"] if v["hex"].startswith("0501" + "05")]
    assert all(v["hex"][4:6] == "05" for v in VECTORS["patient_status"] if "message" in v)


@pytest.mark.parametrize("v", VECTORS["devices"], ids=ids("devices"))
def test_device_vector(v: dict[str, Any]) -> None:
    test_vitals_vector(v)


def test_device_vectors_cover_every_reason() -> None:
    reasons = {v["error"][1] for v in VECTORS["devices"] if "error" in v}
    # `timestamp` and `code` guard the constructors only: every wire value is valid
    assert reasons == {
        "truncated", "trailing", "value", "flags", "unit", "label", "patient", "state",
        "protocol", "device",
    }  # fmt: skip
