"""The fault matrix's row computation on synthetic event logs (no namespaces, no nodes)."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import fault_metrics as metrics  # noqa: E402
import faults  # noqa: E402

Event = dict[str, Any]


def _sent(mid: int, ts: float, first_seq: int, crc: int | None = None) -> Event:
    return {"event": "sent", "ts": ts, "id": mid, "cls": "MEDIUM", "len": 100,
            "crc": crc if crc is not None else mid * 7, "kind": "waveform", "signal": "II",
            "first_seq": first_seq, "n": 50}  # fmt: skip


def _got(e: Event, ts: float, path: str = "direct", **over: Any) -> Event:
    out = dict(e, event="message", ts=ts, path=path)
    out.update(over)
    return out


def _stream(n: int) -> tuple[list[Event], list[Event]]:
    sent = [_sent(i * 8 + 2, 100.0 + i * 0.1, i * 50) for i in range(n)]
    got = [_got(e, e["ts"] + 0.01) for e in sent]
    return sent, got


def test_clean_stream_passes() -> None:
    sent, got = _stream(20)
    row = metrics.compute_row("t", sent, got, cutoff=1e12)
    assert (row.sent, row.delivered, row.lost, row.duplicated, row.reordered) == (20, 20, 0, 0, 0)
    assert row.corrupted == 0 and row.sample_gaps == 0 and row.passed
    assert row.vitals_p99_ms == 10.0
    assert row.paths == "direct:20"


def test_lost_message_counts_and_fails() -> None:
    sent, got = _stream(20)
    del got[5]
    row = metrics.compute_row("t", sent, got, cutoff=1e12)
    assert row.lost == 1 and row.sample_gaps == 1 and not row.passed


def test_messages_sent_after_cutoff_are_in_flight_not_lost() -> None:
    sent, got = _stream(20)
    row = metrics.compute_row("t", sent, got[:15], cutoff=sent[14]["ts"])
    assert row.lost == 0 and row.passed


def test_duplicate_by_id_and_by_content() -> None:
    sent, got = _stream(10)
    again = dict(got[3], ts=got[-1]["ts"] + 1)
    row = metrics.compute_row("t", sent, [*got, again], cutoff=1e12)
    assert row.duplicated == 1 and not row.passed
    # the same samples under a fresh message id (a sender that re-queued after a restart)
    resent = _sent(999, 200.0, 150)
    row = metrics.compute_row("t", [*sent, resent], [*got, _got(resent, 200.1)], cutoff=1e12)
    assert row.duplicated == 1 and not row.passed


def test_reordered() -> None:
    sent, got = _stream(10)
    got[4], got[5] = got[5], got[4]
    row = metrics.compute_row("t", sent, got, cutoff=1e12)
    assert row.reordered >= 1 and row.lost == 0 and not row.passed


def test_corrupted_against_sent_crc_and_against_source() -> None:
    sent, got = _stream(10)
    got[2] = dict(got[2], crc=got[2]["crc"] ^ 1)
    row = metrics.compute_row("t", sent, got, cutoff=1e12)
    assert row.corrupted == 1 and not row.passed
    sent, got = _stream(10)
    expected = {metrics.content_key(e): (e["len"], e["crc"]) for e in sent}
    expected[("waveform", "II", 100)] = (100, 12345)  # the source says otherwise
    row = metrics.compute_row("t", sent, got, cutoff=1e12, expected=expected)
    assert row.corrupted == 1


def test_alarm_latency_and_acknowledgement() -> None:
    sent, got = _stream(5)
    alarm = {"event": "sent", "ts": 101.0, "id": 1000 * 8, "cls": "CRITICAL", "len": 40,
             "crc": 5, "kind": "alarm", "alarm_id": 1, "state": "ACTIVE"}  # fmt: skip
    patient = [*sent, {"event": "alarm", "ts": 101.0, "alarm_id": 1, "state": "ACTIVE"}, alarm]
    clinician = [*got, _got(alarm, 101.02)]
    row = metrics.compute_row("t", patient, clinician, cutoff=1e12)
    assert row.alarms == 1 and not row.alarms_acked
    assert row.alarm_p50_ms == row.alarm_max_ms == 20.0
    patient.append({"event": "alarm-ack", "ts": 101.5, "alarm_id": 1})
    assert metrics.compute_row("t", patient, clinician, cutoff=1e12).alarms_acked


def test_failover_recovery_failback_and_gap() -> None:
    sent, got = _stream(30)  # 100.0 .. 102.9, one every 0.1 s
    got = [g for g in got if not 101.0 < g["ts"] < 101.8]
    for g in got:
        if g["ts"] > 101.8:
            g["path"] = "relay" if g["ts"] < 102.5 else "direct"
    patient = [
        *sent,
        {"event": "path", "ts": 99.0, "active": "direct"},
        {"event": "path", "ts": 101.3, "active": "relay"},
        {"event": "path", "ts": 102.45, "active": "direct"},
    ]
    marks = [(101.0, "cut", "udp"), (101.8, "restore", "udp")]
    row = metrics.compute_row("t", patient, got, cutoff=1e12, marks=marks)
    assert row.failover_s == 0.3
    assert row.recover_s is not None and 0 < row.recover_s < 0.2
    assert row.failback_s == 0.65
    assert row.max_gap_s is not None and 0.85 < row.max_gap_s < 0.95
    assert row.lost == 8 and row.sample_gaps == 1


def test_percentile() -> None:
    assert metrics.percentile([], 50) is None
    assert metrics.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert metrics.percentile(list(map(float, range(101))), 99) == 99.0


def test_expected_from_source_matches_codec() -> None:
    import fault_scenarios

    from p2pmed.node.patient import summary
    from p2pmed.vitals import codec
    from p2pmed.vitals.sources import SyntheticSource

    start = 1_700_000_000.25
    src = SyntheticSource("sess", start_time=start,
                          episodes=fault_scenarios.fault_episodes(2.0, 60.0))  # fmt: skip
    msgs = [m for _, m in zip(range(40), src, strict=False)]
    keys = {metrics.content_key(summary(m)) for _, m in msgs} - {None}
    out = metrics.expected_from_source("sess", start, 2.0, 60.0, keys)  # type: ignore[arg-type]
    assert set(out) == keys
    for _, m in msgs:
        data = codec.encode(m)
        assert out[metrics.content_key(summary(m))] == (len(data), zlib.crc32(data))  # type: ignore[index]
    # another start time gives other bytes: a stream replayed from the wrong place is caught
    other = metrics.expected_from_source("sess", start + 1, 2.0, 60.0, keys)  # type: ignore[arg-type]
    assert other != out


def test_parse_args_rejects_bad_input() -> None:
    import pytest

    for argv in (["--only", "nope"], ["--duration", "1"], ["--rate", "0"], ["--short", "--long"]):
        with pytest.raises(SystemExit):
            faults.parse_args(argv)
    assert faults.parse_args(["--only", "clean,rural"]).selected == ["clean", "rural"]


def test_recompute_reads_every_incarnation(tmp_path: Path) -> None:
    import json

    sent, got = _stream(10)
    (tmp_path / "patient-1.jsonl").write_text("".join(json.dumps(e) + "\n" for e in sent[:6]))
    (tmp_path / "patient-2.jsonl").write_text(
        "not json\n" + "".join(json.dumps(e) + "\n" for e in sent[6:])
    )
    (tmp_path / "clinician-1.jsonl").write_text("".join(json.dumps(e) + "\n" for e in got[:9]))
    run = {"key": "t", "title": "t", "session": "s", "rate": 1.0, "horizon": 60.0,
           "cutoff": 1e12, "marks": [], "notes": ["kept"], "error": None, "load": 1.0}  # fmt: skip
    (tmp_path / "run.json").write_text(json.dumps(run))
    row = faults.recompute(tmp_path)
    assert (row.sent, row.delivered, row.lost) == (10, 9, 1)
    assert "kept" in row.notes and not row.passed
    assert row.notes[-1].startswith("source start unknown")  # no store in tmp_path
