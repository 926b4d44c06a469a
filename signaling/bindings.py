"""Which endpoint a join token belongs to, kept on disk for the token's lifetime.

A join token binds to the first endpoint that joins with it (protocol.md 8.2). The binding
outlives a leave and a server restart, so a leaked token cannot be used again by another
endpoint; the endpoint it is bound to may rejoin with it until it expires.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

BINDINGS = "bindings.sqlite"


class BindingStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():  # created 0600, not with the umask
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=2000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS bound (jti TEXT PRIMARY KEY, session TEXT NOT NULL,"
            " endpoint TEXT NOT NULL, exp REAL NOT NULL)"
        )

    def owner(self, jti: str) -> tuple[str, str] | None:
        row = self._db.execute(
            "SELECT session, endpoint FROM bound WHERE jti = ?", (jti,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def bind(self, jti: str, session: str, endpoint: str, exp: float) -> None:
        """Bind jti to (session, endpoint) unless it is bound already (one commit)."""
        self._db.execute(
            "INSERT OR IGNORE INTO bound (jti, session, endpoint, exp) VALUES (?, ?, ?, ?)",
            (jti, session, endpoint, exp),
        )

    def session_of(self, jti: str) -> str | None:
        row = self._db.execute("SELECT session FROM bound WHERE jti = ?", (jti,)).fetchone()
        return None if row is None else str(row[0])

    def prune(self, now: float | None = None, leeway: float = 60.0) -> int:
        """Forget bindings of tokens that expired (the token itself is refused by then)."""
        now = time.time() if now is None else now
        return self._db.execute("DELETE FROM bound WHERE exp < ?", (now - leeway,)).rowcount

    def close(self) -> None:
        self._db.close()
