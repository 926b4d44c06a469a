"""Paths of a session and their heartbeat: PING/PONG per path, liveness, RTT and loss.

Owns the paths, the preferred path, the PINGs in flight and the PINGs to send. Returns
what changed (paths up or down, a PONG's RTT); the session turns that into events.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from p2pmed.core.errors import FrameError
from p2pmed.core.paths import Path, PathStatus, live_order

PING = struct.Struct(">Q")
# A timer that runs this much later than the heartbeat interval allows means this endpoint was
# not running (a loaded event loop, a suspended process): that time is not the path's silence.
STALL_SLACK = 0.1


@dataclass(frozen=True, slots=True)
class Pong:
    """A PONG that answered one of our PINGs."""

    path_id: str
    ping_id: int
    came_alive: bool  # the path had been declared dead
    rtt: float | None  # the path's smoothed RTT; None: the path was removed meanwhile
    loss: float


class Heartbeat:
    __slots__ = (
        "dead_after",
        "direct_seen",
        "interval",
        "last_tick",
        "next_due",
        "next_ping_id",
        "outgoing",
        "paths",
        "pings",
        "preferred",
    )

    def __init__(self, *, interval: float, dead_after: float) -> None:
        self.interval = interval
        self.dead_after = dead_after
        self.paths: dict[str, Path] = {}
        self.preferred: str | None = None
        self.direct_seen = False
        self.pings: dict[int, tuple[str, float]] = {}  # id -> (path, sent at)
        self.next_ping_id = 1
        self.outgoing: list[tuple[str, bytes]] = []  # (path, PING payload) not yet sent
        self.next_due: float | None = None
        self.last_tick: float | None = None  # when on_timer last ran; None: never

    def add(self, path_id: str, now: float, preferred: bool) -> bool:
        """Add or revive a path; True if it came up."""
        path = self.paths.get(path_id)
        up = False
        if path is None:
            self.paths[path_id] = Path(path_id, True, now)
            up = True
        else:
            path.last_pong = now
            if not path.alive:
                path.alive = True
                up = True
        if preferred or self.preferred is None:
            self.preferred = path_id
        return up

    def direct_again(self, path_id: str) -> bool:
        """True if `path_id` is a direct path and one was added before (a new DTLS
        association: the session ratchets its keys)."""
        if not path_id.startswith("direct"):
            return False
        again, self.direct_seen = self.direct_seen, True
        return again

    def remove(self, path_id: str) -> bool:
        """Forget a path; True if it was alive (it goes down)."""
        path = self.paths.pop(path_id, None)
        if path is None:
            return False
        if self.preferred == path_id:
            self.preferred = None
        return path.alive

    def status(self, path_id: str) -> PathStatus:
        p = self.paths.get(path_id)
        return PathStatus(path_id, False, None, 1.0) if p is None else p.status()

    def live(self) -> list[str]:
        return live_order(self.paths, self.preferred)

    def live_set(self) -> set[str]:
        return {pid for pid, p in self.paths.items() if p.alive}

    def is_alive(self, path_id: str) -> bool:
        p = self.paths.get(path_id)
        return p is not None and p.alive

    def revive_all(self, now: float) -> None:
        for p in self.paths.values():
            p.last_pong = now

    def add_deadlines(self, times: list[float]) -> None:
        if self.next_due is not None:
            times.append(self.next_due)
        dead = self.dead_after
        times.extend(p.last_pong + p.dead_after(dead) for p in self.paths.values() if p.alive)

    def credit_stall(self, now: float) -> bool:
        """The timer always runs within the heartbeat interval of its previous run (the next
        beat is due by then). A longer gap is time this endpoint did not run, while PONGs may
        wait unread in its socket buffers: a path is silent only for the time we were
        listening, so a path dies only once its dead timer has really expired. True if this
        call found such a stall."""
        last, self.last_tick = self.last_tick, now
        if last is None:
            return False
        stalled = now - last - self.interval
        if stalled <= STALL_SLACK:
            return False
        for p in self.paths.values():
            p.last_pong = min(now, p.last_pong + stalled)
        for pid, (path_id, sent_at) in list(self.pings.items()):
            self.pings[pid] = (path_id, min(now, sent_at + stalled))
        return True

    def beat_due(self, now: float) -> bool:
        return self.next_due is not None and now >= self.next_due

    def expire(self, now: float) -> list[str]:
        """Paths silent for too long: marked dead and returned."""
        dead = self.dead_after
        down: list[str] = []
        for p in self.paths.values():
            if p.alive and now >= p.last_pong + p.dead_after(dead):
                p.alive = False
                down.append(p.path_id)
        return down

    def beat(self, now: float) -> None:
        """Start a heartbeat round: PINGs unanswered for too long count as lost. The caller
        then pings every path (ping_all) if the session is open."""
        self.next_due = now + self.interval
        pings = self.pings
        for pid, (path_id, sent_at) in list(pings.items()):
            p = self.paths.get(path_id)
            if p is None:
                del pings[pid]
            elif now - sent_at >= p.dead_after(self.dead_after):
                del pings[pid]  # a PONG after this is late: counted as lost
                p.history.append(False)

    def ping_all(self, now: float) -> None:
        for path_id in self.paths:
            self.queue_ping(path_id, now)

    def queue_ping(self, path_id: str, now: float) -> int:
        """Queue a PING on `path_id` (sent by the next datagrams_to_send); returns its id."""
        pid = self.next_ping_id
        self.next_ping_id = pid + 1
        self.pings[pid] = (path_id, now)
        self.outgoing.append((path_id, PING.pack(pid)))
        return pid

    def take_outgoing(self) -> list[tuple[str, bytes]]:
        out, self.outgoing = self.outgoing, []
        return out

    def on_pong(self, payload: bytes, path_id: str, now: float) -> Pong | None:
        """A PONG; None if late (already counted as lost), unknown or for a removed path."""
        if len(payload) != 8:
            raise FrameError("payload", "PONG payload is 8 bytes")
        (ping_id,) = PING.unpack(payload)
        info = self.pings.get(ping_id)
        if info is None or info[0] != path_id:
            return None
        del self.pings[ping_id]
        p = self.paths.get(path_id)
        if p is None:
            return Pong(path_id, ping_id, False, None, 0.0)
        p.on_pong(now - info[1], now)
        came_alive = not p.alive
        p.alive = True
        return Pong(path_id, ping_id, came_alive, p.srtt or 0.0, p.loss())
