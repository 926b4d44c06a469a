"""Session core throughput against the bare crypto + CRC primitives, side by side.

For 32 B, 256 B and 1 KiB payloads: messages/s through the full core
(send -> datagrams_to_send -> receive -> next_event, with encryption, CRC,
decryption, acks and MessageAcked), and in the same run the bare cost of
AES-256-GCM encrypt + decrypt + zlib.crc32 of each payload on its own.

Bar: the core adds at most 10 us per message over the bare primitives.
Times are CPU time of this thread (time.thread_time), so other processes on a
shared machine do not inflate them; core and bare rounds alternate and the best
round of each counts.
Exit status 1 if the bar is missed. `--json` prints machine-readable results.

`--against REF` (e.g. `--against e604f99`): the same workload on the core of git revision
REF and on the working tree, side by side in one run. Each round runs one subprocess per
side (the order alternates) that measures core and bare for every size `--reps` times;
the best of all rounds and reps of each side counts. Prints the added cost per message
of both and their ratio; exit status 1 if the tree's added cost exceeds REF's by more than
10 % for any size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

# the tree whose p2pmed is measured: this checkout, or (--against) an exported revision
sys.path.insert(0, os.environ.get("CORE_BENCH_ROOT") or str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pmed.core.events import MessageAcked, MessageReceived
from p2pmed.core.frame import MessageClass
from p2pmed.core.identity import Identity
from p2pmed.core.session import Session, SessionConfig, SessionState

REPO = Path(__file__).resolve().parents[1]
BAR_US = 10.0
SIZES = (32, 256, 1024)
AGAINST_TOLERANCE = 0.10  # --against: the tree may add at most 10 % more than REF


def make_pair(now: float) -> tuple[Session, Session]:
    a = Session(SessionConfig("bench", True, Identity.generate()), now=now)
    b = Session(SessionConfig("bench", False, Identity.generate()), now=now)
    for s in (a, b):
        s.add_path("direct", now)
    a.connect(now)
    for _ in range(10):
        pump(a, b, now)
    assert a.state is SessionState.ESTABLISHED and b.state is SessionState.ESTABLISHED
    drain(a)
    drain(b)
    return a, b


def drain(s: Session) -> tuple[int, int]:
    received = acked = 0
    while (ev := s.next_event()) is not None:
        if type(ev) is MessageReceived:
            received += 1
        elif type(ev) is MessageAcked:
            acked += 1
    return received, acked


def pump(a: Session, b: Session, now: float) -> int:
    moved = 0
    for src, dst in ((a, b), (b, a)):
        for path_id, data in src.datagrams_to_send(now):
            dst.receive(data, path_id, now)
            moved += 1
    return moved


def run_core(size: int, total: int, burst: int) -> tuple[float, dict[str, int]]:
    now = 1_000_000.0
    a, b = make_pair(now)
    msg = os.urandom(size)
    received = acked = 0
    gc.collect()
    t0 = time.thread_time()
    sent = 0
    while acked < total:
        n = min(burst, total - sent)
        for _ in range(n):
            a.send(MessageClass.MEDIUM, msg, now)
        sent += n
        while True:
            moved = pump(a, b, now)
            r, _ = drain(b)
            _, k = drain(a)
            received += r
            acked += k
            if moved == 0:
                if a.idle:
                    break
                timers = [t for t in (a.get_timer(), b.get_timer()) if t is not None]
                now = max(now, min(timers))
                a.handle_timer(now)
                b.handle_timer(now)
        now += 0.001
    elapsed = time.thread_time() - t0
    assert received == total and acked == total, (received, acked)
    stats = {k: v for k, v in a.stats.items() if k in ("data_frames_sent", "retransmits")}
    stats["acks_sent_by_receiver"] = b.stats["acks_sent"]
    return elapsed, stats


def run_bare(size: int, total: int) -> float:
    key = AESGCM(os.urandom(32))
    iv = os.urandom(4)
    msg = os.urandom(size)
    header = os.urandom(44)
    crc = zlib.crc32
    gc.collect()
    t0 = time.thread_time()
    for pn in range(total):
        nonce = iv + pn.to_bytes(8, "big")
        ct = key.encrypt(nonce, msg, header)
        c = crc(ct, crc(header))
        key.decrypt(nonce, ct, header)
        crc(ct, crc(header)) == c  # noqa: B015 - the receiver's check
    return time.thread_time() - t0


def worker(messages: int, burst: int, reps: int) -> int:
    """One round of every size on the p2pmed found first on sys.path, best of `reps`
    alternating core and bare runs; JSON on stdout."""
    import p2pmed.core.session

    root = Path(p2pmed.core.session.__file__).resolve().parents[2]
    core = dict.fromkeys(SIZES, float("inf"))
    bare = dict.fromkeys(SIZES, float("inf"))
    for _ in range(reps):
        for size in SIZES:
            core[size] = min(core[size], run_core(size, messages, burst)[0])
            bare[size] = min(bare[size], run_bare(size, messages))
    print(json.dumps({"root": str(root), "core": core, "bare": bare}))
    return 0


def export_revision(ref: str, into: Path) -> None:
    """The p2pmed package of git revision `ref` under `into` (no checkout is touched)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "p2pmed"],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


