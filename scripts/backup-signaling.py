#!/usr/bin/env python3
"""Back up a signaling server's data dir while the server runs.

    backup-signaling.py DATA_DIR DEST

DEST is created (mode 0700; it must not exist) and gets: the keys (copied, 0600), the signed
audit head and then the audit log (in that order, so the copied log reaches at least the
copied head), and a consistent snapshot of each SQLite store through SQLite's online backup
API (a plain `cp` of a WAL database in use can be torn). server.lock is not copied.
Restore: stop the server, replace its data dir with DEST, start it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from pathlib import Path

# token-key.previous exists only during a token key rotation
KEYS = ("token-key", "token-key.previous", "audit-key.pem", "audit-key.pub")
AUDIT = ("audit.head", "audit.jsonl")  # head first
STORES = ("revocations.sqlite", "bindings.sqlite")


def backup(data: Path, dest: Path) -> list[str]:
    if not (data / "token-key").is_file():
        raise SystemExit(f"backup-signaling: {data} is not a signaling data dir (no token-key)")
    os.umask(0o077)
    dest.mkdir(mode=0o700, parents=False)
    done = []
    for name in KEYS + AUDIT:
        if (data / name).exists():
            shutil.copyfile(data / name, dest / name)
            done.append(name)
    for name in STORES:
        if not (data / name).exists():
            continue
        src = sqlite3.connect(f"file:{data / name}?mode=ro", uri=True)
        dst = sqlite3.connect(dest / name)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
            ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                raise SystemExit(f"backup-signaling: {name}: integrity_check says {ok}")
        finally:
            dst.close()
            src.close()
        done.append(name)
    for path in dest.iterdir():
        path.chmod(0o600)
    return done


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    files = backup(Path(argv[0]), Path(argv[1]))
    print(f"backed up {len(files)} files to {argv[1]}: {' '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
