"""A real coturn on loopback for tests, started and probed until it really serves.

coturn prints "Total General servers" before its auth thread is up: an Allocate sent right
after that line can go unanswered, and aiortc then gathers no relay candidate. So readiness is
a real authenticated allocation, retried until a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from aioice import stun
from aioice.turn import create_turn_endpoint

from signaling.turncreds import credentials

READY_TIMEOUT_S = 30.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Sink(asyncio.DatagramProtocol):
    pass


async def wait_until_serving(host: str, port: int, secret: str) -> None:
    """Return once coturn at host:port grants an allocation to credentials from `secret`."""
    user, password = credentials(secret, "readiness-probe", ttl=300)
    last: BaseException | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while loop.time() < deadline:
        try:
            transport, _ = await asyncio.wait_for(
                create_turn_endpoint(_Sink, (host, port), user, password), 3
            )
        except (TimeoutError, OSError, stun.TransactionError) as e:
            last = e
            await asyncio.sleep(0.2)
            continue
        transport.close()
        return
    raise AssertionError(f"coturn on {host}:{port} granted no allocation: {last!r}")


@contextlib.asynccontextmanager
async def loopback_coturn(
    tmp: Path, min_port: int, max_port: int
) -> AsyncIterator[tuple[str, str]]:
    """coturn with a fresh shared secret on 127.0.0.1; yields (secret, turn URL).

    allow-loopback-peers is for loopback tests only; production configs never have it."""
    assert shutil.which("turnserver"), "coturn (turnserver) is required"
    secret = secrets.token_urlsafe(24)
    port = free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        "turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}",
        "--relay-ip=127.0.0.1", f"--min-port={min_port}", f"--max-port={max_port}",
        "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=p2pmed.test",
        "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli", "--fingerprint",
        "--log-file=stdout", "--pidfile", str(tmp / "turn.pid"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    drain = asyncio.ensure_future(proc.stdout.read())  # keep coturn's log pipe flowing
    try:
        await wait_until_serving("127.0.0.1", port, secret)
        yield secret, f"turn:127.0.0.1:{port}?transport=udp"
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        await drain
