"""JSON schemas of every client->server message, and a validator that names the problem."""

from __future__ import annotations

import json
from typing import Any

import fastjsonschema

# "(?![\\s\\S])" and not "$": in Python's re, "$" also matches before a final newline
ENDPOINT_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}(?![\\s\\S])"}
SDP = {"type": "string", "minLength": 1, "maxLength": 32768}


def _msg(type_: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"type": {"const": type_}, **props},
        "required": ["type", *required],
        "additionalProperties": False,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "join": _msg(
        "join",
        {
            "token": {"type": "string", "minLength": 1, "maxLength": 4096},
            "endpoint_id": ENDPOINT_ID,
            "session": ENDPOINT_ID,
        },
        ["token", "endpoint_id"],
    ),
    "admit": _msg("admit", {"endpoint_id": ENDPOINT_ID}, ["endpoint_id"]),
    "offer": _msg("offer", {"to": ENDPOINT_ID, "sdp": SDP}, ["to", "sdp"]),
    "answer": _msg("answer", {"to": ENDPOINT_ID, "sdp": SDP}, ["to", "sdp"]),
    "candidate": _msg(
        "candidate",
        {
            "to": ENDPOINT_ID,
            "candidate": {
                "type": ["object", "null"],
                "properties": {
                    "candidate": {"type": "string", "maxLength": 1024},
                    "sdpMid": {"type": ["string", "null"], "maxLength": 64},
                    "sdpMLineIndex": {"type": ["integer", "null"], "minimum": 0, "maximum": 64},
                    "usernameFragment": {"type": ["string", "null"], "maxLength": 256},
                },
                "additionalProperties": False,
            },
        },
        ["to", "candidate"],
    ),
    "leave": _msg("leave", {}, []),
    # the sender's E2E session with that (revoked) endpoint is closed on every path
    "revocation-done": _msg("revocation-done", {"endpoint_id": ENDPOINT_ID}, ["endpoint_id"]),
    "ping": _msg("ping", {"id": {"type": ["string", "integer"], "maxLength": 64}}, []),
    "audit": _msg(
        "audit",
        {
            "event": {"enum": ["alarm-ack"]},
            "alarm_id": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}(?![\\s\\S])"},
        },
        ["event", "alarm_id"],
    ),
}

# compiled to Python code once: a join storm validates every message (jsonschema's generic
# validator cost 19 us a message here, about 5 % of a server's CPU per join; this 1 us)
_BASE = fastjsonschema.compile(
    {
        "type": "object",
        "properties": {"type": {"enum": sorted(SCHEMAS)}},
        "required": ["type"],
    }
)
_VALIDATORS = {k: fastjsonschema.compile(v) for k, v in SCHEMAS.items()}


class SchemaError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def validate(msg: Any) -> dict[str, Any]:
    """`msg` if it is a valid client message, else SchemaError naming the field and rule."""
    try:
        _BASE(msg)
        _VALIDATORS[msg["type"]](msg)
    except fastjsonschema.JsonSchemaValueException as e:
        # "data.to must match pattern ...": the library calls the message "data"
        raise SchemaError(("message" + e.message.removeprefix("data"))[:300]) from None
    return msg  # type: ignore[no-any-return]


def decode(raw: str | bytes) -> dict[str, Any]:
    """A client's text message parsed and validated; SchemaError "invalid JSON" when it does
    not parse, nesting too deep for the decoder (which raises RecursionError) included."""
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        raise SchemaError("invalid JSON") from None
    return validate(msg)
