"""Waiting room, admit, forwarding, roles, schema errors, leave and reconnect takeover."""

from __future__ import annotations

import aiohttp

from tests.signaling.conftest import Harness, settle


async def test_waiting_room_and_admit(h: Harness) -> None:
    pat, joined = await h.join("s1", "patient", "pat")
    assert joined.pop("resume_token")  # tests/signaling/test_resume.py
    assert joined == {
        "type": "joined",
        "session": "s1",
        "role": "patient",
        "endpoint_id": "pat",
        "waiting": True,
        "peers": [],
    }
    doc, joined = await h.join("s1", "clinician", "doc")
    assert joined["waiting"] is False
    assert joined["peers"] == [{"endpoint_id": "pat", "role": "patient", "admitted": False}]
    assert await doc.recv() == {"type": "peer-waiting", "endpoint_id": "pat", "role": "patient"}
    await doc.send(type="admit", endpoint_id="pat")
    assert await pat.recv() == {"type": "admitted", "by": "doc"}
    assert await pat.recv() == {"type": "peer-joined", "endpoint_id": "doc", "role": "clinician"}
    assert await doc.recv() == {"type": "peer-joined", "endpoint_id": "pat", "role": "patient"}
    assert (await h.srv.hub.store.member("s1", "pat")).admitted


async def test_clinician_first_then_patient(h: Harness) -> None:
    doc, _ = await h.join("s1", "clinician", "doc")
    _pat, joined = await h.join("s1", "patient", "pat")
    assert joined["peers"] == [{"endpoint_id": "doc", "role": "clinician", "admitted": True}]
    assert await doc.recv() == {"type": "peer-waiting", "endpoint_id": "pat", "role": "patient"}


async def test_waiting_patient_cannot_signal_or_be_signalled(h: Harness) -> None:
    pat, _ = await h.join("s1", "patient", "pat")
    doc, _ = await h.join("s1", "clinician", "doc")
    await pat.send(type="offer", to="doc", sdp="v=0")
    err = await pat.recv()
    assert err["type"] == "error" and err["code"] == "not-admitted"
    await doc.send(type="offer", to="pat", sdp="v=0")
    err = await doc.recv_type("error")
    assert err["code"] == "not-admitted"


