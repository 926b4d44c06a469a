"""Every file with identity or patient data under --data-dir (and the FHIR output) is 0600
whatever the umask; a FIFO, symlink or loose-mode key gives a one-line error, never a hang or
a traceback."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

import pytest

from tests.node.conftest import ROOT, start_inproc, start_proc


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_files_private_under_umask_000(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    old = os.umask(0)
    try:
        patient = await start_inproc(
            server.join_url(server.mint("s1", "patient")), "p", data_dir=str(tmp_path / "p")
        )
        fhir = tmp_path / "out" / "obs.ndjson"
        fhir.parent.mkdir()
        clinician = await start_proc(
            server.join_url(server.mint("s1", "clinician")),
            "c",
            "--data-dir",
            str(tmp_path / "c"),
            "--fhir-out",
            str(fhir),
        )
        try:
            await clinician.w.wait_count("message", 20)
            await clinician.w.wait_for("message", kind="numerics")
        finally:
            await clinician.stop()
            await patient.stop()
    finally:
        os.umask(old)
    for d in (tmp_path / "p", tmp_path / "c"):  # in-process node (umask 000) and the CLI
        names = set(os.listdir(d))
        assert {"identity.key", "endpoint_id", "sessions.db", "trust.json"} <= names, names
        for name in names:
            assert mode(d / name) == 0o600, (d, name, oct(mode(d / name)))
        assert mode(d) == 0o700
    assert fhir.exists() and mode(fhir) == 0o600


async def run_node(data_dir: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pmed",
        "node",
        "--join",
        "http://127.0.0.1:9/join#token=x",
        "--data-dir",
        str(data_dir),
        "--join-timeout",
        "1",
        cwd=str(ROOT),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)  # a hang fails here
    return proc.returncode or 0, err.decode()


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("identity.key", "fifo", "not a regular file"),
        ("identity.key", "0644", "chmod 600"),
        ("identity.key", "symlink", "symlink"),
        ("identity.key", "dir", "not a regular file"),
        ("endpoint_id", "fifo", "not a regular file"),
        ("endpoint_id", "symlink", "symlink"),
    ],
)
async def test_bad_private_files_one_line_error(tmp_path, name: str, make: str, words: str) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "node"
    d.mkdir(mode=0o700)
    path = d / name
    if make == "fifo":
        os.mkfifo(path, 0o600)
    elif make == "symlink":
        (tmp_path / "target").write_text("x")
        path.symlink_to(tmp_path / "target")
    elif make == "dir":
        path.mkdir()
    else:
        # a real key, readable by everyone
        from p2pmed.core.identity import Identity

        Identity.load_or_create(path)
        os.chmod(path, 0o644)
    code, err = await run_node(d)
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2pmed node: error:"), err
    assert words in lines[0] and name in lines[0]
