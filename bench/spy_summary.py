"""Where a process spent its CPU, from py-spy raw stacks (`py-spy record --format raw`).

    .venv/bin/python bench/node_bench.py --bulk-only --bulk-repeats 2 --py-spy /tmp/spy
    .venv/bin/python bench/spy_summary.py /tmp/spy/*.txt

For each file: samples by the layer that was running (the innermost frame's package, "self"
time) and by the layers on the stack ("inclusive" time), then the top functions by self time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# (layer, pattern on a frame's file); the first match wins
LAYERS = (
    ("aiortc sctp", r"aiortc/rtcsctptransport"),
    ("aiortc dtls", r"aiortc/rtcdtlstransport"),
    ("aiortc datachannel", r"aiortc/rtcdatachannel"),
    ("aiortc other", r"aiortc/"),
    ("aioice", r"aioice/"),
    ("openssl", r"OpenSSL/|cryptography/"),
    ("pyee", r"pyee/"),
    ("p2pmed core", r"p2pmed/core/"),
    ("p2pmed transport", r"p2pmed/transport/"),
    ("p2pmed node", r"p2pmed/"),
    ("signaling/aiohttp", r"aiohttp/|signaling/|websocket"),
    ("bench", r"bench/"),
    ("asyncio", r"asyncio/|uvloop"),
)
# a thread pool's idle worker blocked on its queue: py-spy counts it as running
IDLE = re.compile(r"^_worker \(concurrent/futures/thread\.py")
FRAME = re.compile(r"(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def layer(frame: str) -> str:
    m = FRAME.match(frame)
    where = m.group("file") if m else frame
    for name, pattern in LAYERS:
        if re.search(pattern, where):
            return name
    return "other"


def load(path: Path) -> list[tuple[list[str], int]]:
    """(frames outermost first, samples) per line of a raw file."""
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def summary(path: Path, top: int) -> str:
    everything = load(path)
    stacks = [(frames, n) for frames, n in everything if not IDLE.match(frames[-1])]
    total = sum(n for _, n in stacks)
    idle = sum(n for _, n in everything) - total
    if not total:
        return f"{path.name}: no samples"
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    funcs: Counter[str] = Counter()
    for frames, n in stacks:
        own[layer(frames[-1])] += n
        for name in {layer(f) for f in frames}:
            incl[name] += n
        funcs[frames[-1]] += n
    lines = [f"{path.name}: {total} samples ({idle} of idle pool threads left out)"]
    lines.append(f"  {'layer':22} {'self':>7} {'inclusive':>10}")
    for name, n in own.most_common():
        lines.append(f"  {name:22} {n / total:7.1%} {incl[name] / total:10.1%}")
    for name in sorted(set(incl) - set(own)):
        lines.append(f"  {name:22} {'':7} {incl[name] / total:10.1%}")
    lines.append("  top functions (self):")
    for func, n in funcs.most_common(top):
        lines.append(f"    {n / total:6.1%}  {func}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    for path in a.files:
        print(summary(path, a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
