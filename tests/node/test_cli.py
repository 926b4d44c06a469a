"""`p2pmed node` and `p2pmed demo` refuse bad input with a clear message and exit code."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from p2pmed.cli import main
from tests.node.conftest import ROOT, start_proc

URL = "http://127.0.0.1:9/join#token=x"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["node", "--join", "http://h/join"], "no token"),
        (["node", "--join", "h/join#token=x"], "http"),
        (["node", "--join", "http://h/ws#token=x"], "/join"),
        (["node", "--join", URL, "--source", "bogus"], "--source"),
        (["node", "--join", URL, "--source", "wfdb:/nonexistent/rec"], "no WFDB record"),
        (["node", "--join", URL, "--media", "webcam"], "--media"),
        (["node", "--join", URL, "--media", "file:/nonexistent.mp4"], "no such file"),
        (["node", "--join", URL, "--json", "--fhir-out", "-"], "stdout"),
        (["node", "--join", URL, "--fhir-out", "/nonexistent/dir/x.ndjson"], "does not exist"),
        (["node", "--join", URL, "--record", "/nonexistent/dir/x.mp4"], "does not exist"),
        (["node", "--join", URL, "--join-timeout", "0"], "--join-timeout"),
        (["node", "--join", URL, "--rate", "0"], "--rate"),
        (["node", "--join", URL, "--fhir-patient", "Observation/1"], "--fhir-patient"),
        (["node", "--join", URL, "--label", "bed\x07"], "--label"),
        (["node"], "no join URL"),
        (["node", "--join", URL, "--require-known-peers"], "needs --data-dir"),
        (["demo", "--media", "webcam"], "--media"),
        (["demo", "--port", "70000"], "--port"),
    ],
)
def test_bad_flags(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("p2pmed node: error:") and words in err


@pytest.mark.parametrize(
    "argv",
    [
        ["node", "--join"],
        ["node", "--join", URL, "--scenario", "x"],
        ["node", "--join", URL, "--join-timeout", "abc"],
        ["demo", "--port", "x"],
    ],
)
def test_argparse_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


async def run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pmed",
        *argv,
        cwd=str(ROOT),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_unreachable_server() -> None:
    code, out, err = await run("node", "--join", URL, "--join-timeout", "1", "--json")
    assert code == 1
    assert "cannot reach the signaling server at http://127.0.0.1:9" in err
    assert '"event":"error"' in out and '"code":"join"' in out


async def test_refused_tokens(server) -> None:  # type: ignore[no-untyped-def]
    bad = server.join_url("not-a-token")
    code, _, err = await run("node", "--join", bad, "--media", "none")
    assert code == 4 and "refused" in err and "token-" in err
    expired = server.join_url(server.mint("s1", "clinician", ttl=60, now=time.time() - 3600))
    code, _, err = await run("node", "--join", expired, "--media", "none")
    assert code == 4 and "token-expired" in err


async def test_join_url_used_by_another_node(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A join token is tied to the first endpoint that used it: a node restarted without its
    --data-dir is told exactly that, and the same data dir still gets in."""
    url = server.join_url(server.mint("s1", "patient"))
    a = tmp_path / "a"
    first = await start_proc(url, "first", "--data-dir", str(a))
    await first.w.wait_for("joined")
    assert await first.stop() == 0
    for extra in ([], ["--data-dir", str(tmp_path / "b")]):
        code, _, err = await run("node", "--join", url, "--media", "none", *extra)
        assert code == 4, err
        line = err.strip().splitlines()[-1]
        assert "token-in-use" in line and "belongs to the first node that used it" in line
        assert "--data-dir it used then" in line and "new join URL" in line
    again = await start_proc(url, "again", "--data-dir", str(a))
    try:
        await again.w.wait_for("joined")
    finally:
        assert await again.stop() == 0
