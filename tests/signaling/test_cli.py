"""The `p2pmed` CLI as a user runs it: separate processes, real files, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from signaling.testing import running_server
from tests.signaling.conftest import Client, Harness

ENV = {k: v for k, v in os.environ.items() if not k.startswith("P2PMED_")}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """In-process run of the real CLI entry point (fast); same result shape as subprocess."""
    from p2pmed.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({**ENV, **(env or {})})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def cli_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pmed", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**ENV, **(env or {})},
    )


async def test_token_mint_join_and_revoke(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    data = tmp_path / "data"
    async with running_server(data) as srv:
        r = cli_process(
            "token",
            "--server",
            srv.url,
            "--data-dir",
            str(data),
            "--session",
            "s1",
            "--role",
            "clinician",
            "--ttl",
            "300",
        )
        assert r.returncode == 0, r.stderr
        url = r.stdout.strip()
        assert url.startswith(f"{srv.url}/join#token=")
        r = cli(
            "token",
            "--server",
            srv.url + "/",
            "--session",
            "s1",
            "--role",
            "patient",
            "--json",
            env={"P2PMED_DATA_DIR": str(data)},
        )
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["url"] == f"{srv.url}/join#token={info['token']}"
        assert info["role"] == "patient" and info["session"] == "s1" and info["jti"]
        h = Harness(srv, http)
        _doc, joined = await h.join("s1", "clinician", "doc", token=url.split("#token=")[1])
        assert joined["role"] == "clinician"
        r = cli_process("token", "revoke", info["jti"], "--data-dir", str(data))
        assert r.returncode == 0 and "revoked" in r.stdout
        r = cli("token", "revoke", info["jti"], "--data-dir", str(data))
        assert r.returncode == 0 and "already" in r.stdout
        c = await h.connect()
        await c.send(type="join", token=info["token"], endpoint_id="pat")
        code, seen = await c.closed()
        assert code == 4401 and seen[-1]["code"] == "token-revoked"


def test_token_bad_flags(tmp_path: Path) -> None:
    base = ["token", "--server", "https://s.example", "--data-dir", str(tmp_path)]
    cases = [
        ([*base, "--session", "s1", "--role", "admin"], "invalid choice"),
        ([*base, "--session", "s1", "--role", "patient", "--ttl", "-5"], "positive"),
        ([*base, "--session", "s1", "--role", "patient", "--ttl", "1e9"], "exceeds"),
        ([*base, "--session", "bad id", "--role", "patient"], "session must be"),
        ([*base, "--role", "patient"], "missing --session"),
        (
            [
                "token",
                "--server",
                "ftp://x",
                "--data-dir",
                "d",
                "--session",
                "s",
                "--role",
                "patient",
            ],
            "http(s) base URL",
        ),
        ([*base, "--session", "s1", "--role", "patient"], "key file not found"),
        (["token", "revoke", "abc", "--data-dir", str(tmp_path / "none")], "no data dir"),
        (["token", "revoke", "abc"], "--data-dir"),
        (["token", "frobnicate"], "invalid choice"),
    ]
    for args, needle in cases:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert needle in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_key_file_permissions_checked(tmp_path: Path) -> None:
    from signaling.tokens import token_key

    token_key(tmp_path, create=True)
    (tmp_path / "token-key").chmod(0o644)
    r = cli(
        "token",
        "--server",
        "http://x",
        "--data-dir",
        str(tmp_path),
        "--session",
        "s",
        "--role",
        "patient",
    )
    assert r.returncode == 2 and "too open" in r.stderr


async def test_audit_verify_cli(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    data = tmp_path / "data"
    async with running_server(data) as srv:
        _pat, _docs = await Harness(srv, http).consult()
    log = data / "audit.jsonl"
    r = cli("audit", "verify", str(log))
    assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stderr
    lines = log.read_text().splitlines()
    middle = len(lines) // 2
    tampered = tmp_path / "t.jsonl"
    lines2 = list(lines)
    lines2[middle] = lines2[middle].replace('"seq"', '"seq" ', 1).replace(":", ": ", 1)
    entry = json.loads(lines[middle])
    entry["ts"] = "2020-01-01T00:00:00.000+00:00"
    lines2[middle] = json.dumps(entry)
    tampered.write_text("\n".join(lines2) + "\n")
    r = cli("audit", "verify", str(tampered), "--public-key", str(data / "audit-key.pub"))
    assert r.returncode == 1 and f"line {middle + 1}:" in r.stderr
    last = json.loads(lines[-1])
    last["entries"] += 1
    tampered.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    r = cli("audit", "verify", str(tampered), "--public-key", str(data / "audit-key.pub"))
    assert r.returncode == 1 and f"line {len(lines)}:" in r.stderr
    r = cli("audit", "verify", str(tampered))  # no audit-key.pub next to it
    assert r.returncode == 2 and "public key" in r.stderr
    r = cli("audit", "verify", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = cli("audit", "verify")
    assert r.returncode == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_bad_flags(tmp_path: Path) -> None:
    d = ["--data-dir", str(tmp_path)]
    cases = [
        (["signaling", "--port", "70000", *d], {}, "out of range"),
        (["signaling", "--port", "x", *d], {}, "not a port"),
        (["signaling", *d], {"P2PMED_PORT": "abc"}, "not a port"),
        (["signaling"], {}, "--data-dir"),
        (["signaling", "--tls-cert", str(tmp_path / "none.pem"), *d], {}, "no such file"),
        (["signaling", "--idle-timeout", "0", *d], {}, "positive"),
        (["signaling", "--msg-rate", "nan", *d], {}, "positive"),
        (["signaling", "--resume-ttl", "-5", *d], {}, "positive"),
        (["signaling", *d], {"P2PMED_RESUME_TTL": "soon"}, "not a number"),
    ]
    for args, env, needle in cases:
        r = cli(*args, env=env)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    r = cli("signaling", "--tls-cert", str(cert), *d)
    assert r.returncode == 2 and "together" in r.stderr
    r = cli("signaling", "--tls-cert", str(cert), "--tls-key", str(cert), "--port", "0", *d)
    assert r.returncode == 2 and "TLS" in r.stderr


async def test_server_process_env_sigterm_and_logs(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    env = {
        **ENV,
        "P2PMED_HOST": "127.0.0.1",
        "P2PMED_PORT": str(port),
        "P2PMED_DATA_DIR": str(data),
        "P2PMED_IDLE_TIMEOUT": "600",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pmed",
        "signaling",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(url + "/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            r2 = cli(
                "token",
                "--server",
                url,
                "--data-dir",
                str(data),
                "--session",
                "s1",
                "--role",
                "clinician",
                "--json",
            )
            token = json.loads(r2.stdout)["token"]
            c = Client(await http.ws_connect(url + "/ws"))
            await c.send(type="join", token=token, endpoint_id="doc")
            assert (await c.recv())["type"] == "joined"
            proc.send_signal(signal.SIGTERM)
            code, seen = await c.closed()
            assert code == 1012
            assert seen[-1]["type"] == "reconnect"
            assert 1000 <= seen[-1]["after_ms"] <= 5000  # jittered, so clients come back spread
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    logs = [json.loads(line) for line in (await proc.stderr.read()).decode().splitlines()]
    assert {"start", "join", "stop"} <= {e["event"] for e in logs}
    assert all("token" not in json.dumps(e) or "sdp" in e for e in logs) and token not in str(logs)
    r = cli_process("audit", "verify", str(data / "audit.jsonl"))
    assert r.returncode == 0, r.stderr
    assert '"event":"shutdown"' in (data / "audit.jsonl").read_text()


def test_server_refuses_bad_data_dir(tmp_path: Path) -> None:
    from signaling.audit import AuditLog
    from signaling.keys import audit_key

    data = tmp_path / "data"
    data.mkdir()
    log = AuditLog(data / "audit.jsonl", audit_key(data))
    log.append("start")
    log.close()
    with (data / "audit.jsonl").open("a") as f:
        f.write('{"seq": 3, "torn')  # power loss mid-write
    r = cli("signaling", "--port", "0", "--data-dir", str(data))
    assert r.returncode == 2 and "incomplete" in r.stderr and "audit verify" in r.stderr
    (data / "audit.jsonl").unlink()
    (data / "token-key").write_text("00" * 32)
    (data / "token-key").chmod(0o644)
    r = cli("signaling", "--port", "0", "--data-dir", str(data))
    assert r.returncode == 2 and "too open" in r.stderr
    (data / "token-key").chmod(0o600)
    (data / "token-key").write_text("zz")
    r = cli("signaling", "--port", "0", "--data-dir", str(data))
    assert r.returncode == 2 and "hex" in r.stderr
    (tmp_path / "file").write_text("x")
    r = cli("signaling", "--port", "0", "--data-dir", str(tmp_path / "file"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_minted_token_ids_are_safe_command_arguments(tmp_path: Path) -> None:
    # A base64url id can start with "-", which argparse reads as a flag in `token revoke ID`.
    from signaling.tokens import mint

    key = bytes(32)
    ids = [
        mint(key, session="s1", role="patient", ttl=60, issuer="i", audience="a")[1].jti
        for _ in range(500)
    ]
    assert all(not i.startswith("-") for i in ids)
    assert len(set(ids)) == 500
