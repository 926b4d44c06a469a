"""A node is SIGKILLed and restarted with its --data-dir: the stream resumes with nothing
lost and nothing delivered twice."""

from __future__ import annotations

import os
import stat

from tests.node.conftest import NodeProc, check_stream, start_proc


async def test_clinician_killed_and_restarted(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p_url = server.join_url(server.mint("s1", "patient"))
    c_url = server.join_url(server.mint("s1", "clinician"))
    patient = await start_proc(p_url, "patient", "--data-dir", str(tmp_path / "p"))
    c1 = await start_proc(c_url, "clinician-1", "--data-dir", str(tmp_path / "c"))
    c2 = None
    try:
        await c1.w.wait_for("path", active="direct")
        await c1.w.wait_count("message", 20)
        c1.kill()
        await c1.stop()
        assert c1.proc.returncode == -9
        await patient.w.wait_for("path-down", path="direct")
        key = tmp_path / "c" / "identity.key"
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        c2 = await start_proc(c_url, "clinician-2", "--data-dir", str(tmp_path / "c"))
        restored = await c2.w.wait_for("peer", state="restored")
        assert restored["sas"] == c1.w.of("handshake")[0]["sas"]  # same session, no new handshake
        await c2.w.wait_for("path", active="direct")
        await c2.w.wait_count("message", 20)
        assert not c2.w.of("handshake")
    finally:
        await patient.stop()
        if c2 is not None:
            await c2.stop()
    cid = c1.w.of("joined")[0]["endpoint_id"]
    assert c2.w.of("joined")[0]["endpoint_id"] == cid
    received = c1.w.of("message") + c2.w.of("message")
    check_stream(patient.w.of("sent", peer=cid), received)
    assert not c2.w.of("waveform-gap")


async def _kill_streaming_patient(server, tmp_path) -> tuple[str, NodeProc, NodeProc]:  # type: ignore[no-untyped-def]
    """A patient and a clinician, each with a data dir, stream over the direct path; then the
    patient is SIGKILLed. Returns the patient's join URL, the dead patient and the clinician."""
    p_url = server.join_url(server.mint("s1", "patient"))
    c_url = server.join_url(server.mint("s1", "clinician"))
    p1 = await start_proc(p_url, "patient-1", "--data-dir", str(tmp_path / "p"))
    clinician = await start_proc(c_url, "clinician", "--data-dir", str(tmp_path / "c"))
    try:
        await clinician.w.wait_for("path", active="direct")
        await clinician.w.wait_count("message", 20)
    except BaseException:
        await p1.stop()
        await clinician.stop()
        raise
    p1.kill()
    await p1.stop()
    return p_url, p1, clinician


async def test_patient_killed_and_restarted(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p_url, p1, clinician = await _kill_streaming_patient(server, tmp_path)
    p2 = None
    try:
        await clinician.w.wait_for("path-down", path="direct")
        n = len(clinician.w.of("message"))
        p2 = await start_proc(p_url, "patient-2", "--data-dir", str(tmp_path / "p"))
        await p2.w.wait_for("peer", state="restored")
        await clinician.w.wait_for("path", active="direct", after=len(clinician.w.events) - 1)
        await clinician.w.wait_count("message", n + 20)
        assert not clinician.w.of("handshake")[1:]  # one handshake: the session resumed
    finally:
        await clinician.stop()
        if p2 is not None:
            await p2.stop()
    cid = clinician.w.of("joined")[0]["endpoint_id"]
    sent = p1.w.of("sent", peer=cid) + p2.w.of("sent", peer=cid)
    first_of_p2: dict[str, int] = {}
    for e in p2.w.of("sent", peer=cid):
        first_of_p2.setdefault(e["cls"], e["id"])
    check_stream(sent, clinician.w.of("message"), unlogged_below=first_of_p2)
    assert not clinician.w.of("waveform-gap")


async def test_graceful_stop_closes_session_and_restart_handshakes_anew(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p_url = server.join_url(server.mint("s1", "patient"))
    c_url = server.join_url(server.mint("s1", "clinician"))
    patient = await start_proc(p_url, "patient", "--data-dir", str(tmp_path / "p"))
    c1 = await start_proc(c_url, "clinician-1", "--data-dir", str(tmp_path / "c"))
    c2 = None
    try:
        await c1.w.wait_count("message", 5)
        assert await c1.stop() == 0  # SIGTERM: the session is closed on purpose (CLOSE frame)
        await patient.w.wait_for("session-closed")
        c2 = await start_proc(c_url, "clinician-2", "--data-dir", str(tmp_path / "c"))
        await c2.w.wait_for("handshake")  # a new session, not a resumed one
        assert not c2.w.of("peer", state="restored")
        await c2.w.wait_count("message", 5)
    finally:
        await patient.stop()
        if c2 is not None:
            await c2.stop()
    assert len(patient.w.of("handshake")) == 2  # one per session
    assert patient.w.of("session-closed")[0]["reason"] == "node stopped"
    cid = c1.w.of("joined")[0]["endpoint_id"]
    second = patient.w.events.index(patient.w.of("handshake")[1])
    sent_before = [e for e in patient.w.events[:second] if e["event"] == "sent"]
    sent_after = [e for e in patient.w.events[second:] if e["event"] == "sent"]
    check_stream([e for e in sent_before if e["peer"] == cid], c1.w.of("message"))
    check_stream([e for e in sent_after if e["peer"] == cid], c2.w.of("message"))


async def test_patient_that_lost_its_store_starts_a_new_session(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The patient comes back with its identity and endpoint id but without sessions.db (a
    disk replaced, a restore from an old backup). The clinician holds an established session
    that the patient no longer knows: it must accept the patient's new signed handshake
    instead of stalling on the old keys, and the new stream arrives complete.

    The handshake starts at presence, and until it completes the old session may still deliver
    the dead patient's last frames: the sessions are told apart by the clinician's
    session-reset event, not by when the new patient was started."""
    p_url, p1, clinician = await _kill_streaming_patient(server, tmp_path)
    p2 = None
    try:
        for name in os.listdir(tmp_path / "p"):
            if name.startswith("sessions.db"):
                os.remove(tmp_path / "p" / name)
        mark = len(clinician.w.events)
        p2 = await start_proc(p_url, "patient-2", "--data-dir", str(tmp_path / "p"))
        reset = await clinician.w.wait_for("session-reset", after=mark)
        await clinician.w.wait_for("handshake", after=mark)
        await p2.w.wait_for("handshake")
        split = clinician.w.events.index(reset)
        await clinician.w.wait_for("message", after=split)
        await clinician.w.wait_count("message", len(clinician.w.of("message")) + 20)
    finally:
        if p2 is not None:
            await p2.stop()
        await clinician.stop()
    assert p2.w.of("joined")[0]["endpoint_id"] == p1.w.of("joined")[0]["endpoint_id"]
    cid = clinician.w.of("joined")[0]["endpoint_id"]
    before, after = clinician.w.events[:split], clinician.w.events[split:]
    old_msgs = [e for e in before if e["event"] == "message"]
    new_msgs = [e for e in after if e["event"] == "message"]
    # each session on its own: in order, once, bit-exact, samples continuous (the SIGKILLed
    # patient may not have logged its last sends; the new one's stream is complete)
    check_stream(p1.w.of("sent", peer=cid), old_msgs, unlogged_below=1 << 62)
    check_stream(p2.w.of("sent", peer=cid), new_msgs)
    assert not [e for e in before if e["event"] == "waveform-gap"]
    # What the old patient had not delivered is gone with its store, and the new one's source
    # starts afresh: the clinician must report the hole (once per signal), not hide it.
    gaps = {e["signal"]: e for e in after if e["event"] == "waveform-gap"}
    assert len(gaps) == len([e for e in after if e["event"] == "waveform-gap"])
    assert sorted(gaps) == ["II", "PLETH"]
    for signal, gap in gaps.items():
        old = [e for e in old_msgs if e.get("kind") == "waveform" and e["signal"] == signal]
        new = [e for e in new_msgs if e.get("kind") == "waveform" and e["signal"] == signal]
        assert gap["expected"] == old[-1]["first_seq"] + old[-1]["n"]
        assert gap["got"] == new[0]["first_seq"] != gap["expected"]
