"""`p2pmed token revoke` and `p2pmed token list`: what the data dir knows about its tokens.

A join token is known if `p2pmed token` recorded it when minting (revocations.sqlite,
table `issued`), or if the server saw it join (a `join` entry in audit.jsonl, which
covers tokens minted before tokens were recorded).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signaling.audit import AUDIT_FILE
from signaling.bindings import BINDINGS, BindingStore
from signaling.tokens import ID_RE, REVOCATIONS, RevocationStore


def _err(cmd: str, msg: str) -> int:
    print(f"p2pmed token {cmd}: error: {msg}", file=sys.stderr)
    return 2


def audit_joins(
    data_dir: Path, *, jti: str | None = None, session: str | None = None
) -> dict[str, dict[str, Any]]:
    """{jti: join entry} from the audit log, for one jti or one session."""
    found: dict[str, dict[str, Any]] = {}
    path = data_dir / AUDIT_FILE
    if not path.is_file():
        return found
    needle = (f'"jti":"{jti}"' if jti else f'"session":"{session}"').encode()
    with path.open("rb") as f:
        for raw in f:
            if needle not in raw or b'"event":"join"' not in raw:
                continue
            try:
                e = json.loads(raw)
            except (ValueError, RecursionError):  # RecursionError: nested too deep
                continue
            if not isinstance(e, dict):
                continue
            if (jti is None or e.get("jti") == jti) and (
                session is None or e.get("session") == session
            ):
                found.setdefault(str(e.get("jti")), e)
    return found


def revoke_command(data_dir: Path, jti: str | None, session: str | None, force: bool) -> int:
    if not data_dir.is_dir():
        return _err("revoke", f"no data dir {data_dir}")
    if (jti is None) == (session is None):
        return _err("revoke", "give a token id (JTI) or --session S, not both")
    store = RevocationStore(data_dir / REVOCATIONS)
    try:
        if session is not None:
            return _revoke_session(data_dir, store, session)
        assert jti is not None
        if not 1 <= len(jti) <= 128:
            return _err("revoke", "token id must be 1..128 chars")
        issued = store.issued(jti)
        if issued is not None:
            where = f"session {issued.session}, {issued.role}"
        elif audit_joins(data_dir, jti=jti):
            where = "not recorded when minted; seen joining in the audit log"
        elif force:
            where = "never issued from this data dir; --force"
        else:
            return _err(
                "revoke",
                f"no token {jti} was issued from {data_dir} or seen joining its server;"
                " nothing revoked (check the id, or --force)",
            )
        new = store.revoke(jti)
        print(f"revoked {jti} ({where})" if new else f"{jti} was already revoked ({where})")
        return 0
    finally:
        store.close()


def _revoke_session(data_dir: Path, store: RevocationStore, session: str) -> int:
    if not ID_RE.fullmatch(session):
        return _err("revoke", "session must be 1..64 chars of [A-Za-z0-9_-]")
    jtis = {t.jti for t in store.issued_for_session(session)}
    jtis |= set(audit_joins(data_dir, session=session))
    if not jtis:
        return _err("revoke", f"no tokens were issued for session {session}; nothing revoked")
    new = [j for j in sorted(jtis) if store.revoke(j)]
    for j in new:
        print(f"revoked {j}")
    print(f"session {session}: {len(new)} revoked, {len(jtis) - len(new)} already revoked")
    return 0


def list_command(data_dir: Path, session: str, as_json: bool) -> int:
    if not data_dir.is_dir():
        return _err("list", f"no data dir {data_dir}")
    if not ID_RE.fullmatch(session):
        return _err("list", "session must be 1..64 chars of [A-Za-z0-9_-]")
    store = RevocationStore(data_dir / REVOCATIONS)
    bindings = BindingStore(data_dir / BINDINGS) if (data_dir / BINDINGS).exists() else None
    try:
        rows: list[dict[str, Any]] = [
            {"jti": t.jti, "role": t.role, "exp": int(t.exp), "revoked": t.revoked}
            for t in store.issued_for_session(session)
        ]
        known = {r["jti"] for r in rows}
        for j, e in audit_joins(data_dir, session=session).items():
            if j not in known:  # minted before tokens were recorded
                rows.append({"jti": j, "role": e.get("role"), "exp": None})
                rows[-1]["revoked"] = store.is_revoked(j)
        now = time.time()
        for r in rows:
            owner = bindings.owner(str(r["jti"])) if bindings else None
            r["endpoint"] = owner[1] if owner else None
            exp = r["exp"]
            r["status"] = (
                "revoked"
                if r["revoked"]
                else "expired"
                if exp is not None and exp <= now
                else "active"
            )
    finally:
        store.close()
        if bindings:
            bindings.close()
    for r in rows:
        if as_json:
            print(json.dumps({"session": session, **r}))
        else:
            exp = r["exp"]
            when = datetime.fromtimestamp(exp, UTC).isoformat() if exp is not None else "?"
            print(
                f"{r['jti']}  {r['role']:<9}  {r['status']:<7}  exp {when}  "
                f"endpoint {r['endpoint'] or '-'}"
            )
    if not rows:
        print(f"no tokens issued for session {session}", file=sys.stderr)
    return 0
