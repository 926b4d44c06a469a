"""An in-path TCP proxy that flips bits inside relayed WebSocket binary frames.

It passes the HTTP upgrade through untouched, then parses WebSocket framing
(RFC 6455) in both directions and flips one random bit in the payload of a
given fraction of binary frames. Framing itself is never damaged, so the
connection stays up and only the relayed p2pmed frames are corrupted. With
--skip-envelope the flip lands in the p2pmed frame only, never in the relay
envelope's endpoint id (section 5 of docs/protocol.md), so it tests the frame
checks rather than the server's routing. Plain HTTP requests (no Upgrade, e.g.
GET /turn-credentials) are passed through byte for byte.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
from dataclasses import dataclass


@dataclass
class Counters:
    frames: int = 0
    flipped: int = 0


async def _pass_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    writer.write(head)
    await writer.drain()
    return head


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


def flip_bit(
    payload: bytearray, mask: bytes | None, skip_envelope: bool, rng: random.Random
) -> bool:
    """Flip one bit of the (possibly masked) payload; returns False when nothing was eligible.
    Flipping a masked byte flips the same bit of the unmasked byte."""
    start = 0
    if skip_envelope:
        if not payload:
            return False
        n = payload[0] ^ (mask[0] if mask else 0)
        start = 1 + n
    if len(payload) <= start:
        return False
    bit = rng.randrange((len(payload) - start) * 8)
    payload[start + bit // 8] ^= 1 << (bit % 8)
    return True


async def _pump_ws(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    rate: float,
    rng: random.Random,
    counters: Counters,
    skip_envelope: bool,
) -> None:
    while True:
        b0, b1 = await reader.readexactly(2)
        header = bytearray((b0, b1))
        n = b1 & 0x7F
        if n == 126:
            ext = await reader.readexactly(2)
            header += ext
            n = int.from_bytes(ext, "big")
        elif n == 127:
            ext = await reader.readexactly(8)
            header += ext
            n = int.from_bytes(ext, "big")
        mask = None
        if b1 & 0x80:
            mask = await reader.readexactly(4)
            header += mask
        payload = bytearray(await reader.readexactly(n))
        opcode = b0 & 0x0F
        if opcode == 0x2:
            counters.frames += 1
            if rng.random() < rate and flip_bit(payload, mask, skip_envelope, rng):
                counters.flipped += 1
        writer.write(bytes(header) + bytes(payload))
        await writer.drain()


async def serve(
    listen: tuple[str, int],
    upstream: tuple[str, int],
    rate: float,
    seed: int = 1,
    skip_envelope: bool = False,
) -> tuple[asyncio.Server, Counters]:
    counters = Counters()
    rng = random.Random(seed)

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*upstream)
        except OSError:
            cw.close()
            return
        try:
            head = await _pass_headers(cr, uw)
            if b"upgrade: websocket" not in head.lower():
                await asyncio.gather(_pipe(cr, uw), _pipe(ur, cw))
                return
            await _pass_headers(ur, cw)
            await asyncio.gather(
                _pump_ws(cr, uw, rate, rng, counters, skip_envelope),
                _pump_ws(ur, cw, rate, rng, counters, skip_envelope),
            )
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            cw.close()
            uw.close()

    server = await asyncio.start_server(handle, *listen)
    return server, counters


async def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rate", type=float, default=0.05, help="fraction of binary frames to damage")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-envelope", action="store_true", help="never flip the relay envelope")
    args = ap.parse_args()
    if not 0.0 <= args.rate <= 1.0:
        ap.error("--rate must be 0..1")
    lh, lp = args.listen.rsplit(":", 1)
    uh, up = args.upstream.rsplit(":", 1)
    server, counters = await serve(
        (lh, int(lp)), (uh, int(up)), args.rate, args.seed, args.skip_envelope
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening {lh}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
            print(f'{{"event":"flipstats","frames":{counters.frames},'
                  f'"flipped":{counters.flipped}}}', flush=True)  # fmt: skip
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(_main())