async def test_offer_answer_candidate_forwarded(h: Harness) -> None:
    pat, (doc,) = await h.consult()
    await pat.send(type="offer", to="doc0", sdp="v=0 offer")
    assert await doc.recv() == {"type": "offer", "to": "doc0", "sdp": "v=0 offer", "from": "pat"}
    await doc.send(type="answer", to="pat", sdp="v=0 answer")
    assert await pat.recv() == {"type": "answer", "to": "pat", "sdp": "v=0 answer", "from": "doc0"}
    cand = {
        "candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    await doc.send(type="candidate", to="pat", candidate=cand)
    assert await pat.recv() == {"type": "candidate", "to": "pat", "candidate": cand, "from": "doc0"}
    await doc.send(type="candidate", to="pat", candidate=None)
    assert (await pat.recv())["candidate"] is None


async def test_patient_gets_peer_joined_per_clinician(h: Harness) -> None:
    pat, _docs = await h.consult(clinicians=2)
    # a clinician arriving after admission is announced both ways
    late, joined = await h.join("s1", "clinician", "late")
    assert {p["endpoint_id"] for p in joined["peers"]} == {"pat", "doc0", "doc1"}
    assert await pat.recv() == {"type": "peer-joined", "endpoint_id": "late", "role": "clinician"}
    got = {(await late.recv_type("peer-joined"))["endpoint_id"] for _ in range(3)}
    assert got == {"pat", "doc0", "doc1"}


async def test_roles_enforced(h: Harness, srv: object) -> None:
    pat, _ = await h.join("s1", "patient", "pat")
    doc, _ = await h.join("s1", "clinician", "doc")
    obs, _ = await h.join("s1", "observer", "obs")
    await pat.send(type="admit", endpoint_id="pat")
    assert (await pat.recv())["code"] == "forbidden"
    await obs.send(type="offer", to="doc", sdp="v=0")
    assert (await obs.recv_type("error"))["code"] == "forbidden"
    await obs.send(type="admit", endpoint_id="pat")
    assert (await obs.recv_type("error"))["code"] == "forbidden"
    assert h.srv.metric("p2pmed_rejected_joins_total", reason="role-action") == 3
    assert not (await h.srv.hub.store.member("s1", "pat")).admitted
    audit = (h.srv.config.data_dir / "audit.jsonl").read_text()
    assert audit.count('"event":"forbidden"') == 3
    # the connection stays up after an error
    await obs.send(type="candidate", to="doc", candidate=None)
    assert (await doc.recv_type("candidate"))["from"] == "obs"


async def test_schema_errors_name_the_problem(h: Harness) -> None:
    doc, _ = await h.join("s1", "clinician", "doc")
    cases = [
        ("not json", "invalid JSON"),
        ("[1,2]", "message must be object"),
        ('{"type":"launch"}', "type"),
        ('{"type":"offer","to":"x"}', "must contain ['sdp']"),
        ('{"type":"offer","to":"bad id!","sdp":"v"}', "to"),
        ('{"type":"offer","to":"x","sdp":"v","extra":1}', "extra"),
        ('{"type":"admit","endpoint_id":7}', "endpoint_id"),
        ('{"type":"admit","endpoint_id":"pat\\n"}', "endpoint_id"),
        ('{"type":"audit","event":"alarm-ack","alarm_id":"a b"}', "alarm_id"),
    ]
    for raw, needle in cases:
        await doc.ws.send_str(raw)
        err = await doc.recv()
        assert err["type"] == "error" and err["code"] == "bad-message", raw
        assert needle in err["message"], (raw, err)
    assert h.srv.metric("p2pmed_signaling_errors_total", code="bad-message") == len(cases)
    await doc.send(type="join", token="x", endpoint_id="doc")
    assert (await doc.recv())["code"] == "already-joined"
    await doc.send(type="offer", to="nobody", sdp="v=0")
    assert (await doc.recv())["code"] == "unknown-peer"


async def test_bad_messages_before_join(h: Harness) -> None:
    c = await h.connect()
    await c.ws.send_str("{")
    assert (await c.recv())["code"] == "bad-message"
    await c.send(type="offer", to="x", sdp="v")
    assert (await c.recv())["code"] == "not-joined"
    await c.ws.send_bytes(b"\x01a" + b"x" * 60)
    assert (await c.recv())["code"] == "not-joined"


async def test_too_many_errors_closes(h: Harness, srv: object) -> None:
    doc, _ = await h.join("s1", "clinician", "doc")
    for _ in range(h.srv.config.limits.max_errors + 1):
        await doc.ws.send_str("{")
    code, seen = await doc.closed()
    assert code == 4400
    assert seen[-1]["code"] == "too-many-errors"
    assert h.srv.metric("p2pmed_limit_violations_total", limit="errors") == 1


async def test_leave(h: Harness) -> None:
    pat, (doc,) = await h.consult()
    await doc.send(type="leave")
    assert await pat.recv() == {"type": "peer-left", "endpoint_id": "doc0"}
    code, _ = await doc.closed()
    assert code == 1000
    await pat.send(type="leave")
    await settle(lambda: h.srv.hub.store.session_count() == 0)
    audit = (h.srv.config.data_dir / "audit.jsonl").read_text()
    assert '"event":"session-end"' in audit


async def test_reconnect_takes_over(h: Harness) -> None:
    pat, (doc,) = await h.consult()
    token = h.srv.mint("s1", "clinician")
    doc2, joined = await h.join("s1", "clinician", "doc0", token=token)
    assert joined["waiting"] is False
    assert [p["endpoint_id"] for p in joined["peers"]] == ["pat"]
    code, seen = await doc.closed()
    assert code == 4409 and seen[-1]["code"] == "replaced"
    assert await pat.recv() == {"type": "peer-reconnected", "endpoint_id": "doc0"}
    assert len(await h.srv.hub.store.members("s1")) == 2
    # signaling reaches the new connection, once
    await pat.send(type="offer", to="doc0", sdp="v=0 again")
    assert (await doc2.recv())["sdp"] == "v=0 again"
    # the patient keeps its admission across a reconnect after a dropped connection
    await pat.ws.close()
    await settle(lambda: h.srv.hub.endpoint("s1", "pat").ws is None)
    _pat2, joined = await h.join("s1", "patient", "pat")
    assert joined["waiting"] is False
    assert await doc2.recv() == {"type": "peer-reconnected", "endpoint_id": "pat"}


async def test_reconnect_with_other_role_refused(h: Harness) -> None:
    await h.join("s1", "clinician", "doc")
    c = await h.connect()
    await c.send(type="join", token=h.srv.mint("s1", "observer"), endpoint_id="doc")
    code, seen = await c.closed()
    assert code == 4403 and seen[-1]["code"] == "role-mismatch"


async def test_second_patient_refused(h: Harness) -> None:
    await h.join("s1", "patient", "pat")
    c = await h.connect()
    await c.send(type="join", token=h.srv.mint("s1", "patient"), endpoint_id="pat-b")
    code, seen = await c.closed()
    assert code == 4403 and seen[-1]["code"] == "patient-present"


async def test_token_bound_to_one_endpoint(h: Harness) -> None:
    token = h.srv.mint("s1", "clinician")
    await h.join("s1", "clinician", "doc", token=token)
    c = await h.connect()
    await c.send(type="join", token=token, endpoint_id="doc-copy")
    code, seen = await c.closed()
    assert code == 4401 and seen[-1]["code"] == "token-in-use"


async def test_dropped_endpoint_leaves_after_grace(
    tmp_path: object, http: aiohttp.ClientSession
) -> None:
    from pathlib import Path

    from signaling.testing import running_server

    async with running_server(Path(str(tmp_path)) / "d", reconnect_grace=0.2) as srv:
        h = Harness(srv, http)
        pat, (doc,) = await h.consult()
        await doc.ws.close()
        assert await pat.recv() == {"type": "peer-left", "endpoint_id": "doc0"}


async def test_alarm_ack_audited(h: Harness) -> None:
    doc, _ = await h.join("s1", "clinician", "doc")
    await doc.send(type="audit", event="alarm-ack", alarm_id="alarm-42")
    path = h.srv.config.data_dir / "audit.jsonl"
    await settle(lambda: '"alarm_id":"alarm-42"' in path.read_text())
    line = next(ln for ln in path.read_text().splitlines() if "alarm-42" in ln)
    assert '"event":"alarm-ack"' in line and '"endpoint_id":"doc"' in line


async def test_deeply_nested_json_is_a_bad_message(h: Harness) -> None:
    """JSON nested deeper than the decoder recurses (60,000 brackets fit in one message)
    is bad input like any other: a bad-message error, counted, the connection kept; not an
    internal error with a traceback in the server's log per message."""
    deep = ["[" * 60_000, '{"a":' * 10_000 + "1" + "}" * 10_000]
    c = await h.connect()
    for raw in deep:
        await c.ws.send_str(raw)
        err = await c.recv()
        assert err["code"] == "bad-message" and err["message"] == "invalid JSON", err
    doc, _ = await h.join("s1", "clinician", "doc")
    for raw in deep:
        await doc.ws.send_str(raw)
        err = await doc.recv()
        assert err["code"] == "bad-message" and err["message"] == "invalid JSON", err
    await doc.send(type="ping", id=1)
    assert (await doc.recv_type("pong"))["id"] == 1
    assert h.srv.metric("p2pmed_signaling_errors_total", code="bad-message") == 4
