"""Path policy without state: how good a path is (grading the RTT and loss the session core
measured) and how long to wait before negotiating a direct path again.

The paths themselves are the session core's (p2pmed/core/paths.py: alive, RTT, loss); the
transport holds only the channel objects (datachannel.py, relay.py); what the node reported
about the paths is p2pmed/node/pathreport.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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