Timings = dict[str, dict[int, float]]  # "core" / "bare" -> size -> best seconds


def run_worker(root: Path, messages: int, burst: int, reps: int) -> Timings:
    env = {**os.environ, "CORE_BENCH_ROOT": str(root)}
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            f"--messages={messages}",
            f"--burst={burst}",
            f"--reps={reps}",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    result = json.loads(proc.stdout)
    if Path(result["root"]).resolve() != root.resolve():
        raise RuntimeError(f"the worker measured {result['root']}, not {root}")
    return {kind: {int(k): float(v) for k, v in result[kind].items()} for kind in ("core", "bare")}


def against(ref: str, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="core-bench-") as tmp:
        ref_root = Path(tmp)
        export_revision(ref, ref_root)
        sides = {ref: ref_root, "tree": REPO}
        best: dict[str, Timings] = {side: {"core": {}, "bare": {}} for side in sides}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for side in order:
                result = run_worker(sides[side], args.messages, args.burst, args.reps)
                for kind in ("core", "bare"):
                    b = best[side][kind]
                    for size, t in result[kind].items():
                        b[size] = min(b.get(size, float("inf")), t)
    rows = []
    ok = True
    for size in SIZES:
        row: dict[str, object] = {"size": size}
        added = {}
        for side in sides:
            core_us = best[side]["core"][size] / args.messages * 1e6
            bare_us = best[side]["bare"][size] / args.messages * 1e6
            added[side] = core_us - bare_us
            name = "ref" if side == ref else "tree"
            row[f"{name}_core_us"] = round(core_us, 3)
            row[f"{name}_added_us"] = round(added[side], 3)
        ratio = added["tree"] / added[ref]
        passed = ratio <= 1 + AGAINST_TOLERANCE
        ok = ok and passed
        row["ratio_tree_to_ref"] = round(ratio, 3)
        row["pass"] = passed
        rows.append(row)
    if args.json:
        print(json.dumps({"ref": ref, "tolerance": AGAINST_TOLERANCE, "results": rows}, indent=2))
    else:
        print(
            f"added cost per message (core minus bare AES-GCM+CRC32), best of {args.rounds}"
            f" interleaved rounds of {args.messages} messages: working tree vs {ref}"
        )
        print(
            f"{'size':>6} {'ref us':>8} {'tree us':>8} {'ratio':>6}  "
            f"bar: tree <= {1 + AGAINST_TOLERANCE:.2f} x ref"
        )
        for row in rows:
            print(
                f"{row['size']:>6} {row['ref_added_us']:>8.3f} {row['tree_added_us']:>8.3f} "
                f"{row['ratio_tree_to_ref']:>6.3f}  {'PASS' if row['pass'] else 'FAIL'}"
            )
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000, help="messages per round")
    ap.add_argument("--burst", type=int, default=1000, help="messages sent between pumps")
    ap.add_argument("--rounds", type=int, default=7, help="core and bare alternate; best round")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--against", metavar="REF", help="compare with the core of git revision REF")
    ap.add_argument("--reps", type=int, default=3, help="--against: runs per side and round")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.messages, args.burst, args.reps)
    if args.against:
        return against(args.against, args)
    rows = []
    ok = True
    for size in SIZES:
        # alternate core and bare rounds so both see the same machine load; keep the best
        core = bare = float("inf")
        stats: dict[str, int] = {}
        for _ in range(args.rounds):
            elapsed, stats = run_core(size, args.messages, args.burst)
            core = min(core, elapsed)
            bare = min(bare, run_bare(size, args.messages))
        core_us = core / args.messages * 1e6
        bare_us = bare / args.messages * 1e6
        added = core_us - bare_us
        passed = added <= BAR_US
        ok = ok and passed
        rows.append(
            {
                "size": size,
                "core_us_per_msg": round(core_us, 3),
                "core_msgs_per_s": round(args.messages / core),
                "bare_us_per_msg": round(bare_us, 3),
                "added_us_per_msg": round(added, 3),
                "ratio_core_to_bare": round(core_us / bare_us, 3),
                "pass": passed,
                "sample_stats": stats,
            }
        )
    if args.json:
        print(json.dumps({"bar_added_us": BAR_US, "results": rows, "pass": ok}, indent=2))
    else:
        print(
            f"p2pmed session core vs bare AES-GCM+CRC32: best of {args.rounds} alternating"
            f" rounds of {args.messages} messages"
        )
        print(
            f"{'size':>6} {'core us':>9} {'core msg/s':>11} {'bare us':>9} {'added us':>9} "
            f"{'ratio':>6}  bar <= {BAR_US:.0f} us added"
        )
        for r in rows:
            print(
                f"{r['size']:>6} {r['core_us_per_msg']:>9.3f} {r['core_msgs_per_s']:>11,} "
                f"{r['bare_us_per_msg']:>9.3f} {r['added_us_per_msg']:>9.3f} "
                f"{r['ratio_core_to_bare']:>6.2f}  {'PASS' if r['pass'] else 'FAIL'}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
