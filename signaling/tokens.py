"""Join tokens: HS256 JWTs (RFC 7519), verified per RFC 8725, revocable (SQLite).

Why HMAC-SHA256 and not Ed25519: the only party that mints tokens (`p2pmed token`, run by
the operator with the server's data dir) is the party that verifies them, so a public key
buys nothing; the 256-bit random key never leaves the data dir. Verifying is ~50x cheaper
than Ed25519, which matters in a join storm (all endpoints reconnect after a restart).
Only HS256 is accepted, so "none", RS/ES/EdDSA and key-confusion tricks are all refused,
and the header must also carry typ "p2pmed-join+jwt" (RFC 8725 3.11, explicit typing).

Minting and verifying are written out (`_encode`, `_decode`): PyJWT spends ~45 us minting
a token and ~250 us verifying one, these ~11 and ~20 us, and a join storm verifies a token
and mints a resume token for every endpoint. The tests hold both to PyJWT's answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signaling.keys import TOKEN_KEY, KeyFileError, load_or_create_secret, load_secret

ALGORITHM = "HS256"
TOKEN_TYPE = "p2pmed-join+jwt"
ROLES = ("patient", "clinician", "observer", "station")
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A ward's central station (docs/wards.md) joins the pseudo-session "ward.W": the "." keeps
# it apart from every real session id (ID_RE has no "."), so no bed can share it.
WARD_PREFIX = "ward."
STATION_RE = re.compile(r"ward\.[A-Za-z0-9_-]{1,64}")


def station_session(ward: str) -> str:
    if not ID_RE.fullmatch(ward):
        raise ValueError("ward must be 1..64 chars of [A-Za-z0-9_-]")
    return WARD_PREFIX + ward


def _session_ok(session: object, role: object) -> bool:
    if not isinstance(session, str):
        return False
    return bool((STATION_RE if role == "station" else ID_RE).fullmatch(session))


REQUIRED = ("iss", "aud", "sub", "role", "jti", "iat", "nbf", "exp")
MAX_TOKEN_LEN = 4096
REVOCATIONS = "revocations.sqlite"


class TokenError(Exception):
    """A token was refused; `reason` is stable (metrics label, error code suffix)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Grant:
    session: str
    role: str
    jti: str
    exp: float
    nbf: float = 0.0
    # A resume token (minted by the server for a joined endpoint) names the join token it
    # descends from (`root`, so revoking that jti revokes the whole line) and the one endpoint
    # it may join as. For a join token root is its own jti and endpoint is None.
    root: str = ""
    endpoint: str | None = None
    ward: str = ""  # the ward of a bed's patient token or of a station token ("" for none)

    @property
    def root_jti(self) -> str:
        return self.root or self.jti


def mint(
    key: bytes,
    *,
    session: str,
    role: str,
    ttl: float,
    issuer: str,
    audience: str,
    now: float | None = None,
    jti: str | None = None,
    root: str | None = None,
    endpoint: str | None = None,
    ward: str | None = None,
) -> tuple[str, Grant]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "station":
        if not STATION_RE.fullmatch(session):
            raise ValueError("a station token's session must be ward.W (station_session)")
        if ward is None:
            ward = session[len(WARD_PREFIX) :]
        if session != WARD_PREFIX + ward:
            raise ValueError("a station token's session must be ward.<its ward>")
    elif not ID_RE.fullmatch(session):
        raise ValueError("session must be 1..64 chars of [A-Za-z0-9_-]")
    if ward is not None and not ID_RE.fullmatch(ward):
        raise ValueError("ward must be 1..64 chars of [A-Za-z0-9_-]")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    now = time.time() if now is None else now
    # hex, not base64url: an id starting with "-" would read as a flag in `token revoke ID`.
    jti = jti or secrets.token_hex(16)
    nbf, exp = int(now), int(now + ttl)
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "sub": session,
        "role": role,
        "jti": jti,
        "iat": int(now),
        "nbf": nbf,
        "exp": exp,
    }
    if (root is None) != (endpoint is None):
        raise ValueError("a resume token needs both root and endpoint")
    if root is not None and endpoint is not None:
        if not ID_RE.fullmatch(endpoint):
            raise ValueError("endpoint must be 1..64 chars of [A-Za-z0-9_-]")
        claims["root"], claims["eid"] = root, endpoint
    if ward is not None:
        claims["ward"] = ward
    return _encode(claims, key), Grant(
        session, role, jti, float(exp), float(nbf), root or "", endpoint, ward or ""
    )


_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_HEADER_KEYS = frozenset({"alg", "typ"})


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_HEADER = _b64e(json.dumps({"alg": ALGORITHM, "typ": TOKEN_TYPE}, separators=(",", ":")).encode())


