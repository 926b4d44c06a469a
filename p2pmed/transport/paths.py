"""Path manager: which paths to a peer are up, how good they are, and which one carries traffic.

The session core measures (PING/PONG per path) and reports PathUp/PathDown/PathQuality; this
module grades those figures, tracks the active path and tells the node what changed, so the node
can log it, print a --json event and raise a technical alarm when every path is down.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

GRADES = ("normal", "mild", "moderate", "severe")


@dataclass(frozen=True)
class QualityThresholds:
    """Loss fractions and latencies (seconds) above which a path is mild/moderate/severe."""

    loss: tuple[float, float, float] = (0.01, 0.05, 0.10)
    latency: tuple[float, float, float] = (0.2, 0.5, 1.0)

    def __post_init__(self) -> None:
        for name, values in (("loss", self.loss), ("latency", self.latency)):
            if len(values) != 3 or list(values) != sorted(values) or values[0] < 0:
                raise ValueError(f"{name} thresholds must be 3 ascending non-negative numbers")


def classify(rtt: float, loss: float, th: QualityThresholds = QualityThresholds()) -> str:
    """Grade one path; latency here is the round-trip time the heartbeats measured."""
    grade = 0
    for i in range(3):
        if loss > th.loss[i] or rtt > th.latency[i]:
            grade = i + 1
    return GRADES[grade]


class Backoff:
    """Exponential backoff with jitter for re-negotiating a direct path."""

    def __init__(self, initial: float = 0.5, maximum: float = 8.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempts = 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return delay * (0.75 + 0.5 * random.random())

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class PathInfo:
    up: bool = False
    rtt: float = 0.0
    loss: float = 0.0
    grade: str = "normal"


@dataclass
class PathManager:
    """Tracks the paths of one peer. Methods return the events worth reporting (dicts)."""

    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    preference: tuple[str, ...] = ("direct", "relay")
    paths: dict[str, PathInfo] = field(default_factory=dict)
    active: str | None = None
    all_down_reported: bool = False
    # the server said the peer left: its paths going away is a leave, not a failure
    peer_left: bool = False

    def _choose(self) -> list[dict[str, object]]:
        best = next((p for p in self.preference if self.paths.get(p, PathInfo()).up), None)
        out: list[dict[str, object]] = []
        if best != self.active:
            out.append({"event": "path", "active": best, "previous": self.active})
            self.active = best
        if best is None and self.paths and not self.all_down_reported and not self.peer_left:
            self.all_down_reported = True
            out.append(
                {
                    "event": "technical-alarm",
                    "code": "all-paths-down",
                    "message": "no path to the peer is up",
                }
            )
        elif best is not None and self.all_down_reported:
            self.all_down_reported = False
            out.append({"event": "technical-alarm-cleared", "code": "all-paths-down"})
        return out

    def up(self, path: str) -> list[dict[str, object]]:
        self.peer_left = False
        info = self.paths.setdefault(path, PathInfo())
        out: list[dict[str, object]] = []
        if not info.up:
            info.up = True
            out.append({"event": "path-up", "path": path})
        return out + self._choose()

    def down(self, path: str, why: str = "") -> list[dict[str, object]]:
        info = self.paths.setdefault(path, PathInfo())
        out: list[dict[str, object]] = []
        if info.up:
            info.up = False
            out.append({"event": "path-down", "path": path, "reason": why})
        return out + self._choose()

    def left(self, path: str) -> list[dict[str, object]]:
        """The peer left (the server said so): forget `path`; from now until a path comes up
        again no all-paths-down alarm, since nothing failed."""
        self.peer_left = True
        return self.forget(path)

    def forget(self, path: str) -> list[dict[str, object]]:
        out = self.down(path, "removed")
        self.paths.pop(path, None)
        return out

    def quality(self, path: str, rtt: float, loss: float) -> list[dict[str, object]]:
        info = self.paths.setdefault(path, PathInfo())
        info.rtt, info.loss = rtt, loss
        grade = classify(rtt, loss, self.thresholds)
        if grade == info.grade:
            return []
        info.grade = grade
        return [
            {
                "event": "path-quality",
                "path": path,
                "grade": grade,
                "rtt_ms": round(rtt * 1000, 2),
                "loss": round(loss, 4),
            }
        ]
