"""Alarm round trip: the patient raises an alarm, sends it CRITICAL, and counts it
acknowledged only when the clinician's ALARM_ACK arrives; the ack goes to the server audit."""

from __future__ import annotations

import asyncio
import json

from tests.node.conftest import start_inproc, start_proc


async def test_alarm_ack_round_trip_and_audit(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(
        server.join_url(server.mint("s1", "patient")), "patient", scenario="alarm"
    )
    clinician = await start_proc(
        server.join_url(server.mint("s1", "clinician")), "clinician", commands=True
    )
    try:
        alarm = await clinician.w.wait_for("alarm")
        assert alarm["condition"].startswith("hr-")
        raised = patient.w.of("alarm", alarm_id=alarm["alarm_id"])
        assert raised and raised[0]["state"] == "ACTIVE"
        sent = [e for e in patient.w.of("sent", kind="alarm") if e["alarm_id"] == alarm["alarm_id"]]
        assert sent[0]["cls"] == "CRITICAL"
        assert not patient.w.of("alarm-ack")  # nobody acknowledged yet
        clinician.command({"cmd": "ack", "alarm_id": alarm["alarm_id"]})
        ack = await patient.w.wait_for("alarm-ack", alarm_id=alarm["alarm_id"])
        cid = (await clinician.w.wait_for("joined"))["endpoint_id"]
        assert ack["by"] == cid and ack["first"] is True
        assert ack["latency_ms"] is not None
        # the audit record reaches the server (no PHI: ids only)
        audit = tmp_path / "server" / "audit.jsonl"
        for _ in range(100):
            lines = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
            acks = [x for x in lines if x.get("event") == "alarm-ack"]
            if acks:
                break
            await asyncio.sleep(0.05)
        assert acks and acks[0]["alarm_id"] == str(alarm["alarm_id"])
        assert acks[0]["endpoint_id"] == patient.node.endpoint_id
        # an ack for an alarm that does not exist is refused and counted, not applied
        clinician.command({"cmd": "ack", "alarm_id": 999999})
        rej = await patient.w.wait_for("rejected", kind="app")
        assert rej["reason"] == "unknown-alarm"
    finally:
        await clinician.stop()
        await patient.stop()


async def test_a_clinician_joining_later_sees_who_acknowledged(server) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(
        server.join_url(server.mint("s2", "patient")), "patient", scenario="alarm"
    )
    first = await start_proc(
        server.join_url(server.mint("s2", "clinician")), "clinician", commands=True
    )
    late = None
    try:
        alarm = await first.w.wait_for("alarm")
        first.command({"cmd": "ack", "alarm_id": alarm["alarm_id"]})
        await patient.w.wait_for("alarm-ack", alarm_id=alarm["alarm_id"])
        first_id = (await first.w.wait_for("joined"))["endpoint_id"]
        late = await start_proc(server.join_url(server.mint("s2", "clinician")), "clinician")
        # the open alarm reaches the late clinician together with who handled it
        await late.w.wait_for("alarm", alarm_id=alarm["alarm_id"])
        elsewhere = await late.w.wait_for("alarm-acked-elsewhere", alarm_id=alarm["alarm_id"])
        assert elsewhere["by"] == first_id
    finally:
        if late is not None:
            await late.stop()
        await first.stop()
        await patient.stop()
