"""coturn with server-minted credentials: a relay-only aiortc pair talks; wrong ones fail."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

from signaling.testing import running_server
from tests.coturn import free_udp_port, wait_until_serving

REPO = Path(__file__).resolve().parents[2]
PROD_CONF = REPO / "turn" / "turnserver.conf"
SECRET = "loopback-test-secret-0123456789"


def loopback_variant(tmp: Path, port: int) -> Path:
    """The production config minus TLS and the loopback deny rule, plus allow-loopback-peers."""
    keep = []
    for line in PROD_CONF.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key in (
            "tls-listening-port",
            "listening-port",
            "cert",
            "pkey",
            "min-port",
            "max-port",
            "log-file",
            "cipher-list",
        ):
            continue
        if line.startswith("denied-peer-ip=127.") or line == "denied-peer-ip=::1":
            continue
        keep.append(line.replace("@P2PMED_TURN_SECRET@", SECRET))
    keep += [
        f"listening-port={port}",
        "listening-ip=127.0.0.1",
        "relay-ip=127.0.0.1",
        "min-port=40000",
        "max-port=40999",
        "no-tls",
        "no-dtls",
        f"log-file={tmp / 'turn.log'}",
        f"pidfile={tmp / 'turn.pid'}",
        "allow-loopback-peers",  # ONLY in this test variant
    ]
    conf = tmp / "turn-test.conf"
    conf.write_text("\n".join(keep) + "\n")
    return conf


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[int]:
    port = free_udp_port()
    conf = loopback_variant(tmp_path, port)
    proc = subprocess.Popen(
        ["turnserver", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await wait_until_serving("127.0.0.1", port, SECRET)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_production_config_is_hardened() -> None:
    text = PROD_CONF.read_text()
    lines = {ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")}
    assert not any(ln.startswith("allow-loopback-peers") for ln in lines)
    for needed in (
        "use-auth-secret",
        "fingerprint",
        "no-cli",
        "no-multicast-peers",
        "tls-listening-port=443",
        "static-auth-secret=@P2PMED_TURN_SECRET@",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=::1",
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
        "denied-peer-ip=fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ):
        assert needed in lines, needed
    assert any(ln.startswith("user-quota=") for ln in lines)
    assert any(ln.startswith("total-quota=") for ln in lines)
    assert any(ln.startswith("cert=") for ln in lines) and any(
        ln.startswith("pkey=") for ln in lines
    )
    assert not re.search(r"static-auth-secret=(?!@P2PMED_TURN_SECRET@)", text)


def test_run_script_refuses_bad_secret_and_test_config(tmp_path: Path) -> None:
    script = REPO / "turn" / "run-coturn.sh"
    env = {"PATH": os.environ["PATH"], "P2PMED_TURN_RUNDIR": str(tmp_path)}
    r = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "P2PMED_TURN_SECRET is not set" in r.stderr
    r = subprocess.run(
        [str(script)],
        env={**env, "P2PMED_TURN_SECRET": "short"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert r.returncode == 2 and "too short" in r.stderr
    r = subprocess.run(
        [str(script)],
        env={**env, "P2PMED_TURN_SECRET": "x" * 30 + "|sed"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert r.returncode == 2 and "may only contain" in r.stderr
    bad = loopback_variant(tmp_path, 3478)
    r = subprocess.run(
        [str(script)],
        env={**env, "P2PMED_TURN_SECRET": "x" * 30, "P2PMED_TURN_CONF": str(bad)},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert r.returncode == 2 and "allow-loopback-peers" in r.stderr


async def relay_pair(ice: dict[str, object]) -> str:
    server = RTCIceServer(urls=ice["urls"], username=ice["username"], credential=ice["credential"])
    config = RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    a, b = RTCPeerConnection(config), RTCPeerConnection(config)
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    try:
        ch = a.createDataChannel("control")

        @b.on("datachannel")
        def on_dc(dc: object) -> None:
            @dc.on("message")  # type: ignore[attr-defined]
            def on_msg(m: str) -> None:
                dc.send("pong:" + m)  # type: ignore[attr-defined]

        @ch.on("open")
        def on_open() -> None:
            ch.send("ping")

        @ch.on("message")
        def on_reply(m: str) -> None:
            if not got.done():
                got.set_result(m)

        await a.setLocalDescription(await a.createOffer())
        assert " typ relay" in a.localDescription.sdp
        assert " typ host" not in a.localDescription.sdp
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        return await asyncio.wait_for(got, 20)
    finally:
        await a.close()
        await b.close()


async def test_minted_credentials_work_through_coturn(
    coturn: int, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    urls = [f"turn:127.0.0.1:{coturn}?transport=udp"]
    async with running_server(tmp_path / "d", turn_secret=SECRET, turn_urls=urls) as srv:
        token = srv.mint("s1", "patient")
        r = await http.get(
            srv.url + "/turn-credentials", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status == 200
        (ice,) = (await r.json())["iceServers"]
    assert await relay_pair(ice) == "pong:ping"

    class Sink(asyncio.DatagramProtocol):
        pass

    # wrong password: coturn refuses the allocation (401)
    with pytest.raises(stun.TransactionFailed) as e:
        await create_turn_endpoint(Sink, ("127.0.0.1", coturn), ice["username"], "d3Jvbmc=")
    assert e.value.response.attributes["ERROR-CODE"][0] == 401
    # expired username (signed with the right secret): refused too
    from signaling.turncreds import credentials

    user, pw = credentials(SECRET, "old", ttl=-60)
    with pytest.raises(stun.TransactionFailed):
        await create_turn_endpoint(Sink, ("127.0.0.1", coturn), user, pw)
    # right credentials via the same client API: allocation succeeds, but the deny list
    # of the production config keeps private and link-local peers out of reach
    transport, _ = await create_turn_endpoint(
        Sink, ("127.0.0.1", coturn), ice["username"], ice["credential"]
    )
    try:
        proto = transport._TurnTransport__inner_protocol  # type: ignore[attr-defined]
        await proto.channel_bind(0x4000, ("127.0.0.1", 9))  # allowed in this variant only
        # a public IPv4 peer is not caught by any (IPv6) deny range; a ChannelBind only
        # installs a permission on the TURN server, no packet leaves the machine
        await proto.channel_bind(0x4010, ("192.0.1.1", 9))
        for n, peer in enumerate(
            ("10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.1.1", "100.64.0.1", "224.0.0.1")
        ):
            with pytest.raises(stun.TransactionFailed) as e:
                await proto.channel_bind(0x4001 + n, (peer, 9))
            assert e.value.response.attributes["ERROR-CODE"][0] == 403, peer
    finally:
        transport.close()