def _encode(claims: dict[str, object], key: bytes) -> str:
    """JWS compact serialization, HS256 (RFC 7515 7.1)."""
    signed = f"{_HEADER}.{_b64e(json.dumps(claims, separators=(',', ':')).encode())}"
    mac = hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()
    return f"{signed}.{_b64e(mac)}"


def _b64(segment: str) -> bytes:
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise TokenError("malformed", "token segment is not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise TokenError("malformed", f"token {what} is not JSON") from None
    if not isinstance(obj, dict):
        raise TokenError("malformed", f"token {what} is not a JSON object")
    return obj


def _number(claims: dict[str, Any], name: str) -> float:
    v = claims[name]
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
        raise TokenError("claims", f"token claim {name!r} is not a number")
    return float(v)


def _decode(
    token: str, keys: tuple[bytes, ...], issuer: str, audience: str, leeway: float, now: float
) -> dict[str, Any]:
    """Strict JWS compact HS256 verification (RFC 7515/7519, RFC 8725).

    Order: algorithm allowlist and explicit type, then the MAC (constant-time, against
    each key: the current one and, during a key rotation, the previous one), only then the
    claims.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed", "token is not a JWS compact serialization")
    header = _json_object(_b64(parts[0]), "header")
    if header.get("alg") != ALGORITHM:
        raise TokenError("algorithm", f"token algorithm {header.get('alg')!r} not allowed")
    if header.get("typ") != TOKEN_TYPE:
        raise TokenError("type", f"token type is not {TOKEN_TYPE}")
    if not header.keys() <= _HEADER_KEYS:
        raise TokenError("malformed", "token header has unsupported parameters")
    signature = _b64(parts[2])
    signed = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not any(
        hmac.compare_digest(hmac.new(key, signed, hashlib.sha256).digest(), signature)
        for key in keys
    ):
        raise TokenError("signature", "token signature does not verify")
    claims = _json_object(_b64(parts[1]), "claims")
    for name in REQUIRED:
        if name not in claims:
            raise TokenError("claims", f"token lacks claim {name!r}")
    if claims["iss"] != issuer:
        raise TokenError("issuer", "token issuer is wrong")
    aud = claims["aud"]
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise TokenError("audience", "token audience is wrong")
    exp, nbf = _number(claims, "exp"), _number(claims, "nbf")
    _number(claims, "iat")
    if now >= exp + leeway:
        raise TokenError("expired", "token expired")
    if now < nbf - leeway:
        raise TokenError("not-yet-valid", "token not yet valid")
    return claims


class Verifier:
    """Checks tokens; remembers good ones (bounded) so a reconnect storm costs little.

    Time claims and revocation are re-checked on every use, cached or not. `key` mints the
    server's resume tokens; `previous`, during a key rotation, only verifies.
    """

    def __init__(
        self,
        key: bytes,
        *,
        previous: bytes | None = None,
        issuer: str,
        audience: str,
        max_ttl: float,
        leeway: float,
        revoked: RevocationStore | None = None,
        cache_size: int = 20_000,
    ) -> None:
        self.key, self.issuer, self.audience = key, issuer, audience
        self._keys = (key,) if previous is None else (key, previous)
        self.max_ttl, self.leeway, self.revoked = max_ttl, leeway, revoked
        self.cache_size = cache_size
        self._cache: dict[str, Grant] = {}

    def verify(self, token: Any, now: float | None = None) -> Grant:
        if not isinstance(token, str) or not token:
            raise TokenError("missing", "no token")
        if len(token) > MAX_TOKEN_LEN:
            raise TokenError("malformed", "token too long")
        now = time.time() if now is None else now
        grant = self._cache.get(token)
        if grant is None:
            claims = _decode(token, self._keys, self.issuer, self.audience, self.leeway, now)
            grant = self._check_claims(claims, now)
            if len(self._cache) >= self.cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[token] = grant
        if now >= grant.exp + self.leeway:
            raise TokenError("expired", "token expired")
        if now < grant.nbf - self.leeway:
            raise TokenError("not-yet-valid", "token not yet valid")
        if self.revoked is not None and (
            self.revoked.is_revoked(grant.jti)
            or (grant.root and self.revoked.is_revoked(grant.root))
        ):
            raise TokenError("revoked", "token revoked")
        return grant

    def _check_claims(self, claims: dict[str, Any], now: float) -> Grant:
        sub, role, jti = claims["sub"], claims["role"], claims["jti"]
        iat, nbf, exp = claims["iat"], claims["nbf"], claims["exp"]
        if role not in ROLES:
            raise TokenError("claims", "token role is invalid")
        if not _session_ok(sub, role):
            raise TokenError("claims", "token session (sub) is invalid")
        ward = claims.get("ward", sub[len(WARD_PREFIX) :] if role == "station" else "")
        if ward != "" and (not isinstance(ward, str) or not ID_RE.fullmatch(ward)):
            raise TokenError("claims", "token ward is invalid")
        if role == "station" and sub != WARD_PREFIX + ward:
            raise TokenError("claims", "station token's session is not its ward's")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 128:
            raise TokenError("claims", "token jti is invalid")
        if not isinstance(iat, int | float) or iat > now + self.leeway:
            raise TokenError("not-yet-valid", "token issued in the future")
        if exp - iat > self.max_ttl:
            raise TokenError("lifetime", f"token lifetime exceeds {self.max_ttl:.0f} s")
        root, eid = claims.get("root"), claims.get("eid")
        if (root is None) != (eid is None):
            raise TokenError("claims", "resume token needs both root and eid")
        if root is not None and (not isinstance(root, str) or not 1 <= len(root) <= 128):
            raise TokenError("claims", "token root is invalid")
        if eid is not None and (not isinstance(eid, str) or not ID_RE.fullmatch(eid)):
            raise TokenError("claims", "token endpoint (eid) is invalid")
        return Grant(sub, role, jti, float(exp), float(nbf), root or "", eid, ward)


def verify(
    token: Any,
    key: bytes,
    *,
    issuer: str,
    audience: str,
    max_ttl: float,
    leeway: float,
    revoked: RevocationStore | None = None,
    now: float | None = None,
) -> Grant:
    """One-shot verification (no cache)."""
    v = Verifier(
        key, issuer=issuer, audience=audience, max_ttl=max_ttl, leeway=leeway, revoked=revoked
    )
    return v.verify(token, now)


@dataclass(frozen=True)
class Issued:
    jti: str
    session: str
    role: str
    exp: float
    revoked: bool


class RevocationStore:
    """Revoked jtis, and the join tokens minted from this data dir (`issued`), in SQLite
    (WAL), shared by the CLI and the running server."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():  # 0600, not the umask's 0644; SQLite gives -wal/-shm the same
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=2000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, at REAL NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS issued (jti TEXT PRIMARY KEY, session TEXT NOT NULL,"
            " role TEXT NOT NULL, exp REAL NOT NULL, at REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS issued_session ON issued (session)")

    def record_issued(self, grant: Grant, now: float | None = None) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO issued (jti, session, role, exp, at) VALUES (?, ?, ?, ?, ?)",
            (grant.jti, grant.session, grant.role, grant.exp, time.time() if now is None else now),
        )

    def issued(self, jti: str) -> Issued | None:
        rows = self._issued("WHERE i.jti = ?", (jti,))
        return rows[0] if rows else None

    def issued_for_session(self, session: str) -> list[Issued]:
        return self._issued("WHERE i.session = ? ORDER BY i.at", (session,))

    def _issued(self, where: str, args: tuple[str, ...]) -> list[Issued]:
        rows = self._db.execute(
            "SELECT i.jti, i.session, i.role, i.exp, r.jti IS NOT NULL FROM issued i"
            f" LEFT JOIN revoked r ON r.jti = i.jti {where}",
            args,
        ).fetchall()
        return [Issued(r[0], r[1], r[2], float(r[3]), bool(r[4])) for r in rows]

    def revoke(self, jti: str, now: float | None = None) -> bool:
        cur = self._db.execute(
            "INSERT OR IGNORE INTO revoked (jti, at) VALUES (?, ?)",
            (jti, time.time() if now is None else now),
        )
        return cur.rowcount == 1

    def is_revoked(self, jti: str) -> bool:
        row = self._db.execute("SELECT 1 FROM revoked WHERE jti = ?", (jti,)).fetchone()
        return row is not None

    def revoked_since(self, rowid: int) -> tuple[list[str], int]:
        """jtis revoked after `rowid` (the table's rowid), and the newest rowid seen."""
        rows = self._db.execute(
            "SELECT rowid, jti FROM revoked WHERE rowid > ? ORDER BY rowid", (rowid,)
        ).fetchall()
        return [r[1] for r in rows], (rows[-1][0] if rows else rowid)

    def close(self) -> None:
        self._db.close()


def token_key(data_dir: Path, *, create: bool) -> bytes:
    path = data_dir / TOKEN_KEY
    return load_or_create_secret(path) if create else load_secret(path)


def previous_token_key(path: Path, current: bytes) -> bytes:
    """The key tokens were signed with before the rotation (verify only); KeyFileError when
    it is unreadable, too open, not a key, or the current key itself."""
    key = load_secret(path)
    if hmac.compare_digest(key, current):
        raise KeyFileError(
            f"{path}: the previous token key is the current one; move token-key to it and"
            " let the server make a new token-key (docs/operations.md, rotating the token key)"
        )
    return key
