"""The stdin commands of a --json node and of a terminal central station, fed what no
operator script should send: not JSON, JSON nested deeper than the decoder recurses, a line
longer than the reader's buffer, not an object. Each line gets one bad-command error event
and the process keeps reading commands (before: a deeply nested line silently ended the
reading, so an alarm could no longer be acknowledged from stdin)."""

from __future__ import annotations

import asyncio
from typing import Any

from signaling.testing import RunningServer
from tests.node.conftest import start_proc

HOSTILE = [
    b"not json",
    b"[" * 60_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b'{"cmd": "' + b"x" * 200_000 + b'"}',  # longer than one stdin line may be
    b"[1, 2]",
    b'{"cmd": 7}',
]


async def test_hostile_stdin_lines_are_bad_commands(server: RunningServer) -> None:
    node = await start_proc(
        server.join_url(server.mint("s1", "clinician")), "clinician", commands=True
    )
    try:
        await node.w.wait_for("joined")
        assert node.proc.stdin is not None
        for n, line in enumerate(HOSTILE, start=1):
            node.proc.stdin.write(line + b"\n")
            await node.w.wait_for(lambda e, n=n: len(node.w.of("error", code="bad-command")) >= n)
        node.command({"cmd": "status"})
        await node.w.wait_for("status")
        assert node.proc.returncode is None
    finally:
        assert await node.stop() == 0, node.stderr.decode(errors="replace")[-2000:]
    assert len(node.w.of("error", code="bad-command")) == len(HOSTILE)
    assert b"Traceback" not in node.stderr, node.stderr.decode(errors="replace")[-2000:]


async def test_hostile_stdin_lines_at_the_station(server: RunningServer, tmp_path: Any) -> None:
    url = server.join_url(server.mint("ward.A", "station", ward="A"))
    st = await start_proc(url, "station", "--data-dir", str(tmp_path / "st"), commands=True)
    try:
        await st.w.wait_for("joined", role="station")
        assert st.proc.stdin is not None
        for n, line in enumerate(HOSTILE, start=1):
            st.proc.stdin.write(line + b"\n")
            await st.w.wait_for(lambda e, n=n: len(st.w.of("error", code="bad-command")) >= n)
        st.proc.stdin.write(b"quit\n")  # still read: the station stops
        assert await asyncio.wait_for(st.proc.wait(), 30) == 0
    finally:
        await st.stop()
    assert len(st.w.of("error", code="bad-command")) == len(HOSTILE)
    assert b"Traceback" not in st.stderr, st.stderr.decode(errors="replace")[-2000:]
