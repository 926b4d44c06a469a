"""Identity pinning with real nodes: a patient node pins every clinician identity of its
consultation, a clinician node refuses a second patient identity with a HIGH technical alarm,
enrolled-only mode refuses strangers, SAS verify is recorded."""

from __future__ import annotations

import json
import os
import stat

from p2pmed.node.truststore import TrustStore
from tests.node.conftest import start_inproc


def entries(data_dir) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    path = data_dir / "trust.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    return json.loads(path.read_text())["peers"]


async def test_patient_pins_every_clinician_of_the_consultation(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Several clinicians per patient session are normal (a shift change, a second clinician,
    another browser): a patient node accepts a second clinician identity and pins it as new."""
    p_url = server.join_url(server.mint("s1", "patient"))
    patient = await start_inproc(p_url, "patient", data_dir=str(tmp_path / "p"))
    c1 = await start_inproc(
        server.join_url(server.mint("s1", "clinician")), "c1", data_dir=str(tmp_path / "c1")
    )
    c2 = None
    try:
        await c1.w.wait_count("message", 5)
        c1_fp = c1.node.identity.fingerprint()
        pin = await patient.w.wait_for("identity-pinned", fingerprint=c1_fp)
        assert pin["role"] == "clinician" and pin["new"] is False and pin["identities"] == 1
        [back] = c1.w.of("identity-pinned")  # the clinician pinned the patient
        assert back["fingerprint"] == patient.node.identity.fingerprint()
        assert back["role"] == "patient" and back["new"] is False
        [e] = entries(tmp_path / "p")
        assert (e["fingerprint"], e["role"], e["how"], e["session"]) == (
            c1_fp,
            "clinician",
            "first-use",
            "s1",
        )
        assert e["first_seen"] is not None and e["last_seen"] is not None
        assert e["verified"] is None
        # a second clinician, another identity, same consultation: accepted, pinned as new
        c2 = await start_inproc(
            server.join_url(server.mint("s1", "clinician")), "c2", data_dir=str(tmp_path / "c2")
        )
        c2_fp = c2.node.identity.fingerprint()
        await c2.w.wait_count("message", 5)
        pin = await patient.w.wait_for("identity-pinned", fingerprint=c2_fp)
        assert pin["role"] == "clinician" and pin["new"] is True and pin["identities"] == 2
        n = len(c1.w.of("message"))
        await c1.w.wait_count("message", n + 10)  # the first clinician goes on too
        assert not patient.w.of("technical-alarm")
        assert not any(k.startswith("trust/") for k in patient.node.rejected)
        pinned = {(e["fingerprint"], e["session"]) for e in entries(tmp_path / "p")}
        assert pinned == {(c1_fp, "s1"), (c2_fp, "s1")}
        # the first clinician again (a new connection, already pinned): accepted silently
        await c1.stop()
        mark = len(patient.w.events)
        c1 = await start_inproc(
            server.join_url(server.mint("s1", "clinician")), "c1b", data_dir=str(tmp_path / "c1")
        )
        await c1.w.wait_count("message", 5)
        assert not [e for e in patient.w.events[mark:] if e["event"] == "identity-pinned"]
        assert len(entries(tmp_path / "p")) == 2
    finally:
        for n in (c2, c1, patient):
            if n is not None:
                await n.stop()


async def test_clinician_refuses_a_patient_with_another_identity(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c_url = server.join_url(server.mint("s2", "clinician"))
    clinician = await start_inproc(c_url, "c", data_dir=str(tmp_path / "c"))
    p1 = await start_inproc(
        server.join_url(server.mint("s2", "patient")), "p1", data_dir=str(tmp_path / "p1")
    )
    p2 = None
    try:
        await clinician.w.wait_count("message", 3)
        await p1.stop()
        p2 = await start_inproc(
            server.join_url(server.mint("s2", "patient")), "p2", data_dir=str(tmp_path / "p2")
        )
        alarm = await clinician.w.wait_for("technical-alarm", code="identity-changed")
        assert alarm["priority"] == "HIGH" and alarm["role"] == "patient"
        assert alarm["fingerprint"] == p2.node.identity.fingerprint()
        assert alarm["expected"] == [p1.node.identity.fingerprint()]
        mark = clinician.w.events.index(alarm)
        assert not [e for e in clinician.w.events[mark:] if e["event"] == "message"]
    finally:
        for n in (p2, clinician):
            if n is not None:
                await n.stop()


async def test_require_known_peers(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # enrolled beforehand: accepted, no first-use pin needed
    c_dir = tmp_path / "c"
    clinician = await start_inproc(
        server.join_url(server.mint("s3", "clinician")), "c", data_dir=str(c_dir)
    )
    p_dir = tmp_path / "p"
    TrustStore(str(p_dir)).add(clinician.node.identity.fingerprint(), "clinician", "Dr. A")
    patient = await start_inproc(
        server.join_url(server.mint("s3", "patient")),
        "p",
        data_dir=str(p_dir),
        require_known_peers=True,
    )
    stranger = None
    try:
        await clinician.w.wait_count("message", 3)
        assert not patient.w.of("identity-pinned")
        # not enrolled: refused even though it would be a first use
        stranger = await start_inproc(
            server.join_url(server.mint("s3", "clinician")), "x", data_dir=str(tmp_path / "x")
        )
        alarm = await patient.w.wait_for("technical-alarm", code="unknown-identity")
        assert alarm["fingerprint"] == stranger.node.identity.fingerprint()
        assert not stranger.w.of("message")
        # the SAS, compared and marked verified, is recorded
        hs = clinician.w.of("handshake")[0]
        patient.node.command({"cmd": "verify", "sas": "0000000"})
        await patient.w.wait_for("error", code="bad-command")  # wrong SAS / several peers
        patient.node.command(
            {"cmd": "verify", "peer": clinician.node.endpoint_id, "sas": hs["sas"]}
        )
        await patient.w.wait_for("trust", action="verified")
        [e] = entries(p_dir)
        assert e["how"] == "enrolled" and e["verified"] is not None and e["label"] == "Dr. A"
    finally:
        for n in (stranger, patient, clinician):
            if n is not None:
                await n.stop()


async def test_candidate_with_another_key_does_not_replace_the_session(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Node.accept_candidate (for peer.py, before a completed new handshake replaces an
    established session): another key is refused with the alarm and the session stays."""
    from types import SimpleNamespace

    from p2pmed.core.identity import Identity

    clinician = await start_inproc(
        server.join_url(server.mint("s4", "clinician")), "c", data_dir=str(tmp_path / "c")
    )
    patient = await start_inproc(
        server.join_url(server.mint("s4", "patient")), "p", data_dir=str(tmp_path / "p")
    )
    try:
        await clinician.w.wait_count("message", 3)
        [link] = clinician.node.peers.values()
        assert clinician.node.accept_candidate(link, link.session)  # same key: fine
        forged = SimpleNamespace(peer_fingerprint=Identity.generate().fingerprint())
        assert not clinician.node.accept_candidate(link, forged)  # type: ignore[arg-type]
        alarm = await clinician.w.wait_for("technical-alarm", code="identity-changed")
        assert alarm["fingerprint"] == forged.peer_fingerprint
        assert link.established and not link.closed
        n = len(clinician.w.of("message"))
        await clinician.w.wait_count("message", n + 5)  # the real session goes on
    finally:
        await patient.stop()
        await clinician.stop()


async def test_patient_process_reports_new_clinicians(server, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """What an operator or auditor sees: identity-pinned lines in --json, a warning on stderr
    for a further clinician, and `p2pmed trust list` with when each was first and last seen."""
    from p2pmed.cli import main
    from tests.node.conftest import start_proc

    p_dir = tmp_path / "p"
    patient = await start_proc(
        server.join_url(server.mint("s5", "patient")), "patient", "--data-dir", str(p_dir)
    )
    clinicians = []
    try:
        for name in ("c1", "c2"):
            c = await start_inproc(
                server.join_url(server.mint("s5", "clinician")), name, data_dir=str(tmp_path / name)
            )
            clinicians.append(c)
            await c.w.wait_count("message", 3)
            await patient.w.wait_for("identity-pinned", fingerprint=c.node.identity.fingerprint())
    finally:
        for c in clinicians:
            await c.stop()
        assert await patient.stop() == 0
    first, second = patient.w.of("identity-pinned")
    assert (first["role"], first["new"], first["identities"]) == ("clinician", False, 1)
    assert (second["role"], second["new"], second["identities"]) == ("clinician", True, 2)
    assert not patient.w.of("technical-alarm")
    assert b"a further clinician identity " + second["fingerprint"].encode() in patient.stderr
    capsys.readouterr()
    assert main(["trust", "list", "--data-dir", str(p_dir)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2
    for row, pin in zip(rows, (first, second), strict=True):
        assert row.startswith(pin["fingerprint"]) and "first-use (consultation s5)" in row
        assert "first seen 20" in row and "last seen 20" in row and "SAS not verified" in row
