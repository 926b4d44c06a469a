"""Start-up refuses configurations that cannot work, with one line each, and logs one
summary of the effective configuration without secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signaling.config import Config, check_turn_url
from signaling.testing import server_process
from tests.signaling.test_cli import cli

SECRET = "a-turn-secret-of-32-characters!!"


def test_half_configured_states_refused(tmp_path: Path) -> None:
    d = ["signaling", "--port", "0", "--data-dir", str(tmp_path / "d")]
    url = ["--turn-urls", "turn:turn.example:3478?transport=udp"]
    cases = [
        (url, {}, "--turn-urls is set but P2PMED_TURN_SECRET is not"),
        (url, {"P2PMED_TURN_SECRET": "short"}, "has 5 characters; use 24 or more"),
        (["--turn-urls", "bogus://x"], {"P2PMED_TURN_SECRET": SECRET}, "not a TURN URL"),
        (["--turn-urls", "turn:h:70000"], {"P2PMED_TURN_SECRET": SECRET}, "not a TURN URL"),
        ([*url, "--turn-ttl", "10"], {"P2PMED_TURN_SECRET": SECRET}, "--turn-ttl must be"),
        (["--resume-ttl", "100000"], {}, "--resume-ttl exceeds"),
        (["--web-dir", str(tmp_path / "none")], {}, "has no index.html"),
        (["--public-origin", "https://x/y"], {}, "scheme://host[:port] only"),
    ]
    for args, env, needle in cases:
        r = cli(*d, *args, env=env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert needle in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
        assert SECRET not in r.stderr
    assert not (tmp_path / "d").exists()  # refused before touching the data dir


def test_turn_url_forms() -> None:
    for ok in (
        "turn:turn.example.org",
        "turn:192.0.2.1:3478?transport=udp",
        "turns:turn.example.org:443?transport=tcp",
        "turn:[2001:db8::1]:3478",
    ):
        check_turn_url(ok)
    for bad in ("bogus://x", "turn:", "turn:h?transport=sctp", "stun:h", "turn://h", "turn:h:0"):
        with pytest.raises(ValueError):
            check_turn_url(bad)
    with pytest.raises(ValueError, match="limit msg_rate"):
        from signaling.config import Limits

        Config(data_dir=Path("x"), limits=Limits(msg_rate=float("nan")))


def _summary(log: str) -> dict[str, object]:
    entries = [json.loads(x) for x in log.splitlines() if x.startswith("{")]
    (config,) = [e for e in entries if e["event"] == "config"]
    return config


async def test_one_summary_line_without_secrets(tmp_path: Path) -> None:
    env = {"P2PMED_TURN_SECRET": SECRET}
    urls = "turn:127.0.0.1:3478?transport=udp,turns:turn.example:443?transport=tcp"
    async with server_process(tmp_path / "a", "--turn-urls", urls, env=env) as srv:
        assert await srv.stop() == 0
    log = srv.log()
    assert SECRET not in log
    s = _summary(log)
    assert s["turn"] == "on" and s["turn_urls"] == urls.split(",") and s["tls"] is False
    port = srv.url.rsplit(":", 1)[1]
    assert f"http://127.0.0.1:{port}" in s["origins"]  # type: ignore[operator]
    assert s["limits"]["pending_per_ip"] == 100  # type: ignore[index]
    async with server_process(tmp_path / "b") as srv:
        assert await srv.stop() == 0
    assert _summary(srv.log())["turn"] == "off"
    # a secret with no URLs is harmless but probably a mistake: said, not refused
    async with server_process(tmp_path / "c", env=env) as srv:
        assert await srv.stop() == 0
    assert _summary(srv.log())["turn"] == "off" and "turn-secret-unused" in srv.log()
