"""coturn `use-auth-secret` credentials (TURN REST API): user `expiry:name`,
password base64(HMAC-SHA1(secret, user))."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def credentials(secret: str, name: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()
