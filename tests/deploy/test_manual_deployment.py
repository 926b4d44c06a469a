"""docs/operations.md section 0, run as written (issue #16): a private CA, the signaling server
with TLS from it started as its systemd unit does, coturn in lab mode, a patient and a
clinician node started as their unit and the manual's drop-in say (stdin /dev/null,
--ca-file), the direct path forced through TURN, vitals flowing, then `p2pmed token revoke`
from the manual ends the consultation: the clinician exits 5 and the audit log has
revoke-complete. Change a command in the manual and this test runs the new one."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from p2pmed.node.revocation import EXIT_REVOKED
from signaling.testing import free_port
from tests.coturn import free_udp_port, wait_until_serving
from tests.deploy.manual import (
    ROOT,
    UNITS,
    Site,
    blocks,
    parse_unit,
    run_block,
    start_block,
    stop,
    unit_command,
)
from tests.node.conftest import NodeProc, Watcher
from tests.node.test_tls_errors import make_private_ca

TIMEOUT = 60.0  # generous overall bound for each wait; never a timing assertion


def _audit(data: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]


def _relay_ports() -> list[int]:
    """UDP ports bound now in turn/turnserver-lab.conf's relay range (min-port..max-port)."""
    conf = dict(
        line.split("=", 1)
        for line in (ROOT / "turn" / "turnserver-lab.conf").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    lo, hi = int(conf["min-port"]), int(conf["max-port"])
    ports = []
    for row in Path("/proc/net/udp").read_text().splitlines()[1:]:
        port = int(row.split()[1].rsplit(":", 1)[1], 16)
        if lo <= port <= hi:
            ports.append(port)
    return ports


async def _wait_turn_ready(proc: asyncio.subprocess.Process, log: list[bytes]) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = await proc.stdout.readline()
            assert line, "coturn exited:\n" + b"".join(log).decode(errors="replace")
            log.append(line)
            if b"Total General servers" in line:
                return


async def _drain(proc: asyncio.subprocess.Process, log: list[bytes]) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        log.append(line)


async def _wait_healthy(url: str, ctx: ssl.SSLContext, server: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(TIMEOUT):
        while True:
            assert server.returncode is None, f"server exited {server.returncode}"
            try:
                async with http.get(url + "/healthz", ssl=ctx) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def _start_node(site: Site, host: Path, env_file: Path, name: str) -> NodeProc:
    """A node host: its own root with /etc/p2pmed/{node.env,ca.pem} copied from the server,
    started as p2pmed-node.service with the manual's drop-in."""
    node_site = Site(host, site.https_port, site.turn_port, site.metrics_port)
    etc = host / "etc" / "p2pmed"
    etc.mkdir(parents=True)
    shutil.copy(env_file, etc / "node.env")
    (etc / "node.env").chmod(0o600)
    shutil.copy(site.root / "etc" / "p2pmed" / "ca.pem", etc / "ca.pem")
    (host / "var" / "lib").mkdir(parents=True)
    text = (UNITS / "p2pmed-node.service").read_text() + "\n" + blocks()["node-dropin"]
    unit = parse_unit(text)
    assert unit["StandardInput"] == ["null"]
    argv, env = unit_command(node_site, unit)
    assert "--ca-file" in argv
    # the one addition of this test: no host candidates, so the direct path is through TURN
    argv.append("--ice-relay-only")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(host),
        env=env,
    )
    return NodeProc(proc, Watcher(name))


async def test_deploy_as_the_manual_says(tmp_path: Path) -> None:
    assert shutil.which("turnserver"), "coturn (turnserver) is required"
    steps = blocks()
    assert set(steps) >= {
        "install-tls", "signaling-env", "coturn-lab", "check-server", "tokens", "node-dropin",
        "revoke", "audit-verify",
    }  # fmt: skip
    site = Site(tmp_path / "server", free_port(), free_udp_port(), free_port())
    certs = tmp_path / "from-the-ca"
    certs.mkdir()
    ca, chain, key = make_private_ca(certs)
    chain.rename(certs / "fullchain.pem")
    key.rename(certs / "privkey.pem")
    await run_block(site, steps["install-tls"], cwd=certs)
    etc = site.root / "etc" / "p2pmed"
    assert (etc / "tls" / "privkey.pem").stat().st_mode & 0o777 == 0o600
    await run_block(site, steps["signaling-env"])
    assert (etc / "signaling.env").stat().st_mode & 0o777 == 0o600

    procs: list[asyncio.subprocess.Process] = []
    nodes: list[NodeProc] = []
    turn_log: list[bytes] = []
    drain = None
    try:
        turn = await start_block(site, steps["coturn-lab"])
        procs.append(turn)
        await _wait_turn_ready(turn, turn_log)
        drain = asyncio.ensure_future(_drain(turn, turn_log))
        lines = (etc / "signaling.env").read_text().splitlines()
        turn_secret = dict(ln.split("=", 1) for ln in lines)["P2PMED_TURN_SECRET"]
        await wait_until_serving("127.0.0.1", site.turn_port, turn_secret)
        assert b"UNSAFE FOR PRODUCTION" in b"".join(turn_log)  # run-coturn.sh's lab warning

        unit = parse_unit((UNITS / "p2pmed-signaling.service").read_text())
        assert unit["StandardInput"] == ["null"]
        argv, env = unit_command(site, unit)
        env["P2PMED_HOST"] = "127.0.0.1"  # the unit binds 0.0.0.0; tests stay on loopback
        data = Path(env["P2PMED_DATA_DIR"])
        data.parent.mkdir(parents=True, exist_ok=True)  # systemd's StateDirectory= does this
        log = (tmp_path / "server.log").open("wb")
        server = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            cwd=str(site.root), start_new_session=True,
        )  # fmt: skip
        procs.append(server)
        ctx = ssl.create_default_context(cafile=str(ca))
        url = f"https://127.0.0.1:{site.https_port}"
        await _wait_healthy(url, ctx, server)
        out = await run_block(site, steps["check-server"])
        assert '"status":"ok"' in out.replace(" ", "") and "p2pmed_sessions 0.0" in out
        async with aiohttp.ClientSession() as http, http.get(url + "/metrics", ssl=ctx) as r:
            assert r.status == 404  # only on the metrics listener

        await run_block(site, steps["tokens"])
        patient = await _start_node(
            site, tmp_path / "gateway", etc / "bed-7-patient.env", "patient"
        )
        nodes.append(patient)
        clinician = await _start_node(
            site, tmp_path / "workstation", etc / "bed-7-clinician.env", "clinician"
        )
        nodes.append(clinician)
        joined = await clinician.w.wait_for("joined", timeout=TIMEOUT)
        assert joined["ice_servers"] == 1  # the first TURN URL only (aiortc uses one)
        await clinician.w.wait_for("path", active="direct", timeout=TIMEOUT)
        await clinician.w.wait_count("message", 20, path="direct", timeout=TIMEOUT)
        # each node holds a TURN allocation: a relay port of turnserver-lab.conf's range
        assert len(_relay_ports()) >= 2, _relay_ports()

        revoke = steps["revoke"]
        listing = await run_block(site, revoke.splitlines()[0])
        (jti,) = [ln.split()[0] for ln in listing.splitlines() if ln.split()[1:2] == ["clinician"]]
        await run_block(site, revoke.replace("JTI", jti))
        code = await asyncio.wait_for(clinician.proc.wait(), TIMEOUT)
        await clinician.stop()
        assert code == EXIT_REVOKED, clinician.stderr.decode()[-2000:]
        assert clinician.w.of("revoked")
        cid = joined["endpoint_id"]
        await patient.w.wait_for("revocation-done", peer=cid, timeout=TIMEOUT)
        async with asyncio.timeout(TIMEOUT):
            while not [
                e
                for e in _audit(data)
                if e["event"] == "revoke-complete" and e["endpoint_id"] == cid
            ]:
                await asyncio.sleep(0.1)
        assert patient.proc.returncode is None  # the patient is not revoked

        for node in nodes:
            await node.stop()
        assert await stop(server) == 0
        await run_block(site, steps["audit-verify"])
    finally:
        for node in nodes:
            await node.stop()
        for proc in reversed(procs):
            await stop(proc)
        if drain is not None:
            await drain
