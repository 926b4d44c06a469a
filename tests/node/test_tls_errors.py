"""An untrusted TLS certificate on the signaling server is not a network blip: the node says
so in one line (naming the server, --ca-file and SSL_CERT_FILE) and exits 3 at once; with the
private CA given by --ca-file or SSL_CERT_FILE it joins."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signaling.testing import running_server
from tests.node.conftest import ROOT, start_proc


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_private_ca(d: Path) -> tuple[Path, Path, Path]:
    """A CA of our own and a server certificate for 127.0.0.1 it signed: (ca, chain, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("p2pmed test CA"))
        .issuer_name(_name("p2pmed test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, chain, key_pem = d / "ca.pem", d / "chain.pem", d / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_pem, 0o600)
    return ca_pem, chain, key_pem


@pytest.fixture
async def tls_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    ca, chain, key = make_private_ca(tmp_path)
    async with running_server(tmp_path / "server", tls_cert=chain, tls_key=key) as srv:
        assert srv.url.startswith("https://")
        yield srv, ca


async def run_node(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pmed",
        "node",
        *argv,
        cwd=str(ROOT),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # a generous safety net; the join timeout is far longer, so a node that retried (the old
    # behaviour) fails this test
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_untrusted_certificate_is_one_line_and_final(tls_server) -> None:  # type: ignore[no-untyped-def]
    srv, _ca = tls_server
    url = srv.join_url(srv.mint("s1", "patient"))
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    code, out, err = await run_node(
        "--join", url, "--media", "none", "--json", "--join-timeout", "600", env=env
    )
    assert code == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("p2pmed node: error: the signaling server " + srv.url)
    assert "does not trust" in line and "--ca-file" in line and "SSL_CERT_FILE" in line
    assert "certificate" in line and "cannot reach" not in line
    assert '"code":"join"' in out


async def test_private_ca_by_flag_or_environment(tls_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv, ca = tls_server
    node = await start_proc(srv.join_url(srv.mint("s1", "patient")), "p", "--ca-file", str(ca))
    try:
        joined = await node.w.wait_for("joined")
        assert joined["role"] == "patient"
    finally:
        assert await node.stop() == 0
    os.environ["SSL_CERT_FILE"] = str(ca)
    try:
        node = await start_proc(srv.join_url(srv.mint("s1", "clinician")), "c")
    finally:
        del os.environ["SSL_CERT_FILE"]
    try:
        await node.w.wait_for("joined")
    finally:
        assert await node.stop() == 0


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
async def test_bad_ca_file(tmp_path, content) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    code, _, err = await run_node("--join", "https://h/join#token=x", "--ca-file", str(path))
    assert code == 2 and err.startswith("p2pmed node: error: --ca-file") and err.count("\n") == 1
