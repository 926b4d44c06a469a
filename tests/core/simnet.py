"""A deterministic simulated network for two sans-IO Sessions (seeded RNG, virtual time).

Paths have latency, jitter (reordering), loss, duplication and corruption (bit
flips); a path can be cut. Each endpoint may have a store: after every call into
its session the simnet applies `take_changes()` to it (the adapter contract), so
a "crash" is: drop the Session object and build a new one from the store.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from p2pmed.core.events import Event
from p2pmed.core.identity import Identity
from p2pmed.core.persist import Change
from p2pmed.core.session import Session, SessionConfig

# Where virtual time starts when a test does not say. tests/core/conftest.py runs every test
# that uses the simnet with START = 0.0 (a freshly booted machine: time.monotonic() is
# small there, so "0.0 means long ago" bugs show) and with START = 1e9 (a machine up for
# decades, and float precision far from zero).
START = 1000.0


class Store(Protocol):
    def apply(self, changes: list[Change]) -> None: ...


@dataclass
class PathCfg:
    latency: float = 0.01
    jitter: float = 0.0
    loss: float = 0.0
    dup: float = 0.0
    corrupt: float = 0.0
    up: bool = True


@dataclass
class Endpoint:
    name: str
    session: Session
    store: Store | None = None
    events: list[Event] = field(default_factory=list)
    alive: bool = True


class SimNet:
    def __init__(self, seed: int, now: float | None = None) -> None:
        self.rng = random.Random(seed)
        self.now = START if now is None else now
        self.paths: dict[str, PathCfg] = {}
        self.ends: dict[str, Endpoint] = {}
        self._queue: list[tuple[float, int, str, str, bytes]] = []
        self._counter = 0
        self.wire_log: list[tuple[float, str, str, bytes]] = []  # (time, src, path, frame)
        self.log_wire = False
        self.on_sent: Callable[[str, Session], None] | None = None

    def add_endpoint(self, name: str, session: Session, store: Store | None = None) -> Endpoint:
        ep = Endpoint(name, session, store)
        self.ends[name] = ep
        return ep

    def peer(self, name: str) -> str:
        return next(n for n in self.ends if n != name)

    def call(self, name: str, fn: Callable[[Session], object]) -> object:
        """Run fn(session) as an adapter would: then persist, then send, then take events."""
        ep = self.ends[name]
        result = fn(ep.session)
        self.flush(name)
        return result

    def flush(self, name: str) -> None:
        ep = self.ends[name]
        if not ep.alive:
            return
        s = ep.session
        out = s.datagrams_to_send(self.now)
        if ep.store is not None:
            ep.store.apply(s.take_changes())
        if self.on_sent is not None:
            self.on_sent(name, s)
        for path_id, data in out:
            self._transmit(name, path_id, data)
        while (ev := s.next_event()) is not None:
            ep.events.append(ev)

    def _transmit(self, src: str, path_id: str, data: bytes) -> None:
        if self.log_wire:
            self.wire_log.append((self.now, src, path_id, data))
        cfg = self.paths.get(path_id)
        if cfg is None or not cfg.up:
            return
        rng = self.rng
        copies = 2 if rng.random() < cfg.dup else 1
        for _ in range(copies):
            if rng.random() < cfg.loss:
                continue
            frame = data
            if rng.random() < cfg.corrupt:
                b = bytearray(frame)
                bit = rng.randrange(len(b) * 8)
                b[bit // 8] ^= 1 << (bit % 8)
                frame = bytes(b)
            at = self.now + cfg.latency + rng.random() * cfg.jitter
            self._counter += 1
            heapq.heappush(self._queue, (at, self._counter, self.peer(src), path_id, frame))

    def _next_time(self) -> float | None:
        times = [self._queue[0][0]] if self._queue else []
        for ep in self.ends.values():
            if ep.alive:
                t = ep.session.get_timer()
                if t is not None:
                    times.append(t)
        return min(times) if times else None

    def step(self) -> bool:
        t = self._next_time()
        if t is None:
            return False
        self.now = max(self.now, t)
        while self._queue and self._queue[0][0] <= self.now:
            _, _, dst, path_id, data = heapq.heappop(self._queue)
            ep = self.ends[dst]
            if ep.alive:
                ep.session.receive(data, path_id, self.now)
                self.flush(dst)
        for name, ep in self.ends.items():
            if not ep.alive:
                continue
            timer = ep.session.get_timer()
            if timer is not None and timer <= self.now:
                ep.session.handle_timer(self.now)
                self.flush(name)
                after = ep.session.get_timer()
                # a timer that stays due after handle_timer would spin forever
                assert after is None or after > self.now, f"{name}: timer stuck at {after}"
            self.flush(name)
        return True

    def run(
        self, until: Callable[[], bool], *, max_time: float = 120.0, max_steps: int = 10**6
    ) -> None:
        deadline = self.now + max_time
        for _ in range(max_steps):
            if until():
                return
            if not self.step() or self.now > deadline:
                break
        if not until():
            raise AssertionError(f"simulation did not reach its goal by t={self.now:.3f}")

    def run_for(self, duration: float, max_steps: int = 10**6) -> None:
        end = self.now + duration
        for _ in range(max_steps):
            t = self._next_time()
            if t is None or t > end:
                break
            self.step()
        self.now = max(self.now, end)


def make_identity(n: int) -> Identity:
    return Identity.from_private_bytes(bytes([n]) * 32)


def make_pair(
    seed: int,
    *,
    paths: dict[str, PathCfg] | None = None,
    stores: tuple[Store | None, Store | None] = (None, None),
    **cfg: object,
) -> tuple[SimNet, Session, Session]:
    """Two sessions 'a' (initiator) and 'b' joined by `paths`, handshake started."""
    net = SimNet(seed)
    rng = random.Random(seed ^ 0x5EED)
    a = Session(
        SessionConfig(
            "sess-1",
            True,
            make_identity(1),
            random=rng.randbytes,
            **cfg,  # type: ignore[arg-type]
        ),
        now=net.now,
    )
    b = Session(
        SessionConfig(
            "sess-1",
            False,
            make_identity(2),
            random=rng.randbytes,
            **cfg,  # type: ignore[arg-type]
        ),
        now=net.now,
    )
    net.add_endpoint("a", a, stores[0])
    net.add_endpoint("b", b, stores[1])
    for pid, pc in (paths or {"direct": PathCfg()}).items():
        net.paths[pid] = pc
        a.add_path(pid, net.now)
        b.add_path(pid, net.now)
    net.call("a", lambda s: s.connect(net.now))
    return net, a, b
