"""What the node has said about the paths to one peer, so that each change is said once.

The session core owns the paths (p2pmed/core/paths.py `Path`: alive, RTT, loss, the path it
sends on) and reports their changes as PathUp/PathDown/PathQuality events; the transport
owns the channel objects. This keeps only the announcements: which paths were reported up,
the grade last reported per path, the active path reported, and whether the all-paths-down
alarm is raised. The link feeds it the core's events and its own path removals; it returns
the typed events to publish.
"""

from __future__ import annotations

from p2pmed.node import events as ne
from p2pmed.transport.paths import QualityThresholds, classify


class PathReport:
    def __init__(
        self,
        peer_id: str,
        thresholds: QualityThresholds | None = None,
        preference: tuple[str, ...] = ("direct", "relay"),
    ) -> None:
        self.peer_id = peer_id
        self.thresholds = thresholds or QualityThresholds()
        self.preference = preference
        self.reported_up: dict[str, bool] = {}  # the paths reported, in the order first seen
        self.grades: dict[str, str] = {}  # the grade last reported (none yet: "normal")
        self.active: str | None = None  # the path reported as carrying traffic
        self.all_down_reported = False
        # the server said the peer left: its paths going away is a leave, not a failure
        self.peer_left = False

    def known(self) -> list[str]:
        return list(self.reported_up)

    def grade(self, path: str) -> str:
        return self.grades.get(path, "normal")

    def _choose(self) -> list[ne.NodeEvent]:
        best = next((p for p in self.preference if self.reported_up.get(p)), None)
        out: list[ne.NodeEvent] = []
        if best != self.active:
            out.append(ne.PathActive(self.peer_id, best, self.active))
            self.active = best
        if best is None and self.reported_up and not self.all_down_reported and not self.peer_left:
            self.all_down_reported = True
            alarm = "no path to the peer is up"
            out.append(ne.TechnicalAlarm(self.peer_id, "all-paths-down", message=alarm))
        elif best is not None and self.all_down_reported:
            self.all_down_reported = False
            out.append(ne.TechnicalAlarmCleared(self.peer_id, "all-paths-down"))
        return out

    def up(self, path: str) -> list[ne.NodeEvent]:
        self.peer_left = False
        out: list[ne.NodeEvent] = []
        if not self.reported_up.get(path):
            self.reported_up[path] = True
            out.append(ne.PathUp(self.peer_id, path))
        return out + self._choose()

    def down(self, path: str, why: str = "") -> list[ne.NodeEvent]:
        out: list[ne.NodeEvent] = []
        if self.reported_up.get(path):
            out.append(ne.PathDown(self.peer_id, path, why))
        self.reported_up[path] = False
        return out + self._choose()

    def left(self, path: str) -> list[ne.NodeEvent]:
        """The peer left (the server said so): forget `path`; from now until a path comes up
        again no all-paths-down alarm, since nothing failed."""
        self.peer_left = True
        return self.forget(path)

    def forget(self, path: str) -> list[ne.NodeEvent]:
        out = self.down(path, "removed")
        self.reported_up.pop(path, None)
        self.grades.pop(path, None)
        return out

    def quality(self, path: str, rtt: float, loss: float) -> list[ne.NodeEvent]:
        self.reported_up.setdefault(path, False)
        grade = classify(rtt, loss, self.thresholds)
        if grade == self.grade(path):
            return []
        self.grades[path] = grade
        return [ne.PathQuality(self.peer_id, path, grade, round(rtt * 1000, 2), round(loss, 4))]
