"""--trusted-proxy: the client's address behind a load balancer, for the per-IP join limit and
the audit log. X-Forwarded-For is believed only from a trusted peer, and then only its
right-most entry that is not a trusted proxy; an unreadable header gives the peer's own
address and is counted."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling.cli import _build_config, register
from signaling.config import Config, Limits
from signaling.proxies import TrustedProxies
from signaling.testing import RunningServer, running_server
from tests.signaling.conftest import Client


def test_right_most_untrusted_entry() -> None:
    t = TrustedProxies(["10.0.0.0/8", "::1/128"])
    assert t.client("10.1.2.3", ["198.51.100.7"]) == ("198.51.100.7", False)
    # the client wrote the left entries: never believed past an untrusted one
    assert t.client("10.1.2.3", ["1.1.1.1, 203.0.113.5"]) == ("203.0.113.5", False)
    assert t.client("10.1.2.3", ["1.1.1.1", "203.0.113.5, 10.9.9.9"]) == ("203.0.113.5", False)
    assert t.client("::1", [" 2001:db8::5 "]) == ("2001:db8::5", False)
    assert t.client("::ffff:10.0.0.1", ["192.0.2.1"]) == ("192.0.2.1", False)
    # only proxies in the chain: the farthest one
    assert t.client("10.0.0.1", ["10.0.0.2, 10.0.0.3"]) == ("10.0.0.2", False)
    # no header: the peer itself
    assert t.client("10.0.0.1", []) == ("10.0.0.1", False)


def test_untrusted_peer_header_ignored() -> None:
    t = TrustedProxies(["10.0.0.0/8"])
    assert t.client("192.0.2.9", ["10.0.0.5"]) == ("192.0.2.9", False)
    assert t.client("192.0.2.9", ["garbage"]) == ("192.0.2.9", False)
    assert TrustedProxies([]).client("10.0.0.1", ["192.0.2.1"]) == ("10.0.0.1", False)


def test_unreadable_header_gives_the_peer() -> None:
    t = TrustedProxies(["10.0.0.0/8"])
    for bad in (["garbage"], [""], ["1.2.3.4:80"], ["192.0.2.1, ,"], ["x" * 10_000]):
        assert t.client("10.0.0.1", bad) == ("10.0.0.1", True), bad
    # junk left of the proxy's own entry is never read
    assert t.client("10.0.0.1", ["garbage", "192.0.2.1"]) == ("192.0.2.1", False)


def test_bad_cidr_refused() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.1/8"):
        Config(data_dir=Path("."), trusted_proxies=["10.0.0.1/8"])
    with pytest.raises(ValueError, match="nonsense"):
        TrustedProxies(["nonsense"])


def test_cli_flag_and_env(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "p2pmed", "signaling", "--data-dir", str(tmp_path / "d")]
    bad = subprocess.run(
        [*run, "--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "300.1.1.1/32"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--trusted-proxy '300.1.1.1/32'" in bad.stderr
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    os.environ["P2PMED_TRUSTED_PROXY"] = "10.0.0.0/8, 192.168.1.0/24"
    try:
        register(sub)
        env = _build_config(p.parse_args(["signaling", "--data-dir", str(tmp_path)]))
    finally:
        del os.environ["P2PMED_TRUSTED_PROXY"]
    assert env.trusted_proxies == ["10.0.0.0/8", "192.168.1.0/24"]
    flag = _build_config(
        p.parse_args(["signaling", "--data-dir", str(tmp_path), "--trusted-proxy", "::1/128"])
    )
    assert flag.trusted_proxies == ["::1/128"]


async def join(
    srv: RunningServer, http: aiohttp.ClientSession, eid: str, xff: str | None
) -> tuple[str, int | None]:
    """Join with this X-Forwarded-For (None: none); ('joined', None) or (error, close code)."""
    headers = {} if xff is None else {"X-Forwarded-For": xff}
    c = Client(await http.ws_connect(srv.ws_url, headers=headers))
    await c.send(type="join", token=srv.mint("s1", "clinician"), endpoint_id=eid)
    first = await c.recv()
    if first["type"] == "joined":
        await c.ws.close()
        return "joined", None
    code, _ = await c.closed()
    return str(first.get("code")), code


def audit_ips(srv: RunningServer) -> list[tuple[str, Any]]:
    lines = (srv.config.data_dir / "audit.jsonl").read_text().splitlines()
    return [(e["endpoint_id"], e["ip"]) for e in map(json.loads, lines) if e["event"] == "join"]


LIMITS = {"join_rate": 0.01, "join_burst": 2}


async def test_forged_header_from_untrusted_peer_ignored(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # the default (nobody trusted), and a proxy network that does not hold the peer
    for trusted in ([], ["10.0.0.0/8"]):
        d = tmp_path / str(len(trusted))
        async with running_server(d, limits=Limits(**LIMITS), trusted_proxies=trusted) as srv:
            assert await join(srv, http, "a", "192.0.2.1") == ("joined", None)
            assert await join(srv, http, "b", "192.0.2.2") == ("joined", None)
            # a third address in the header buys no third join: one bucket, the peer's
            assert await join(srv, http, "c", "192.0.2.3") == ("too-many-joins", 4429)
            assert audit_ips(srv) == [("a", "127.0.0.1"), ("b", "127.0.0.1")]
            assert srv.metric("p2pmed_signaling_errors_total", code="bad-forwarded-for") == 0


async def test_trusted_proxy_clients_get_their_own_buckets(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(
        tmp_path, limits=Limits(**LIMITS), trusted_proxies=["127.0.0.0/8"]
    ) as srv:
        for eid in ("a1", "a2"):
            assert await join(srv, http, eid, "192.0.2.1") == ("joined", None)
        assert await join(srv, http, "a3", "192.0.2.1") == ("too-many-joins", 4429)
        # another client behind the same proxy still joins; a forged left entry is not read
        assert await join(srv, http, "b1", "192.0.2.1, 192.0.2.2") == ("joined", None)
        # an unreadable header counts against the proxy's own address, and is counted
        assert await join(srv, http, "m1", "not-an-address") == ("joined", None)
        assert await join(srv, http, "m2", "1.2.3.4:5") == ("joined", None)
        assert await join(srv, http, "m3", ",") == ("too-many-joins", 4429)
        assert srv.metric("p2pmed_signaling_errors_total", code="bad-forwarded-for") == 3
        assert audit_ips(srv) == [
            ("a1", "192.0.2.1"),
            ("a2", "192.0.2.1"),
            ("b1", "192.0.2.2"),
            ("m1", "127.0.0.1"),
            ("m2", "127.0.0.1"),
        ]
