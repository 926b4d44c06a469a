"""Revoking a token mid-consultation ends it on every path (issue #16.1): real processes
(signaling server, patient node, clinician node, all with stdin /dev/null), revoked with
`p2pmed token revoke`, with (a) the direct path up, (b) the relay only, (c) the direct path
through a real coturn. The clinician stops receiving within seconds and exits with
EXIT_REVOKED; the patient closes the session and confirms; the audit log has `revoked` and
`revoke-complete`."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from p2pmed.node.revocation import EXIT_REVOKED
from signaling.testing import server_process
from tests.coturn import loopback_coturn
from tests.node.conftest import ROOT, NodeProc, start_proc

BOUND_S = 10.0  # generous: measured about 1-2 s here (the sweep runs once a second)


async def _cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pmed",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _mint(url: str, data: Path, role: str) -> dict[str, Any]:
    out = await _cli(
        "token", "--server", url, "--data-dir", str(data), "--session", "s1", "--role", role,
        "--ttl", "600", "--json",
    )  # fmt: skip
    return dict(json.loads(out))


def _audit(data: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]


async def _consultation(
    tmp_path: Path, path: str, node_args: tuple[str, ...], server_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> None:  # fmt: skip
    data = tmp_path / "data"
    async with server_process(data, *server_args, env=env) as srv:
        ptok = await _mint(srv.url, data, "patient")
        ctok = await _mint(srv.url, data, "clinician")
        patient = await start_proc(
            ptok["url"], "patient", "--data-dir", str(tmp_path / "p"), *node_args
        )
        clinician = await start_proc(
            ctok["url"], "clinician", "--data-dir", str(tmp_path / "c"), *node_args
        )
        procs: list[NodeProc] = [patient, clinician]
        try:
            cid = (await clinician.w.wait_for("joined"))["endpoint_id"]
            # (c): the only ICE server is the coturn, and --ice-relay-only uses nothing else
            assert clinician.w.of("joined")[0]["ice_servers"] == (1 if env else 0)
            await clinician.w.wait_for("path", active=path)
            n = len(clinician.w.of("message"))
            await clinician.w.wait_count("message", n + 20, path=path)  # streaming on `path`
            t_revoke = time.time()
            await _cli("token", "revoke", ctok["jti"], "--data-dir", str(data))
            code = await asyncio.wait_for(clinician.proc.wait(), 30)
            await clinician.stop()  # collects its output
            done = await patient.w.wait_for("revocation-done", peer=cid, timeout=30)
            assert code == EXIT_REVOKED, clinician.stderr.decode()[-2000:]
            assert b"Traceback" not in clinician.stderr, clinician.stderr.decode()[-2000:]
            assert clinician.w.of("revoked"), "the clinician did not tell its user"
            last_in = max(e["ts"] for e in clinician.w.of("message"))
            last_sent = max(e["ts"] for e in patient.w.of("sent", peer=cid))
            print(
                f"\n[{path}] after revoke: clinician's last message {last_in - t_revoke:+.2f} s,"
                f" patient's last send to it {last_sent - t_revoke:+.2f} s, patient closed the"
                f" session in {done['closed_ms']} ms, clinician exited"
                f" {time.time() - t_revoke:.2f} s after revoke (upper bound)"
            )
            assert last_in - t_revoke < BOUND_S
            assert last_sent - t_revoke < BOUND_S
            # the patient goes on (it is not revoked) and keeps nothing for the clinician
            status_n = len(patient.w.of("sent"))
            await asyncio.sleep(1.5)
            assert all(e["peer"] != cid for e in patient.w.of("sent")[status_n:])
            entries = _audit(data)
            for _ in range(50):  # revoke-complete follows the patient's confirmation
                if any(e["event"] == "revoke-complete" for e in entries):
                    break
                await asyncio.sleep(0.1)
                entries = _audit(data)
            revoked = [e for e in entries if e["event"] == "revoked" and e["endpoint_id"] == cid]
            complete = [
                e for e in entries if e["event"] == "revoke-complete" and e["endpoint_id"] == cid
            ]
            assert revoked and complete, [e["event"] for e in entries]
            assert complete[0]["peers"] == [patient.w.of("joined")[0]["endpoint_id"]]
            assert complete[0]["late"] is False
            print(f"[{path}] audit revoke-complete elapsed_ms={complete[0]['elapsed_ms']}")
            assert complete[0]["elapsed_ms"] < BOUND_S * 1000
            assert not [e for e in entries if e["event"] == "revoke-timeout"]
        finally:
            for p in procs:
                await p.stop()


async def test_revoke_with_direct_path(tmp_path: Path) -> None:
    await _consultation(tmp_path, "direct", ())


async def test_revoke_with_relay_only(tmp_path: Path) -> None:
    # --ice-relay-only and no TURN server: WebRTC cannot form, the WebSocket relay carries all
    await _consultation(tmp_path, "relay", ("--ice-relay-only",))


@pytest.fixture
async def coturn(tmp_path: Path) -> Any:
    async with loopback_coturn(tmp_path, 49601, 49700) as turn:
        yield turn


async def test_revoke_with_direct_path_through_coturn(tmp_path: Path, coturn: Any) -> None:
    secret, url = coturn
    await _consultation(
        tmp_path,
        "direct",
        ("--ice-relay-only",),
        ("--turn-urls", url),
        env={"P2PMED_TURN_SECRET": secret},
    )


async def test_revoke_the_patient_with_direct_path(tmp_path: Path) -> None:
    """The other way round: the revoked patient exits 5, the clinician closes its session
    and confirms, and receives nothing more."""
    data = tmp_path / "data"
    async with server_process(data) as srv:
        ptok = await _mint(srv.url, data, "patient")
        ctok = await _mint(srv.url, data, "clinician")
        patient = await start_proc(ptok["url"], "patient", "--data-dir", str(tmp_path / "p"))
        clinician = await start_proc(ctok["url"], "clinician", "--data-dir", str(tmp_path / "c"))
        try:
            pid = (await patient.w.wait_for("joined"))["endpoint_id"]
            await clinician.w.wait_for("path", active="direct")
            await clinician.w.wait_count("message", 20, path="direct")
            t_revoke = time.time()
            await _cli("token", "revoke", ptok["jti"], "--data-dir", str(data))
            code = await asyncio.wait_for(patient.proc.wait(), 30)
            await patient.stop()
            done = await clinician.w.wait_for("revocation-done", peer=pid, timeout=30)
            assert code == EXIT_REVOKED, patient.stderr.decode()[-2000:]
            assert patient.w.of("revoked")
            n = len(clinician.w.of("message"))
            last_in = max(e["ts"] for e in clinician.w.of("message"))
            print(
                f"\n[patient revoked] clinician's last message {last_in - t_revoke:+.2f} s after"
                f" revoke; clinician closed the session in {done['closed_ms']} ms"
            )
            assert last_in - t_revoke < BOUND_S
            assert clinician.proc.returncode is None  # the clinician is not revoked
            for _ in range(50):
                complete = [e for e in _audit(data) if e["event"] == "revoke-complete"]
                if complete:
                    break
                await asyncio.sleep(0.1)
            assert complete[0]["endpoint_id"] == pid
            assert complete[0]["peers"] == [clinician.w.of("joined")[0]["endpoint_id"]]
            assert len(clinician.w.of("message")) == n
        finally:
            await clinician.stop()
            await patient.stop()
