"""Fuzz Session.receive and frame.decode with random and mutated frames.

Inputs: mutations of valid encrypted frames captured from a live session pair
(bit flips, truncation, extension, header field changes with a fixed-up CRC,
exact replays, splices), validly encrypted frames with hostile plaintext (bad
ACKs, batches, chunks, PINGs, CLOSEs, PATH_BINDs, far-ahead seqs), mutated
handshake frames, and plain random bytes.

A crash is any exception escaping Session.receive, any exception other than
FrameError from frame.decode, or a frame the session had to count as
"internal" (its last-resort guard; the first five such tracebacks, which the
session logs, are printed). Exit status 1 on any crash, 2 if the time bound ran
out before --count inputs.
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pmed.core import frame
from p2pmed.core.errors import FrameError
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.identity import Identity
from p2pmed.core.reliability import encode_ack
from p2pmed.core.session import Session, SessionConfig, SessionState

HEADER_FIELDS = [(1, 1), (2, 1), (3, 1), (4, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 4)]


def fix_crc(body: bytes | bytearray) -> bytes:
    body = bytes(body)
    return body + frame.crc32(body).to_bytes(4, "big")


class Harness:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = 1_000_000.0
        self.ident = (Identity.generate(), Identity.generate())
        self.handshake_frames: list[bytes] = []
        self.corpus: list[bytes] = []
        self.totals: collections.Counter[str] = collections.Counter()
        self.b: Session | None = None  # type: ignore[assignment]
        self.reset()

    def pump(self) -> list[bytes]:
        seen: list[bytes] = []
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            for path_id, data in src.datagrams_to_send(self.now):
                if src is self.a:
                    seen.append(data)
                dst.receive(data, path_id, self.now)
        return seen

    def reset(self) -> None:
        """A fresh established pair; refill the corpus of valid frames from a to b."""
        if self.b is not None:
            self.totals.update({k: v for k, v in self.b.stats.items() if k.startswith("rej")})
        self.a = Session(SessionConfig("fuzz", True, self.ident[0]), now=self.now)
        self.b = Session(SessionConfig("fuzz", False, self.ident[1]), now=self.now)
        for s in (self.a, self.b):
            s.add_path("direct", self.now)
            s.add_path("relay", self.now)
        self.a.connect(self.now)
        hs: list[bytes] = []
        for _ in range(8):
            hs.extend(self.pump())
        assert self.b.state is SessionState.ESTABLISHED
        self.handshake_frames = [f for f in hs if f[4:8] == bytes(4)][:8] or self.handshake_frames
        rng = self.rng
        corpus: list[bytes] = []
        for cls in MessageClass:
            for size in (0, 5, 40, 300, 20_000):
                self.a.send(cls, rng.randbytes(size), self.now)
            for _ in range(30):
                self.a.send(cls, rng.randbytes(rng.randrange(1, 64)), self.now)
        for _ in range(6):
            corpus.extend(self.pump())
            self.now += 0.3
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
        self.corpus = corpus
        while self.a.next_event() or self.b.next_event():
            pass

    def sealed(self, ftype: FrameType, payload: bytes, **kw: int) -> bytes:
        """A validly encrypted frame from a with arbitrary header fields and plaintext."""
        send = self.a._prot.send
        assert send is not None
        pn = self.a._take_pn()
        rng = self.rng
        header = Header(
            ftype,
            Flags(kw.get("flags", rng.choice([0, 1, 2, 3, 4, 5, 7]))),
            MessageClass(kw.get("cls", rng.randrange(5))),
            0,
            pn,
            kw.get("seq", rng.choice([0, 1, 2, 5, 100, 5000, 2**63])),
            kw.get("ack", rng.choice([0, 1, 3, 10**6, 2**64 - 1])),
            rng.randrange(2**64),
            0,
        )
        return send.seal(header, payload[: frame.MAX_CHUNK])

    def hostile_plaintext(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(8)
        if kind == 0:
            entries = [
                (
                    rng.randrange(5),
                    rng.choice([0, 1, 50, 2**64 - 1]),
                    [(s, s + rng.randrange(1, 5)) for s in sorted(rng.sample(range(60), 3))],
                )
            ]
            ack = encode_ack(rng.randrange(2**64), rng.randrange(2**32), entries)
            if rng.random() < 0.5:
                ack = mutate_bytes(rng, ack)
            return self.sealed(FrameType.ACK, ack)
        if kind == 1:
            n = rng.randrange(0, 6)
            body = b"".join(
                rng.randrange(0, 40).to_bytes(4, "big") + rng.randbytes(rng.randrange(0, 40))
                for _ in range(n)
            )
            return self.sealed(FrameType.DATA, body, flags=int(Flags.BATCH))
        if kind == 2:
            return self.sealed(FrameType.DATA, rng.randbytes(rng.randrange(0, 3000)))
        if kind == 3:
            return self.sealed(
                rng.choice([FrameType.PING, FrameType.PONG]),
                rng.randbytes(rng.choice([0, 7, 8, 9])),
            )
        if kind == 4:
            return self.sealed(FrameType.CLOSE, rng.randbytes(rng.randrange(0, 10)))
        if kind == 5:
            return self.sealed(FrameType.PATH_BIND, rng.randbytes(rng.choice([0, 1, 65, 71, 200])))
        if kind == 6:
            seq = self.b._streams.rx[2].next_seq + rng.choice([0, 1, 4095, 4096, 10**9])
            return self.sealed(FrameType.DATA, rng.randbytes(50), cls=2, seq=seq, flags=3)
        return self.sealed(FrameType.DATA, rng.randbytes(100), flags=rng.choice([1, 0, 2]))


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 9)):
        if b:
            i = rng.randrange(len(b) * 8)
            b[i // 8] ^= 1 << (i % 8)
    return bytes(b)


def mutate(rng: random.Random, h: Harness) -> bytes:
    base = rng.choice(h.corpus) if h.corpus else b""
    op = rng.randrange(10)
    if op == 0:
        return mutate_bytes(rng, base)  # bit flips (CRC catches them)
    if op == 1:
        return base[: rng.randrange(len(base) + 1)]  # truncation
    if op == 2:
        return base + rng.randbytes(rng.randrange(1, 64))  # extension
    if op == 3:  # header field change with a valid CRC
        off, size = rng.choice(HEADER_FIELDS)
        b = bytearray(base[:-4])
        if len(b) >= off + size:
            b[off : off + size] = rng.randbytes(size)
        return fix_crc(b)
    if op == 4:  # payload change with a valid CRC: the AEAD must refuse it
        b = bytearray(base[:-4])
        if len(b) > 44:
            b[rng.randrange(44, len(b))] ^= 1 << rng.randrange(8)
        return fix_crc(b)
    if op == 5:
        return base  # exact replay
    if op == 6:
        return h.hostile_plaintext()
    if op == 7 and h.handshake_frames:
        hs = rng.choice(h.handshake_frames)
        return fix_crc(mutate_bytes(rng, hs[:-4])) if rng.random() < 0.7 else hs
    if op == 8:  # splice
        other = rng.choice(h.corpus) if h.corpus else b""
        return fix_crc(
            (base[: rng.randrange(len(base) + 1)] + other[rng.randrange(len(other) + 1) :])[:-4]
        )
    sizes = [0, 1, 47, 48, 64, 100, frame.MAX_FRAME, frame.MAX_FRAME + 1, rng.randrange(2000)]
    return rng.randbytes(rng.choice(sizes))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=900.0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    core_log = logging.getLogger("p2pmed.core")
    first_bugs = logging.StreamHandler(sys.stderr)
    logged = collections.Counter[str]()

    def first_five(_record: logging.LogRecord) -> bool:
        logged["bugs"] += 1
        return logged["bugs"] <= 5

    first_bugs.addFilter(first_five)
    core_log.addHandler(first_bugs)
    core_log.propagate = False
    rng = random.Random(args.seed)
    h = Harness(rng)
    crashes = 0
    internal = 0
    t0 = time.monotonic()
    progress_every = max(1, args.count // 20)
    done = 0
    for done in range(1, args.count + 1):
        data = mutate(rng, h)
        path = "direct" if rng.random() < 0.8 else rng.choice(["relay", "unknown"])
        try:
            frame.decode(data)
        except FrameError:
            pass
        except Exception:
            crashes += 1
            if crashes <= 5:
                traceback.print_exc()
        before = h.b.stats.get("rejected_frame_internal", 0)
        try:
            h.b.receive(data, path, h.now)
        except Exception:
            crashes += 1
            if crashes <= 5:
                traceback.print_exc()
        if h.b.stats.get("rejected_frame_internal", 0) != before:
            internal += 1
        if done % 64 == 0:
            h.now += 0.01
            try:
                h.b.handle_timer(h.now)
                h.b.datagrams_to_send(h.now)
                while h.b.next_event() is not None:
                    pass
            except Exception:
                crashes += 1
                if crashes <= 5:
                    traceback.print_exc()
        if done % 50_000 == 0 or h.b.state is SessionState.CLOSED:
            h.reset()
        if not args.quiet and done % progress_every == 0:
            rate = done / (time.monotonic() - t0)
            print(
                f"{done:>9,} inputs  {rate:,.0f}/s  crashes={crashes} internal={internal}",
                file=sys.stderr,
                flush=True,
            )
        if time.monotonic() - t0 > args.max_seconds:
            break
    elapsed = time.monotonic() - t0
    h.reset()
    if not args.quiet:
        for key, n in sorted(h.totals.items()):
            print(f"  {key:<32} {n:>9,}")
    print(
        f"fuzz: {done:,} inputs in {elapsed:.1f} s, crashes={crashes}, "
        f"internal_errors={internal}, seed={args.seed}"
    )
    if crashes or internal:
        return 1
    if done < args.count:
        print("time bound reached before --count inputs", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
