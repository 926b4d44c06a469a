"""Rotating the TURN secret without refusing credentials already handed out: turn/run-coturn.sh
with P2PMED_TURN_SECRET_PREVIOUS makes coturn accept both secrets (docs/operations.md,
"Rotating secrets"); without it only the current one; a bad previous secret stops the script."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aioice import stun
from aioice.turn import create_turn_endpoint

from signaling.turncreds import credentials
from tests.coturn import free_udp_port, wait_until_serving
from tests.deploy.manual import ROOT, stop

OLD, NEW, OTHER = "o" * 32, "n" * 32, "x" * 32


class _Sink(asyncio.DatagramProtocol):
    pass


async def allocates(port: int, secret: str) -> bool:
    """Whether coturn grants an allocation to credentials minted from `secret`."""
    user, password = credentials(secret, "rotation", ttl=300)
    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(_Sink, ("127.0.0.1", port), user, password), 10
        )
    except stun.TransactionFailed as e:
        assert e.response.attributes["ERROR-CODE"][0] == 401
        return False
    transport.close()
    return True


async def run_coturn(tmp: Path, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
    port = free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "turn" / "run-coturn.sh"), f"--listening-port={port}",
        env={
            "PATH": os.environ["PATH"],
            "P2PMED_TURN_LAB": "1",
            "P2PMED_TURN_CONF": str(ROOT / "turn" / "turnserver-lab.conf"),
            "P2PMED_TURN_RUNDIR": str(tmp),
            **env,
        },
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    return proc, port


async def test_both_secrets_are_accepted_during_the_overlap_only(tmp_path: Path) -> None:
    overlap, port = await run_coturn(
        tmp_path / "a", {"P2PMED_TURN_SECRET": NEW, "P2PMED_TURN_SECRET_PREVIOUS": OLD}
    )
    try:
        await wait_until_serving("127.0.0.1", port, NEW)
        assert await allocates(port, OLD)  # handed out before the server switched
        assert await allocates(port, NEW)
        assert not await allocates(port, OTHER)
    finally:
        await stop(overlap)
    runtime = (tmp_path / "a" / "turnserver.conf").read_text()
    assert runtime.count("static-auth-secret=") == 2
    assert (tmp_path / "a" / "turnserver.conf").stat().st_mode & 0o777 == 0o600

    after, port = await run_coturn(tmp_path / "b", {"P2PMED_TURN_SECRET": NEW})
    try:
        await wait_until_serving("127.0.0.1", port, NEW)
        assert not await allocates(port, OLD)  # the overlap is over
        assert await allocates(port, NEW)
    finally:
        await stop(after)


async def test_a_previous_secret_that_cannot_work_stops_the_script(tmp_path: Path) -> None:
    for previous, says in (
        ("short", "P2PMED_TURN_SECRET_PREVIOUS is too short"),
        ("y" * 30 + "|sed", "P2PMED_TURN_SECRET_PREVIOUS may only contain"),
        (NEW, "is the same as P2PMED_TURN_SECRET"),
    ):
        proc = await asyncio.create_subprocess_exec(
            str(ROOT / "turn" / "run-coturn.sh"),
            env={
                "PATH": os.environ["PATH"],
                "P2PMED_TURN_RUNDIR": str(tmp_path),
                "P2PMED_TURN_SECRET": NEW,
                "P2PMED_TURN_SECRET_PREVIOUS": previous,
            },
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 2 and says in err.decode(), (previous, err)
