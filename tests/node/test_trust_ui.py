"""The terminal clinician view and identity trust: `v` marks the SAS on screen verified (the
trust store records it), a refused patient identity is shown at the top until `a`."""

from __future__ import annotations

import json

from p2pmed.ui import LOUD, TerminalUI
from tests.node.conftest import start_inproc


def screen(ui: TerminalUI) -> str:
    return "\n".join(ui.render())


async def test_verify_key_and_identity_alarm_on_screen(server, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    c_dir = tmp_path / "c"
    clinician = await start_inproc(
        server.join_url(server.mint("u1", "clinician")), "c", data_dir=str(c_dir)
    )
    ui = TerminalUI(clinician.node.app)  # type: ignore[arg-type]
    p1 = await start_inproc(
        server.join_url(server.mint("u1", "patient")), "p1", data_dir=str(tmp_path / "p1")
    )
    p2 = None
    try:
        await clinician.w.wait_count("message", 3)
        sas = clinician.w.of("handshake")[0]["sas"]
        text = screen(ui)
        assert f"SAS {sas} (read it to the patient; v if it matches)" in text
        assert "v SAS matches" in text and LOUD not in text
        ui.key("v")
        done = await clinician.w.wait_for("trust", action="verified")
        assert done["fingerprint"] == p1.node.identity.fingerprint()
        text = screen(ui)
        assert f"SAS {sas} (verified)" in text and "recorded in the trust store" in text
        [entry] = json.loads((c_dir / "trust.json").read_text())["peers"]
        assert entry["role"] == "patient" and entry["verified"] is not None
        # a later view of the same consultation finds the verification in the store
        assert f"SAS {sas} (verified)" in screen(TerminalUI(clinician.node.app))  # type: ignore[arg-type]

        # the patient's device comes back with another key: refused, loud at the top
        await p1.stop()
        p2 = await start_inproc(
            server.join_url(server.mint("u1", "patient")), "p2", data_dir=str(tmp_path / "p2")
        )
        await clinician.w.wait_for("technical-alarm", code="identity-changed")
        lines = ui.render()
        assert lines[1].startswith(f"{LOUD} HIGH TECHNICAL ALARM identity-changed")
        assert p2.node.identity.fingerprint() in lines[1]
        assert p1.node.identity.fingerprint() in lines[1]  # the pinned one
        assert lines[2].startswith(LOUD) and "man in the middle" in lines[2]
        capsys.readouterr()
        ui.draw()  # reverse video and the bell on the terminal
        out = capsys.readouterr().out
        assert f"\x1b[1;7m{LOUD} HIGH TECHNICAL ALARM identity-changed" in out and "\a" in out
        ui.key("a")  # acknowledged: off the top
        assert LOUD not in screen(ui)
    finally:
        for n in (p2, clinician):
            if n is not None:
                await n.stop()


async def test_verify_key_without_a_patient_says_why(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    clinician = await start_inproc(
        server.join_url(server.mint("u2", "clinician")), "c", data_dir=str(tmp_path / "c")
    )
    try:
        ui = TerminalUI(clinician.node.app)  # type: ignore[arg-type]
        ui.key("v")
        await clinician.w.wait_for("error", code="bad-command")
        assert "not verified: verify: no established peer" in screen(ui)
        assert not (tmp_path / "c" / "trust.json").exists()
    finally:
        await clinician.stop()


async def test_unenrolled_patient_alarm_on_screen(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    clinician = await start_inproc(
        server.join_url(server.mint("u3", "clinician")),
        "c",
        data_dir=str(tmp_path / "c"),
        require_known_peers=True,
    )
    ui = TerminalUI(clinician.node.app)  # type: ignore[arg-type]
    patient = await start_inproc(server.join_url(server.mint("u3", "patient")), "p")
    try:
        await clinician.w.wait_for("technical-alarm", code="unknown-identity")
        text = screen(ui)
        assert f"{LOUD} HIGH TECHNICAL ALARM unknown-identity: patient " in text
        assert patient.node.identity.fingerprint() in text and "not enrolled" in text
    finally:
        await patient.stop()
        await clinician.stop()
