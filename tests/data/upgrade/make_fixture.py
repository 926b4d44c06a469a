"""Make the data dirs of one release for tests/deploy/test_upgrade.py.

Run with the release's own code, from its checkout (it uses that release's test helpers):
    git worktree add /tmp/rel REV
    cd /tmp/rel && PYTHONPATH=/tmp/rel /path/to/.venv/bin/python /path/to/make_fixture.py OUT_DIR
It runs a real server and a patient and a clinician node with data dirs until vitals flow,
revokes a third token, kills the nodes mid-session, stops the server, and writes
OUT_DIR/{server,patient,clinician} and OUT_DIR/manifest.json (the token ids, the patient's
fingerprint). The keys in it are test keys; the tokens themselves expire within a day, so the
test mints new ones with the old token key.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import sys
from pathlib import Path

from signaling.testing import running_server
from signaling.tokens import mint, token_key
from tests.node.conftest import start_proc


async def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    async with running_server(out / "server") as srv:
        key = token_key(srv.config.data_dir, create=False)
        grants = {}
        for name, role in (
            ("patient", "patient"),
            ("clinician", "clinician"),
            ("revoked", "clinician"),
        ):
            grants[name] = mint(
                key,
                session="bed-upgrade",
                role=role,
                ttl=3600.0,
                issuer=srv.config.issuer,
                audience=srv.config.audience,
            )
        tokens = {name: token for name, (token, _) in grants.items()}
        srv.revoke(grants["revoked"][1].jti)
        # processes killed mid-session, as by a power cut or a stop timeout: the data dirs
        # then hold open E2E sessions, which the new release must resume
        patient = await start_proc(
            srv.join_url(tokens["patient"]), "patient", "--data-dir", str(out / "patient")
        )
        clinician = await start_proc(
            srv.join_url(tokens["clinician"]), "clinician", "--data-dir", str(out / "clinician")
        )
        await clinician.w.wait_for("path", active="direct")
        await clinician.w.wait_count("message", 20, kind="waveform")
        pinned = await clinician.w.wait_for("identity-pinned", role="patient")
        for node in (clinician, patient):
            node.kill()
            await node.stop()
    for db in out.glob("*/*.db"):
        # fold the WAL a killed node left into the database, as SQLite's next open would,
        # and compact it: the fixture stays small
        con = sqlite3.connect(db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("VACUUM")
        con.close()
        for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            extra.unlink(missing_ok=True)
    (out / "server" / "server.lock").unlink(missing_ok=True)
    manifest = {
        "session": "bed-upgrade",
        "jti": {name: grant.jti for name, (_, grant) in grants.items()},
        "patient_fingerprint": pinned["fingerprint"],
        "messages_seen": len(clinician.w.of("message")),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]).resolve()))
