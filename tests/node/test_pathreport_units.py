"""Path state kept once: the session core says whether a path is alive and how it measures;
the node's PathReport keeps only what it reported (each change once, the grade, the active
path, the all-paths-down alarm), and prints exactly the --json events it always did."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from p2pmed.core import events as ev
from p2pmed.core.session import Session
from p2pmed.node import clock
from p2pmed.node import events as ne
from p2pmed.node.output import Events
from p2pmed.node.pathreport import PathReport
from p2pmed.node.peer import PeerLink
from tests.node.test_driver_units import make_ctx


def names(events: list[ne.NodeEvent]) -> list[str]:
    return [e.NAME for e in events]


def test_failover_and_the_all_paths_down_alarm() -> None:
    pr = PathReport("n1")
    out = pr.up("relay")
    assert ne.PathActive("n1", "relay", None) in out
    out = pr.up("direct")
    assert pr.active == "direct" and out[-1] == ne.PathActive("n1", "direct", "relay")
    out = pr.down("direct", "ice failed")
    assert pr.active == "relay"
    assert out[0] == ne.PathDown("n1", "direct", "ice failed")
    out = pr.down("relay")
    assert pr.active is None and "technical-alarm" in names(out)
    assert pr.down("relay") == []  # reported once
    assert "technical-alarm-cleared" in names(pr.up("direct"))
    (quality,) = pr.quality("direct", 0.3, 0.0)
    assert isinstance(quality, ne.PathQuality) and quality.grade == "mild"
    assert pr.quality("direct", 0.3, 0.0) == []  # only changes are reported
    assert pr.grade("direct") == "mild"
    pr.forget("direct")
    assert pr.grade("direct") == "normal" and pr.known() == ["relay"]


def test_peer_left_is_not_an_all_paths_down_alarm() -> None:
    pr = PathReport("n1")
    pr.up("relay")
    pr.up("direct")
    assert names(pr.left("relay")) == ["path-down"]  # the server said the peer left
    assert names(pr.down("direct", "heartbeats missed")) == ["path-down", "path"]
    pr.up("relay")  # back: a failure is an alarm again
    assert names(pr.down("relay"))[-1] == "technical-alarm"
    # our own link to the server went down while the peer is present: that is an alarm
    pr = PathReport("n1")
    pr.up("relay")
    alarms = [e for e in pr.forget("relay") if isinstance(e, ne.TechnicalAlarm)]
    assert [a.code for a in alarms] == ["all-paths-down"]


def line(event: ne.NodeEvent) -> str:
    out = io.StringIO()
    Events(json_out=True, stream=out).publish(event)
    record = json.loads(out.getvalue())
    record.pop("ts")
    return json.dumps(record, separators=(",", ":"))


def test_reports_print_as_the_path_manager_dicts_did() -> None:
    """Before, p2pmed.transport.paths returned these dicts and the link added the peer."""
    pr = PathReport("n1")
    got = pr.up("relay") + pr.quality("relay", 0.25, 0.0) + pr.forget("relay") + pr.up("relay")
    old = [
        {"event": "path-up", "path": "relay"},
        {"event": "path", "active": "relay", "previous": None},
        {"event": "path-quality", "path": "relay", "grade": "mild", "rtt_ms": 250.0, "loss": 0.0},
        {"event": "path-down", "path": "relay", "reason": "removed"},
        {"event": "path", "active": None, "previous": "relay"},
        {
            "event": "technical-alarm",
            "code": "all-paths-down",
            "message": "no path to the peer is up",
        },
        {"event": "path-up", "path": "relay"},
        {"event": "path", "active": "relay", "previous": None},
        {"event": "technical-alarm-cleared", "code": "all-paths-down"},
    ]
    want = []
    for item in old:
        fields = {k: v for k, v in item.items() if k != "event"}
        want.append(
            json.dumps({"event": item["event"], "peer": "n1", **fields}, separators=(",", ":"))
        )
    assert [line(e) for e in got] == want


class Hooks:
    def on_established(self, link: PeerLink) -> None:
        return None

    def on_message(self, link: PeerLink, event: ev.MessageReceived) -> None:
        return None

    def on_acked(self, link: PeerLink, event: ev.MessageAcked) -> None:
        return None

    def on_closed(self, link: PeerLink) -> None:
        return None

    def on_rejected(self, link: PeerLink, event: ev.FrameRejected) -> None:
        return None

    def accept_candidate(self, link: PeerLink, candidate: Session) -> bool:
        return True


async def test_the_link_reads_liveness_from_the_session_core(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    heard: list[dict[str, Any]] = []
    ctx.events.listeners.append(heard.append)
    link = PeerLink(ctx, Hooks(), "nclinician", "clinician", ctx.new_session("nclinician"))

    async def reported(name: str) -> None:
        async with asyncio.timeout(10):
            while not any(r["event"] == name for r in heard):
                await asyncio.sleep(0)

    link.session.add_path("relay", clock.now())
    link.kick()
    await reported("path-up")
    assert link.status()["relay"]["up"] is True and link.status()["active"] == "relay"

    # the core drops the path: the link's status says so at once, before the report
    link.session.remove_path("relay", clock.now())
    assert link.status()["relay"]["up"] is False
    assert link.paths.active == "relay"  # what was reported so far
    link.kick()
    await reported("path-down")
    assert link.status()["active"] is None
    assert ctx.store is not None
    await link.close()
    ctx.store.close()
