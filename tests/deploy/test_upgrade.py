"""docs/operations.md "Upgrades": this release reads the data dirs an earlier one left behind.

Each tests/data/upgrade/REV/ was made by tests/data/upgrade/make_fixture.py running release
REV's own code: a server data dir (token key, audit chain, a revoked token) and the data dirs
of a patient and a clinician killed mid-session. After the upgrade the old audit chain still
verifies and goes on, the old token key still signs, the revocation still holds, both nodes
keep their identities and pins, and they resume their open E2E session from the old stores;
the patient's source goes on from now, with the gap reported, instead of replaying the time
it was down."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from signaling.testing import running_server
from tests.node.conftest import ROOT, start_inproc
from tests.signaling.conftest import Client

FIXTURES = sorted((ROOT / "tests" / "data" / "upgrade").glob("*/manifest.json"))


def _install(old: Path, site: Path) -> None:
    """The data dirs as the old release left them on disk (git keeps no modes)."""
    shutil.copytree(old, site, ignore=shutil.ignore_patterns("manifest.json"))
    for path in [site, *site.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)


def _p2pmed(*args: str) -> str:
    cmd = [sys.executable, "-m", "p2pmed", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _verify(audit: Path) -> None:
    _p2pmed("audit", "verify", str(audit))


def test_there_is_a_fixture() -> None:
    assert FIXTURES, "tests/data/upgrade/*/manifest.json: no earlier release to upgrade from"


@pytest.mark.parametrize("manifest", FIXTURES, ids=lambda p: p.parent.name)
async def test_upgrade_keeps_server_and_node_state(manifest: Path, tmp_path: Path) -> None:
    info = json.loads(manifest.read_text())
    site = tmp_path / "site"
    _install(manifest.parent, site)
    entries_before = len((site / "server" / "audit.jsonl").read_text().splitlines())
    _verify(site / "server" / "audit.jsonl")
    session = info["session"]
    async with aiohttp.ClientSession() as http, running_server(site / "server") as srv:
        revoked = srv.mint(session, "clinician", jti=info["jti"]["revoked"])
        c = Client(await http.ws_connect(srv.ws_url))
        await c.send(type="join", token=revoked, endpoint_id="late-doc")
        assert (await c.recv_type("error"))["code"] == "token-revoked"
        await c.ws.close()
        patient = await start_inproc(
            srv.join_url(srv.mint(session, "patient")), "patient", data_dir=str(site / "patient")
        )
        clinician = await start_inproc(
            srv.join_url(srv.mint(session, "clinician")),
            "clinician",
            data_dir=str(site / "clinician"),
        )
        try:
            await clinician.w.wait_for("peer", state="restored")
            await patient.w.wait_for("peer", state="restored")
            await clinician.w.wait_for("path", active="direct")
            await clinician.w.wait_count("message", 10, kind="waveform")
            # stopped far longer than it catches up: the stream goes on from now, the gap
            # said, not replayed in a burst of stale values (and stale alarms)
            gap = await patient.w.wait_for("source-gap")
            # before the teardown: frames that cross a CLOSE are rejected (and counted) there
            assert not clinician.w.of("rejected") and not patient.w.of("rejected")
        finally:
            await clinician.stop()
            await patient.stop()
    assert not patient.w.of("error") and not clinician.w.of("error")
    assert gap["skipped"] > 0 and gap["seconds"] > 0
    assert patient.node.identity.fingerprint() == info["patient_fingerprint"]
    assert not clinician.w.of("identity-pinned", new=True), "the old trust store was not read"
    assert not clinician.w.of("technical-alarm")
    pins = [
        json.loads(line)
        for line in _p2pmed(
            "trust", "list", "--json", "--data-dir", str(site / "clinician")
        ).splitlines()
    ]
    assert [(p["fingerprint"], p["role"]) for p in pins] == [
        (info["patient_fingerprint"], "patient")
    ]
    lines = (site / "server" / "audit.jsonl").read_text().splitlines()
    assert len(lines) > entries_before
    _verify(site / "server" / "audit.jsonl")
