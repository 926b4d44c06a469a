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
