"""The station table: highest alarm first, values and alarm shown per bed."""

from __future__ import annotations

from p2pmed.node.station import BedRow
from p2pmed.station_ui import bed_line, render


class View:
    ward = "A"
    endpoint_id = "st"

    def __init__(self, rows: list[BedRow]) -> None:
        self.rows = rows

    def sorted(self) -> list[BedRow]:
        return sorted(self.rows, key=lambda r: (-r.rank(), r.bed))


def alarm(aid: int, prio: str, cond: str) -> dict[str, object]:
    return {"id": aid, "priority": prio, "condition": cond, "state": "ACTIVE", "acked": False}


def test_highest_alarm_first() -> None:
    quiet = BedRow("a1", "live", {"hr": 72.0, "spo2": 98.0, "sys": 120.0, "dia": 80.0})
    med = BedRow("a2", "live", alarms={3: alarm(3, "MEDIUM", "spo2-low")})
    high = BedRow(
        "a3", "link-lost", alarms={1: alarm(1, "LOW", "x"), 2: alarm(2, "HIGH", "hr-high")}
    )
    lines = render(View([quiet, med, high]))
    beds = [ln.split()[0] for ln in lines[2:5]]
    assert beds == ["a3", "a2", "a1"]
    assert "HIGH hr-high #2" in lines[2] and "link-lost" in lines[2]
    assert "120/80" in bed_line(quiet) and " 72 " in bed_line(quiet)
    assert "--" in bed_line(med)  # no numerics yet


def test_technical_alarms_count() -> None:
    row = BedRow("b", "link-lost", alarms={4: alarm(4, "MEDIUM", "spo2-low")})
    row.technical["all-paths-down"] = {
        "id": "all-paths-down",
        "priority": "MEDIUM",
        "condition": "TECHNICAL all-paths-down",
        "acked": False,
    }
    assert row.top_alarm()["id"] == 4  # type: ignore[index]
    row.technical["all-paths-down"]["priority"] = "HIGH"
    assert "TECHNICAL all-paths-down" in bed_line(row)
    assert row.rank() == 3
