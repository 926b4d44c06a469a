"""Schema validation of hostile input: only SchemaError or a valid message, never a crash."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.schema import SCHEMAS, SchemaError, validate

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
keys = st.sampled_from(
    [
        "type",
        "to",
        "sdp",
        "token",
        "endpoint_id",
        "candidate",
        "event",
        "alarm_id",
        "session",
        "from",
        "x",
    ]
)
messages = st.dictionaries(keys, values | st.sampled_from(sorted(SCHEMAS)), max_size=5)


@given(messages | values)
@settings(max_examples=400, deadline=None)
def test_hostile_messages(msg: object) -> None:
    try:
        out = validate(msg)
    except SchemaError as e:
        assert e.message and len(e.message) <= 300
        return
    assert isinstance(out, dict) and out["type"] in SCHEMAS
    assert set(out) <= set(SCHEMAS[out["type"]]["properties"])


def test_valid_examples_pass() -> None:
    for msg in (
        {"type": "join", "token": "t", "endpoint_id": "a-b_C9"},
        {"type": "admit", "endpoint_id": "p"},
        {"type": "offer", "to": "d", "sdp": "v=0"},
        {"type": "answer", "to": "d", "sdp": "v=0"},
        {
            "type": "candidate",
            "to": "d",
            "candidate": {"candidate": "c", "sdpMid": None, "sdpMLineIndex": None},
        },
        {"type": "leave"},
        {"type": "audit", "event": "alarm-ack", "alarm_id": "hr-high:42"},
    ):
        assert validate(json.loads(json.dumps(msg))) == msg


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "join", "token": "t", "endpoint_id": "x" * 65},
        {"type": "join", "token": "t", "endpoint_id": ""},
        {"type": "join", "token": "t", "endpoint_id": "a\n"},
        {"type": "offer", "to": "d", "sdp": "x" * 40000},
        {"type": "candidate", "to": "d", "candidate": {"candidate": "c", "evil": 1}},
        {"type": "audit", "event": "anything", "alarm_id": "a"},
        {"type": "leave", "from": "spoofed"},
    ],
)
def test_invalid_examples_fail(msg: dict[str, object]) -> None:
    with pytest.raises(SchemaError):
        validate(msg)


# Near-valid messages: each type's own fields (and a stray one) filled from values that
# pass or just miss a rule, so both the accepting and the rejecting paths are exercised.
ids = st.sampled_from(["a", "A-b_9", "x" * 64, "x" * 65, "", "a b", "a\n", "é", "a/b"])
near = (
    ids
    | st.sampled_from(["alarm-ack", "hr-high:42", "v=0", "x" * 32769, "x" * 4097])
    | st.none()
    | st.booleans()
    | st.sampled_from([0, 64, 65, -1, 1.0, 1.5, 2**70])
    | st.fixed_dictionaries(
        {},
        optional={
            "candidate": st.text(max_size=4) | st.integers(),
            "sdpMid": st.none() | ids | st.integers(),
            "sdpMLineIndex": st.none() | st.sampled_from([0, 64, 65, -1, 3.0, "1", True]),
            "usernameFragment": st.none() | ids,
            "evil": st.just(1),
        },
    )
)


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(sorted(SCHEMAS)))
    fields = [*SCHEMAS[kind]["properties"], "from"]
    msg: dict[str, object] = {"type": kind}
    for name in fields[1:]:
        if draw(st.integers(0, 3)):  # mostly present
            msg[name] = draw(near)
    return msg


@given(near_valid() | messages | values)
@settings(max_examples=1500, deadline=None)
def test_accepts_exactly_what_the_reference_validator_accepts(msg: object) -> None:
    """The server validates with schemas compiled by fastjsonschema; jsonschema's Draft
    2020-12 validator is the reference: every message one accepts, the other accepts."""
    ref = jsonschema.Draft202012Validator
    expected = (
        isinstance(msg, dict)
        and isinstance(msg.get("type"), str)
        and msg["type"] in SCHEMAS
        and ref(SCHEMAS[msg["type"]]).is_valid(msg)
    )
    try:
        validate(msg)
        accepted = True
    except SchemaError:
        accepted = False
    assert accepted == expected, msg
