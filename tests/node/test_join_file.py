"""The join token need not ride in argv (where `ps` shows it): --join-file PATH (0600/0400,
owned by the user) or the P2PMED_JOIN environment variable."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from p2pmed.cli import main
from tests.node.conftest import ROOT, NodeProc, Watcher

URL = "http://127.0.0.1:9/join#token=x"


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def check_error(capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    assert main(["node", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("p2pmed node: error:") and words in err and err.count("\n") == 1


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700, 0o666])
def test_loose_mode_refused(tmp_path, capsys, mode: int) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path / "join", URL, mode)
    check_error(capsys, ["--join-file", str(f)], "chmod 600")


def test_bad_join_files(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    check_error(capsys, ["--join-file", str(tmp_path / "none")], "no such file")
    real = write(tmp_path / "real", URL, 0o600)
    (tmp_path / "link").symlink_to(real)
    check_error(capsys, ["--join-file", str(tmp_path / "link")], "symlink")
    os.mkfifo(tmp_path / "fifo", 0o600)  # must not hang
    check_error(capsys, ["--join-file", str(tmp_path / "fifo")], "not a regular file")
    check_error(capsys, ["--join-file", str(tmp_path)], "not a regular file")
    check_error(capsys, ["--join-file", str(write(tmp_path / "e", "\n\n", 0o600))], "one line")
    two = write(tmp_path / "two", URL + "\n" + URL + "\n", 0o600)
    check_error(capsys, ["--join-file", str(two)], "one line")
    check_error(capsys, ["--join-file", str(write(tmp_path / "b", "x" * 9000, 0o600))], "larger")
    bad = write(tmp_path / "bad", "http://h/join\n", 0o400)  # mode fine, URL not
    check_error(capsys, ["--join-file", str(bad)], "no token")
    check_error(capsys, ["--join-file", str(real), "--join", URL], "not both")
    if os.geteuid() == 0:  # a file of another user (root can create one)
        other = write(tmp_path / "other", URL, 0o600)
        os.chown(other, 65534, 65534)
        check_error(capsys, ["--join-file", str(other)], "owned by uid 65534")


async def start(argv: list[str], env: dict[str, str]) -> NodeProc:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pmed",
        "node",
        "--json",
        "--media",
        "none",
        *argv,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return NodeProc(proc, Watcher("node"))


@pytest.mark.parametrize("how", ["file-0600", "file-0400", "env"])
async def test_join_without_token_in_argv(server, tmp_path, how: str) -> None:  # type: ignore[no-untyped-def]
    token = server.mint("s1", "patient")
    url = server.join_url(token)
    if how == "env":
        node = await start([], {"P2PMED_JOIN": url})
    else:
        f = write(tmp_path / "join.url", url + "\n", int(how[-4:], 8))
        node = await start(["--join-file", str(f)], {})
    try:
        joined = await node.w.wait_for("joined")
        assert joined["role"] == "patient" and joined["session"] == "s1"
        cmdline = Path(f"/proc/{node.proc.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline
    finally:
        assert await node.stop() == 0
