"""A port already in use stops the server with one line (naming the holder when it can),
before the audit log says `start` (real process)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from signaling.testing import server_process, start_process


async def test_port_in_use_one_line_no_audit_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with server_process(data) as srv:  # a first run creates keys and the log
        assert await srv.stop() == 0
    before = (data / "audit.jsonl").read_text()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc, log_path, _ = await start_process(data, port=port)
        assert await proc.wait() == 2
    err = log_path.read_text()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert f"(by pid {os.getpid()}:" in err  # this test process holds it
    assert (data / "audit.jsonl").read_text() == before  # no `start` for a server that never ran
    # and the data dir lock went with it: the port free again, a server starts
    async with server_process(data) as srv:
        assert await srv.stop() == 0
