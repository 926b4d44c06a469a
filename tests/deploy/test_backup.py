"""docs/operations.md "Backups": scripts/backup-signaling.py copies a running server's data dir
consistently. The backup verifies (`p2pmed audit verify --allow-unsigned-tail`), keeps a
revocation made just before it, and a server starts from it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import aiohttp

from signaling.testing import server_process
from tests.deploy.manual import Site, blocks, run_block
from tests.signaling.conftest import Client


async def _p2pmed(site: Site, *args: str) -> str:
    cmd = shlex.join([sys.executable, "-m", "p2pmed", *args])
    return await run_block(site, cmd, rewrite=False)  # paths here are the test's own


async def test_backup_of_a_running_server(tmp_path: Path) -> None:
    site = Site(tmp_path / "host", 8443, 3478, 9464)
    data = site.root / "var" / "lib" / "p2pmed-signaling"
    async with aiohttp.ClientSession() as http, server_process(data) as srv:
        mint = ("token", "--server", srv.url, "--data-dir", str(data), "--session", "bed-7")
        pat = json.loads(await _p2pmed(site, *mint, "--role", "patient", "--json"))
        doc = json.loads(await _p2pmed(site, *mint, "--role", "clinician", "--json"))
        c = Client(await http.ws_connect(srv.ws_url))
        await c.send(type="join", token=pat["token"], endpoint_id="gw-1")
        await c.recv_type("joined")
        await _p2pmed(site, "token", "revoke", doc["jti"], "--data-dir", str(data))
        out = await run_block(site, blocks()["backup"])
        assert "revocations.sqlite" in out and "audit.jsonl" in out
        (backup,) = (site.root / "var" / "backups" / "p2pmed").iterdir()
        await _p2pmed(site, "audit", "verify", str(backup / "audit.jsonl"), "--allow-unsigned-tail")
        await c.ws.close()
        assert await srv.stop() == 0
    assert backup.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in backup.iterdir()} == {0o600}
    assert not (backup / "server.lock").exists()
    listing = await _p2pmed(site, "token", "list", "--session", "bed-7", "--data-dir", str(backup))
    rows = {ln.split()[0]: ln.split()[2] for ln in listing.splitlines()}
    assert rows[doc["jti"]] == "revoked" and rows[pat["jti"]] == "active"
    restored = tmp_path / "restored" / "p2pmed-signaling"
    restored.parent.mkdir()
    backup.rename(restored)
    async with server_process(restored) as srv2:  # starts: keys, log and head agree
        assert await srv2.stop() == 0


def test_backup_during_a_token_key_rotation_keeps_the_previous_key(tmp_path: Path) -> None:
    """A backup taken between "Rotating the token key"'s two steps must restore a server
    that starts: its env still names token-key.previous."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    for name in ("token-key", "token-key.previous"):
        (data / name).write_bytes(os.urandom(32))
    dest = tmp_path / "backup"
    script = Path(__file__).resolve().parents[2] / "scripts" / "backup-signaling.py"
    subprocess.run([sys.executable, str(script), str(data), str(dest)], check=True, timeout=30)
    for name in ("token-key", "token-key.previous"):
        assert (dest / name).read_bytes() == (data / name).read_bytes()
