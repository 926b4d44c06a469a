"""The server's resume token, kept under --data-dir (`resume_token`, 0600) so that a node
restarted after its join token expired can still rejoin as itself.

A stored token is used only when it belongs to the session, role and endpoint the node is
joining now: a data dir reused with another join URL must not rejoin the old session. The
claims are read without checking the signature; the server checks it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any

from p2pmed.node import private

FILE = "resume_token"
log = logging.getLogger("p2pmed.node.resume")


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified; {} when it cannot be read."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def load(data_dir: str | None, join_token: str, endpoint_id: str) -> str | None:
    if data_dir is None:
        return None
    try:
        data = private.read(os.path.join(data_dir, FILE), 8192)
        if data is None:
            return None
        token = data.decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    mine, join = claims(token), claims(join_token)
    same = (
        mine.get("eid") == endpoint_id
        and mine.get("root") == join.get("jti")
        and mine.get("sub") == join.get("sub")
        and mine.get("role") == join.get("role")
    )
    return token if same else None


def save(data_dir: str | None, token: str) -> None:
    """Best effort: a node that cannot write it still holds the token in memory."""
    if data_dir is None:
        return
    path = os.path.join(data_dir, FILE)
    try:
        private.write(path, token.encode("ascii", errors="replace"))
    except OSError as exc:
        log.warning("cannot keep the resume token in %s: %s", data_dir, exc)
