"""Paths of a Session and their heartbeat: PING/PONG per path, liveness, time-based rekeying."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from p2pmed.core.config import OPEN_STATES, SessionState
from p2pmed.core.errors import FrameError
from p2pmed.core.events import PathDown, PathQuality, PathUp
from p2pmed.core.frame import FrameType
from p2pmed.core.paths import Path, PathStatus, live_order
from p2pmed.core.persist import KeysChanged

if TYPE_CHECKING:
    from p2pmed.core.session import Session

PING = struct.Struct(">Q")
# A timer that runs this much later than the heartbeat interval allows means this endpoint was
# not running (a loaded event loop, a suspended process): that time is not the path's silence.
STALL_SLACK = 0.1


class Heartbeat:
    __slots__ = (
        "_s",
        "direct_seen",
        "last_tick",
        "next_due",
        "next_ping_id",
        "paths",
        "pings",
        "preferred",
        "rekey_epoch",
    )

    def __init__(self, session: Session) -> None:
        self._s = session
        self.paths: dict[str, Path] = {}
        self.preferred: str | None = None
        self.direct_seen = False
        self.pings: dict[int, tuple[str, float, int]] = {}  # id -> (path, sent at, send epoch)
        self.next_ping_id = 1
        self.next_due: float | None = None
        self.rekey_epoch = 0
        self.last_tick: float | None = None  # when on_timer last ran; None: never

    def add(self, path_id: str, now: float, preferred: bool) -> None:
        s = self._s
        path = self.paths.get(path_id)
        if path is None:
            path = Path(path_id, True, now)
            self.paths[path_id] = path
            s._events.append(PathUp(path_id))
        else:
            path.last_pong = now
            if not path.alive:
                path.alive = True
                s._events.append(PathUp(path_id))
        if preferred or self.preferred is None:
            self.preferred = path_id
        if path_id.startswith("direct"):
            if self.direct_seen and s.state in OPEN_STATES:
                self.ratchet(now)
            self.direct_seen = True
        if s._handshake.out is not None:
            s._handshake.send_now = True
        if s._confirmed and s.state in OPEN_STATES:
            self.queue_ping(path_id, now)

    def remove(self, path_id: str) -> None:
        path = self.paths.pop(path_id, None)
        if path is None:
            return
        if self.preferred == path_id:
            self.preferred = None
        if path.alive:
            self._s._events.append(PathDown(path_id))
        self._s._recovery.reroute()

    def status(self, path_id: str) -> PathStatus:
        p = self.paths.get(path_id)
        return PathStatus(path_id, False, None, 1.0) if p is None else p.status()

    def live(self) -> list[str]:
        return live_order(self.paths, self.preferred)

    def is_alive(self, path_id: str) -> bool:
        p = self.paths.get(path_id)
        return p is not None and p.alive

    def revive_all(self, now: float) -> None:
        for p in self.paths.values():
            p.last_pong = now

    def add_deadlines(self, times: list[float]) -> None:
        if self.next_due is not None:
            times.append(self.next_due)
        dead = self._s.config.path_dead_after
        times.extend(p.last_pong + p.dead_after(dead) for p in self.paths.values() if p.alive)

    def on_timer(self, now: float) -> None:
        self._credit_stall(now)
        if self.next_due is not None and now >= self.next_due:
            self.beat(now)
        dead = self._s.config.path_dead_after
        for p in list(self.paths.values()):
            if p.alive and now >= p.last_pong + p.dead_after(dead):
                p.alive = False
                self._s._events.append(PathDown(p.path_id))
                self._s._recovery.reroute()

    def _credit_stall(self, now: float) -> None:
        """The timer always runs within heartbeat_interval of its previous run (the next beat
        is due by then). A longer gap is time this endpoint did not run, while PONGs may wait
        unread in its socket buffers: a path is silent only for the time we were listening,
        so a path dies only once its dead timer has really expired."""
        last, self.last_tick = self.last_tick, now
        if last is None:
            return
        stalled = now - last - self._s.config.heartbeat_interval
        if stalled <= STALL_SLACK:
            return
        self._s.stats["stalls"] = self._s.stats.get("stalls", 0) + 1
        for p in self.paths.values():
            p.last_pong = min(now, p.last_pong + stalled)
        for pid, (path_id, sent_at, epoch) in list(self.pings.items()):
            self.pings[pid] = (path_id, min(now, sent_at + stalled), epoch)

    def queue_ping(self, path_id: str, now: float) -> None:
        s = self._s
        pid = self.next_ping_id
        self.next_ping_id = pid + 1
        assert s._send is not None
        self.pings[pid] = (path_id, now, s._send.epoch)
        s._ctrl.append((path_id, FrameType.PING, PING.pack(pid)))

    def beat(self, now: float) -> None:
        s = self._s
        cfg = s.config
        self.next_due = now + cfg.heartbeat_interval
        pings = self.pings
        for pid, (path_id, sent_at, _) in list(pings.items()):
            p = self.paths.get(path_id)
            if p is None:
                del pings[pid]
            elif now - sent_at >= p.dead_after(cfg.path_dead_after):
                del pings[pid]  # a PONG after this is late: counted as lost
                p.history.append(False)
        assert s._send is not None
        if s.state in OPEN_STATES and s._send.needs_ratchet(
            now, max_frames=cfg.rekey_frames, max_age=cfg.rekey_interval
        ):
            self.ratchet(now)
        if s.state in OPEN_STATES:
            for path_id in self.paths:
                self.queue_ping(path_id, now)
        elif s.state is SessionState.CLOSING:  # CLOSE is unreliable: repeat until answered
            s._queue_close(*s._close_info)

    def ratchet(self, now: float) -> None:
        s = self._s
        assert s._send is not None
        s._send.ratchet(now)
        s.stats["ratchets"] += 1
        self.rekey_epoch = s._send.epoch
        s.state = SessionState.REKEYING
        if s._persist:
            s._changes.append(KeysChanged(s._send.export_state(), None))
        for path_id in self.paths:
            self.queue_ping(path_id, now)

    def on_pong(self, payload: bytes, path_id: str, now: float) -> None:
        if len(payload) != 8:
            raise FrameError("payload", "PONG payload is 8 bytes")
        (ping_id,) = PING.unpack(payload)
        info = self.pings.get(ping_id)
        if info is None or info[0] != path_id:
            return  # late (already counted as lost) or unknown
        del self.pings[ping_id]
        s = self._s
        s.stats["pongs_received"] += 1
        _, sent_at, epoch = info
        p = self.paths.get(path_id)
        if p is not None:
            p.on_pong(now - sent_at, now)
            if not p.alive:
                p.alive = True
                s._events.append(PathUp(path_id))
            s._events.append(PathQuality(path_id, p.srtt or 0.0, p.loss()))
        if s.state is SessionState.REKEYING and epoch >= self.rekey_epoch:
            s.state = SessionState.ESTABLISHED
