"""HTTP side: /healthz, /metrics, /turn-credentials, the page and static files, TLS."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ssl
import time
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signaling.testing import RunningServer, running_server
from tests.signaling.conftest import Harness

SECRET = "test-turn-secret-0123456789"


async def test_healthz_and_metrics(h: Harness) -> None:
    _pat, _docs = await h.consult()  # keep the clients connected
    async with h.http.get(h.srv.url + "/healthz") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok", "sessions": 1, "endpoints": 2}
    assert h.srv.metrics_url is not None
    async with h.http.get(h.srv.metrics_url + "/metrics") as r:
        text = await r.text()
        assert r.status == 200 and r.content_type == "text/plain"
    for name in (
        "p2pmed_sessions 1.0",
        'p2pmed_endpoints{state="admitted"} 2.0',
        'p2pmed_joins_total{role="clinician"} 1.0',
        "p2pmed_join_latency_seconds_bucket",
        "p2pmed_relay_latency_seconds_bucket",
        "p2pmed_signaling_latency_seconds_count",
    ):
        assert name in text, name


async def test_turn_credentials(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    urls = ["turn:127.0.0.1:3478?transport=udp", "turns:turn.example:443?transport=tcp"]
    async with running_server(tmp_path, turn_secret=SECRET, turn_urls=urls, turn_ttl=600) as srv:
        token = srv.mint("s1", "patient", jti="jti-turn")
        before = int(time.time())
        async with http.get(
            srv.url + "/turn-credentials", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200
            body = await r.json()
        assert body["ttl"] == 600
        (ice,) = body["iceServers"]
        assert ice["urls"] == urls
        expiry, user = ice["username"].split(":")
        assert user == "jti-turn" and before + 600 <= int(expiry) <= int(time.time()) + 600
        mac = hmac.new(SECRET.encode(), ice["username"].encode(), hashlib.sha1).digest()
        assert ice["credential"] == base64.b64encode(mac).decode()
        for headers, code in (
            ({}, "token-missing"),
            ({"Authorization": "Basic abc"}, "token-missing"),
            ({"Authorization": "Bearer nope"}, "token-malformed"),
        ):
            async with http.get(srv.url + "/turn-credentials", headers=headers) as r:
                assert r.status == 401 and (await r.json())["error"] == code
        srv.revoke("jti-turn")
        async with http.get(
            srv.url + "/turn-credentials", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 401 and (await r.json())["error"] == "token-revoked"
        assert srv.metric("p2pmed_rejected_joins_total", reason="token-revoked") == 1


async def test_turn_not_configured(srv: RunningServer, http: aiohttp.ClientSession) -> None:
    # no TURN is a normal setup: 200 and no ICE servers (a 503 was a console error on the page)
    async with http.get(
        srv.url + "/turn-credentials",
        headers={"Authorization": f"Bearer {srv.mint('s1', 'patient')}"},
    ) as r:
        assert r.status == 200 and await r.json() == {"iceServers": [], "ttl": 0}
    assert srv.metric("p2pmed_turn_credentials_total") == 0
    # the token is still checked
    async with http.get(
        srv.url + "/turn-credentials", headers={"Authorization": "Bearer nope"}
    ) as r:
        assert r.status == 401 and (await r.json())["error"] == "token-malformed"


async def test_join_page_and_static(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    web = tmp_path / "web"
    (web / "js").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>p2pmed</title>")
    (web / "js" / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("not for you")
    async with running_server(tmp_path / "data", web_dir=web) as srv:
        async with http.get(srv.url + "/join") as r:
            assert r.status == 200 and "p2pmed" in await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert r.headers["Cache-Control"] == "no-store"
        async with http.get(srv.url + "/static/js/app.js") as r:
            assert r.status == 200 and await r.text() == "console.log(1)"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(srv.url + "/static/../secret.txt") as r:
            assert r.status in (403, 404)
        async with http.get(srv.url + "/static/%2e%2e/secret.txt") as r:
            assert r.status in (403, 404)
        async with http.get(srv.url + "/static/") as r:
            assert r.status in (403, 404)


async def test_missing_page_is_a_clear_404(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path / "d", web_dir=tmp_path / "none") as srv:
        r = await http.get(srv.url + "/join")
        assert r.status == 404 and (await r.json())["error"] == "no-page"


def self_signed(dir: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    c, k = dir / "cert.pem", dir / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


async def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(cafile=str(cert))
    async with running_server(tmp_path / "d", tls_cert=cert, tls_key=key) as srv:
        assert srv.url.startswith("https://") and srv.ws_url.startswith("wss://")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            async with http.get(srv.url + "/healthz") as r:
                assert r.status == 200
                assert "max-age" in r.headers["Strict-Transport-Security"]
            _c, joined = await Harness(srv, http).join("s1", "clinician", "doc")
            assert joined["type"] == "joined"
