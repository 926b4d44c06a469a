"""turn/p2pmed-turn.service: its ExecStart and environment, as written (the repo for
/opt/p2pmed, a temporary /etc/p2pmed, %d for the credentials directory), start coturn with
the production turn/turnserver.conf and serve TURN over TLS with the key handed over by
LoadCredential=. Only the listening addresses and ports are moved to loopback and free ports
(the test is not root's 443)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

from signaling.testing import free_port
from tests.coturn import free_udp_port
from tests.deploy.manual import ROOT, Site, parse_unit, stop, unit_command
from tests.node.test_tls_errors import make_private_ca


async def test_turn_unit_starts_coturn_with_tls_from_credentials(tmp_path: Path) -> None:
    assert shutil.which("turnserver"), "coturn (turnserver) is required"
    site = Site(tmp_path / "host", free_port(), free_udp_port(), free_port())
    etc = site.root / "etc" / "p2pmed"
    etc.mkdir(parents=True)
    (etc / "turn.env").write_text("P2PMED_TURN_SECRET=" + "s3cr3t" * 6 + "\n")
    tls = etc / "tls"  # root's 0600 key: unit_command hands it over as LoadCredential= does
    tls.mkdir()
    ca, chain, key = make_private_ca(tls)
    chain.rename(tls / "fullchain.pem")
    key.rename(tls / "privkey.pem")
    text = (ROOT / "turn" / "p2pmed-turn.service").read_text()
    unit = parse_unit(text.replace("/opt/p2pmed/", f"{ROOT}/"))
    assert unit["User"] == ["turnserver"] and unit["RestartPreventExitStatus"] == ["2"]
    argv, env = unit_command(site, unit)
    env["P2PMED_TURN_RUNDIR"] = str(site.root / "run" / "p2pmed-turn")  # RuntimeDirectory=
    tls_port = free_port()
    argv += [
        "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={site.turn_port}",
        f"--tls-listening-port={tls_port}", "--min-port=49901", "--max-port=49950",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    log: list[bytes] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while b"Total General servers" not in (line := await proc.stdout.readline()):
                log.append(line)
                assert line, b"".join(log).decode(errors="replace")
        drain = asyncio.ensure_future(proc.stdout.read())
        ctx = ssl.create_default_context(cafile=str(ca))
        _reader, writer = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx)
        cert = writer.get_extra_info("ssl_object").getpeercert()
        assert cert is not None  # the certificate from the credentials directory, verified
        writer.close()
    finally:
        await stop(proc)
    log.append(await drain)
    assert b"s3cr3t" not in b"".join(log)  # the secret never reaches the log
