"""Fault matrix rows: pure functions from the nodes' event streams to one row per scenario.

See docs/reliability.md ("How a row is computed"). No processes, no namespaces: the unit tests
in tests/faults/test_metrics.py feed these functions hand-made event lists.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fault_scenarios as fs

ALARM_OPEN = ("ACTIVE", "ESCALATED", "LATCHED")
VITALS = ("waveform", "numerics")
SETTLE_S = 2.0  # a path switch this long after a restore still belongs to that cut
Event = dict[str, Any]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def content_key(e: Event) -> tuple[Any, ...] | None:
    """What a vitals message is, independent of its message id."""
    if e.get("kind") == "waveform":
        return ("waveform", e.get("signal"), e.get("first_seq"))
    if e.get("kind") == "numerics":
        return ("numerics", e.get("t_us"))
    return None


@dataclass
class Row:
    scenario: str
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    sample_gaps: int = 0
    alarms: int = 0
    alarms_acked: bool = True
    alarm_p50_ms: float | None = None
    alarm_p99_ms: float | None = None
    alarm_max_ms: float | None = None
    vitals_p99_ms: float | None = None
    max_gap_s: float | None = None
    failover_s: float | None = None
    recover_s: float | None = None
    failback_s: float | None = None
    paths: str = ""
    rejected: int = 0
    unverified: int = 0
    load: float | None = None  # 1-minute load average of the machine at the end
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and self.sent > 0
            and self.lost == 0
            and self.duplicated == 0
            and self.reordered == 0
            and self.corrupted == 0
            and self.sample_gaps == 0
        )

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["passed"] = self.passed
        return d


def compute_row(
    scenario: str,
    patient: list[Event],
    clinician: list[Event],
    *,
    cutoff: float,
    marks: Iterable[tuple[float, str, str]] = (),
    expected: dict[tuple[Any, ...], tuple[int, int]] | None = None,
) -> Row:
    """patient/clinician: every event of every incarnation, in order. cutoff: messages the
    patient sent after this time may still be in flight when the run stops (not counted
    as lost). expected: content key -> (len, crc) from the deterministic source."""
    row = Row(scenario)
    sent: dict[int, Event] = {}
    for e in patient:
        if e["event"] != "sent":
            continue
        prev = sent.get(e["id"])
        if prev is not None and (prev["crc"], prev["len"]) != (e["crc"], e["len"]):
            row.notes.append(f"message id {e['id']} reused for other bytes by the patient")
        sent.setdefault(e["id"], e)
    row.sent = len(sent)
    delivered = [e for e in clinician if e["event"] == "message"]
    seen_ids: set[int] = set()
    seen_content: set[tuple[Any, ...]] = set()
    last_id: dict[str, int] = {}
    next_sample: dict[str, int] = {}
    vitals_lat: list[float] = []
    alarm_lat: list[float] = []
    paths: dict[str, int] = {}
    for e in delivered:
        mid = e["id"]
        paths[e.get("path", "?")] = paths.get(e.get("path", "?"), 0) + 1
        if mid in seen_ids:
            row.duplicated += 1
            continue
        seen_ids.add(mid)
        key = content_key(e)
        if key is not None:
            if key in seen_content:
                row.duplicated += 1  # the same samples again under another message id
                continue
            seen_content.add(key)
        cls = e.get("cls", "?")
        if mid < last_id.get(cls, -1):
            row.reordered += 1
        last_id[cls] = max(mid, last_id.get(cls, -1))
        if e.get("kind") == "waveform":
            sig = e.get("signal")
            want = next_sample.get(sig)
            if want is not None and e["first_seq"] != want:
                if e["first_seq"] < want:
                    row.reordered += 1
                else:
                    row.sample_gaps += 1
            next_sample[sig] = max(want or 0, e["first_seq"] + e["n"])
        src = sent.get(mid)
        if expected is not None and key is not None:
            if expected.get(key) != (e["len"], e["crc"]):
                row.corrupted += 1
        elif src is not None:
            if (src["len"], src["crc"]) != (e["len"], e["crc"]):
                row.corrupted += 1
        else:
            row.unverified += 1
        if src is not None:
            lat = (e["ts"] - src["ts"]) * 1000
            if e.get("kind") in VITALS:
                vitals_lat.append(lat)
            elif e.get("kind") == "alarm":
                alarm_lat.append(lat)
    row.delivered = len(seen_ids)
    row.lost = sum(1 for mid, e in sent.items() if e["ts"] <= cutoff and mid not in seen_ids)
    row.alarm_p50_ms = _r(percentile(alarm_lat, 50))
    row.alarm_p99_ms = _r(percentile(alarm_lat, 99))
    row.alarm_max_ms = _r(max(alarm_lat)) if alarm_lat else None
    row.vitals_p99_ms = _r(percentile(vitals_lat, 99))
    raised = {
        e["alarm_id"]
        for e in patient
        if e["event"] == "alarm" and e["state"] == "ACTIVE" and e["ts"] <= cutoff
    }
    acked = {e["alarm_id"] for e in patient if e["event"] == "alarm-ack"}
    row.alarms = len(raised)
    row.alarms_acked = raised <= acked
    if not row.alarms_acked:
        row.notes.append(f"alarms never acknowledged: {sorted(raised - acked)}")
    times = sorted(e["ts"] for e in delivered)
    if len(times) > 1:
        row.max_gap_s = _r(max(b - a for a, b in itertools.pairwise(times)), 3)
    row.paths = " ".join(f"{p}:{n}" for p, n in sorted(paths.items()))
    worst: dict[tuple[str, ...], int] = {}
    for side, events in (("p", patient), ("c", clinician)):
        for e in events:
            if e["event"] == "rejected":  # counts are cumulative, reported at 1, 2, 4, 8, ...
                k = (side, str(e.get("kind")), str(e.get("reason")), str(e.get("path")))
                worst[k] = max(worst.get(k, 0), int(e.get("count", 1)))
    row.rejected = sum(worst.values())
    _timings(row, patient, delivered, sorted(marks))
    return row


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def _timings(
    row: Row, patient: list[Event], delivered: list[Event], marks: list[tuple[float, str, str]]
) -> None:
    """Per cut: fail over = cut -> the patient's active path switched to another live path;
    recover = restore -> next delivered message; fail back = restore -> direct active again
    (when the direct path was active at the cut)."""
    switches = [e for e in patient if e["event"] == "path"]
    failover: list[float] = []
    recover: list[float] = []
    failback: list[float] = []
    cuts = [m for m in marks if m[1] == "cut"]
    for t_cut, _, what in cuts:
        restores = [m[0] for m in marks if m[1] == "restore" and m[0] >= t_cut] or [t_cut]
        t_back = restores[0]
        before = [e for e in switches if e["ts"] <= t_cut]
        active = before[-1]["active"] if before else None
        after = [e for e in switches if e["ts"] > t_cut]
        moved = next(
            (e for e in after if e["ts"] <= t_back and e["active"] not in (None, active)), None
        )
        if moved is not None:
            failover.append(moved["ts"] - t_cut)
        nxt = next((e["ts"] for e in delivered if e["ts"] > t_back), None)
        if nxt is not None:
            recover.append(nxt - t_back)
        if active != "direct":
            continue
        # did the direct path stop being active because of this cut? (heartbeats take
        # path_dead_after, 1 s by default, to notice: allow SETTLE_S after the restore)
        left = next(
            (e for e in after if e["ts"] <= t_back + SETTLE_S and e["active"] != "direct"), None
        )
        if what in ("patient killed", "clinician killed"):  # its peer connection died with it
            left = {"ts": t_cut}
        if left is None:
            failback.append(0.0)
            continue
        back = next((e for e in after if e["ts"] > left["ts"] and e["active"] == "direct"), None)
        if back is None:
            row.notes.append(f"no fail back to direct after {what} at {t_cut:.1f}")
        else:
            failback.append(max(0.0, back["ts"] - t_back))
    row.failover_s = _r(max(failover), 2) if failover else None
    row.recover_s = _r(max(recover), 2) if recover else None
    row.failback_s = _r(max(failback), 2) if failback else None


def expected_from_source(
    patient_id: str, start: float, rate: float, horizon: float, keys: set[tuple[Any, ...]]
) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Regenerate the patient's deterministic synthetic stream until every key is covered.
    patient_id: the patient node's endpoint id (patient_id_of), which its NUMERICS carry."""
    from p2pmed.node.patient import summary
    from p2pmed.vitals import codec
    from p2pmed.vitals.sources import SyntheticSource

    want = set(keys)
    out: dict[tuple[Any, ...], tuple[int, int]] = {}
    horizon_src = 5.0
    for k in want:
        if k[0] == "waveform":
            horizon_src = max(horizon_src, k[2] / (500 if k[1] == "II" else 125) + 5.0)
        else:
            horizon_src = max(horizon_src, k[1] / 1e6 - start + 5.0)
    src = SyntheticSource(patient_id, start_time=start, episodes=fs.fault_episodes(rate, horizon))
    # a corrupted key may point far beyond the stream: never regenerate past what can exist
    horizon_src = min(horizon_src, (time.time() - start) * rate + 10.0)
    for due, msg in src:
        if not want or due - start > horizon_src:
            break
        key = content_key(summary(msg))
        if key is not None and key in want:
            data = codec.encode(msg)
            out[key] = (len(data), zlib.crc32(data))
            want.discard(key)
    return out


def patient_id_of(data_dir: Path) -> str:
    """The patient node's endpoint id, kept in its data dir: the id its NUMERICS carry."""
    return (data_dir / "endpoint_id").read_text().strip()


def source_start(data_dir: Path, session_id: str) -> float | None:
    db = data_dir / "sessions.db"
    if not db.exists():
        return None
    con = sqlite3.connect(str(db))
    row = None
    try:
        for table in ("meta", "node_meta"):  # the store's table; `node_meta` in older stores
            with contextlib.suppress(sqlite3.Error):
                row = con.execute(
                    f"SELECT value FROM {table} WHERE key=? AND name='source_start'",
                    (f"{session_id}/",),
                ).fetchone()
            if row is not None:
                break
    finally:
        con.close()
    return None if row is None else float(json.loads(row[0]))
