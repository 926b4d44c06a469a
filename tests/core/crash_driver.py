"""Crash driver: two Sessions with SQLite stores over a lossy simulated network.

Run as `python -m tests.core.crash_driver DIR SEED N_A N_B`. Session "a" sends
N_A numbered messages to "b", and "b" sends N_B to "a". Every incarnation
resumes from DIR/a.db and DIR/b.db (or does the handshake if a store is empty),
follows the adapter contract (persist, then transmit), logs every frame it hands
to the network in DIR/wire.log, and prints progress. The test kills it with
SIGKILL at random moments and restarts it; the last run prints DONE.
"""

from __future__ import annotations

import os
import random
import sys
import time
import zlib

from p2pmed.core import frame
from p2pmed.core.frame import MessageClass
from p2pmed.core.session import Session, SessionConfig, SessionState
from p2pmed.store.sqlite import SessionStore
from tests.core.simnet import PathCfg, SimNet, make_identity

CLASSES = list(MessageClass)


def payload(sender: str, i: int) -> tuple[MessageClass, bytes]:
    cls = CLASSES[i % 5]
    size = 40_000 if i % 97 == 0 else 20 + (i * 37) % 300
    tag = f"{sender}-{i};".encode()
    return cls, (tag * (size // len(tag) + 1))[:size]


def count_sent(s: Session) -> int:
    snap = s.snapshot()
    return sum(n - 1 for n in snap.send_next_index)


class LoggingNet(SimNet):
    def __init__(self, seed: int, now: float, log_fd: int) -> None:
        super().__init__(seed, now)
        self.log_fd = log_fd

    def _transmit(self, src: str, path_id: str, data: bytes) -> None:
        h, _ = frame.decode(data)
        line = f"{src} {h.epoch} {h.pn} {zlib.crc32(data)}\n".encode()
        os.write(self.log_fd, line)  # one write per frame; survives SIGKILL
        super()._transmit(src, path_id, data)


def main() -> int:
    workdir, seed, n_a, n_b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    fd = os.open(os.path.join(workdir, "wire.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    stores = {
        "a": SessionStore(os.path.join(workdir, "a.db"), key="a"),
        "b": SessionStore(os.path.join(workdir, "b.db"), key="b"),
    }
    snaps = {name: st.load() for name, st in stores.items()}
    fresh = any(s is None for s in snaps.values())
    net = LoggingNet(seed, time.time(), fd)
    paths = {
        "direct": PathCfg(latency=0.002, jitter=0.002, loss=0.05, dup=0.03, corrupt=0.01),
        "relay": PathCfg(latency=0.006, jitter=0.004, loss=0.05, dup=0.03),
    }
    for name, ident, initiator in (("a", 1, True), ("b", 2, False)):
        cfg = SessionConfig("crash-1", initiator, make_identity(ident), persist=True, pn_block=256)
        session = Session(cfg, now=net.now, restored=None if fresh else snaps[name])
        net.add_endpoint(name, session, stores[name])
    for pid, pc in paths.items():
        net.paths[pid] = pc
        for ep in net.ends.values():
            ep.session.add_path(pid, net.now)
    if fresh:
        net.call("a", lambda s: s.connect(net.now))
        net.run(
            lambda: all(ep.session.state is SessionState.ESTABLISHED for ep in net.ends.values())
        )
        net.run_for(0.05)
    targets = {"a": n_a, "b": n_b}
    sent = {name: count_sent(ep.session) for name, ep in net.ends.items()}
    print(f"START fresh={fresh} sent_a={sent['a']} sent_b={sent['b']}", flush=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for name in net.ends:
            for _ in range(rng.randrange(0, 6)):
                if sent[name] < targets[name]:
                    cls, data = payload(name, sent[name])
                    net.call(name, lambda s, c=cls, d=data: s.send(c, d, net.now))
                    sent[name] += 1
        net.run_for(rng.uniform(0.0005, 0.004))
        print(f"PROGRESS {sent['a']} {sent['b']}", flush=True)
        if sent == targets and all(ep.session.idle for ep in net.ends.values()):
            print("DONE", flush=True)
            return 0
    print("TIMEOUT", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
