"""Transport paths of a session ("direct", "relay", ...): liveness, RTT and loss from heartbeats."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PathStatus:
    path_id: str
    alive: bool
    rtt: float | None  # smoothed heartbeat round trip in seconds, None before the first PONG
    loss: float  # fraction of the last 20 heartbeats without a PONG


@dataclass(slots=True, eq=False)
class Path:
    path_id: str
    alive: bool
    last_pong: float  # liveness clock: dead once dead_after() has passed since it
    srtt: float | None = None
    history: deque[bool] = field(default_factory=lambda: deque(maxlen=20))

    def loss(self) -> float:
        h = self.history
        return h.count(False) / len(h) if h else 0.0

    def on_pong(self, rtt: float, now: float) -> None:
        self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
        self.history.append(True)
        self.last_pong = now

    def dead_after(self, base: float) -> float:
        """Silence that kills this path: `base`, or 3 smoothed RTTs on a slow path, at most
        3 * base. A backlog queued on a narrow uplink stretches every PONG; that is congestion,
        not a dead path. The cap bounds how long a path that slows down until it stops (its
        RTT growing with the queue) can hold traffic before it is given up."""
        srtt = self.srtt
        return base if srtt is None or 3 * srtt <= base else min(3 * srtt, 3 * base)

    def status(self) -> PathStatus:
        return PathStatus(self.path_id, self.alive, self.srtt, self.loss())


def live_order(paths: dict[str, Path], preferred: str | None) -> list[str]:
    """Ids of live paths, the preferred one first, then in the order they were added."""
    live = [pid for pid, p in paths.items() if p.alive]
    if preferred is not None and len(live) > 1 and live[0] != preferred and preferred in live:
        live.remove(preferred)
        live.insert(0, preferred)
    return live
