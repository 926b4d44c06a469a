"""deploy/systemd/p2pmed-node.service: start a node exactly as the unit does (its ExecStart and
environment, stdin /dev/null, no terminal, a new session, the unit's umask) and check that it
streams to a clinician. uvloop used to abort (SIGABRT, exit 134) a second after joining when
stdin was /dev/null and --json was given."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from pathlib import Path

import pytest

from tests.deploy import manual
from tests.node.conftest import ROOT, start_inproc

UNITS = ROOT / "deploy" / "systemd"


def parse_unit(path: Path) -> dict[str, list[str]]:
    return manual.parse_unit(path.read_text())


def unit_environment(unit: dict[str, list[str]], env_file: Path) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    for value in unit.get("Environment", []):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    assert unit["EnvironmentFile"] == ["/etc/p2pmed/node.env"]
    for line in env_file.read_text().splitlines():
        key, _, val = line.partition("=")
        env[key] = val
    return env


def test_units_are_hardened() -> None:
    for name in ("p2pmed-node.service", "p2pmed-signaling.service"):
        unit = parse_unit(UNITS / name)
        for key, want in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("DynamicUser", "yes"),
            ("StandardInput", "null"),
            ("Restart", "on-failure"),
            ("UMask", "0077"),
        ]:
            assert unit.get(key) == [want], (name, key)
        assert unit["StateDirectory"], name
        data_dir = "/var/lib/" + unit["StateDirectory"][0]
        assert data_dir in " ".join(unit["ExecStart"] + unit["Environment"]), name
    node = parse_unit(UNITS / "p2pmed-node.service")
    assert "#token=" not in node["ExecStart"][0]  # the token never rides in argv


@pytest.mark.parametrize("json_out", [True, False], ids=["json", "plain"])
async def test_node_runs_as_the_unit_starts_it(server, tmp_path, json_out: bool) -> None:  # type: ignore[no-untyped-def]
    unit = parse_unit(UNITS / "p2pmed-node.service")
    env_file = tmp_path / "node.env"
    env_file.write_text(f"P2PMED_JOIN={server.join_url(server.mint('svc', 'patient'))}\n")
    env = unit_environment(unit, env_file)
    argv = shlex.split(unit["ExecStart"][0])
    assert argv[0] == "/opt/p2pmed/.venv/bin/p2pmed"
    argv = [sys.executable, "-m", "p2pmed", *argv[1:]]
    state = tmp_path / "state"
    argv[argv.index("--data-dir") + 1] = str(state)  # StateDirectory
    if not json_out:
        argv.remove("--json")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(ROOT),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,  # StandardInput=null
        stdout=asyncio.subprocess.PIPE,  # the journal: not a terminal
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # no controlling terminal
        umask=int(unit["UMask"][0], 8),
    )
    clinician = None
    try:
        clinician = await start_inproc(server.join_url(server.mint("svc", "clinician")), "c")
        await clinician.w.wait_for("handshake")
        # well past the second after joining at which uvloop aborted
        await clinician.w.wait_count("message", 40, kind="waveform")
        await clinician.w.wait_for("message", kind="numerics")
        assert proc.returncode is None
    finally:
        if clinician is not None:
            await clinician.stop()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    if json_out:
        assert b'"event":"joined"' in out
    else:
        assert b"joined session svc as patient" in err
    assert (state / "identity.key").stat().st_mode & 0o077 == 0
