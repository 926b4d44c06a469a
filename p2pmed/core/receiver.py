"""Receive side of DATA: reordering and reassembly per class, and the ACK this side owes.

Owns the AckState. Given the class's RecvStream per call; returns the messages to hand
over, as MessageReceived events for the session to queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pmed.core.errors import StateError
from p2pmed.core.events import MessageReceived
from p2pmed.core.frame import Header, MessageClass
from p2pmed.core.reliability import AckEntry, AckState, RecvStream, encode_ack

_CLASSES = list(MessageClass)
# ...or ACK once this many DATA bytes came in (two 16 KiB chunks), so that during a bulk
# transfer the sender's window keeps moving instead of waiting for ack_every frames.
ACK_BYTES = 32 * 1024

Ready = list[tuple[int, int, bytes, int]]  # (seq, flags, payload, ts_us) in seq order


@dataclass(slots=True)
class Delivery:
    """Messages completed by in-order frames. `malformed`: a frame's payload did not parse
    (the peer built it wrong); the messages before it are still in `events`."""

    events: list[MessageReceived]
    malformed: bool


class Receiver:
    __slots__ = ("ack", "ack_delay", "ack_every")

    def __init__(self, *, ack_every: int, ack_delay: float) -> None:
        self.ack = AckState()
        self.ack_every = ack_every
        self.ack_delay = ack_delay

    def on_data(
        self, rx: RecvStream, header: Header, payload: bytes, path_id: str, now: float
    ) -> Ready | None:
        """A DATA frame of rx's class. Returns the frames now in order (maybe none), or
        None for a duplicate. Raises StateError("seq_range") for a seq too far ahead."""
        ack = self.ack
        pn = header.pn
        if pn > ack.largest_pn:
            ack.largest_pn = pn
            ack.largest_at = now
        ack.path = path_id
        seq = header.seq
        status = rx.accepts(seq)
        if status == 0:
            ack.immediate = True
            return None
        if status < 0:
            raise StateError("seq_range", f"seq {seq} too far ahead")
        ready: Ready
        if seq == rx.next_seq and not rx.buffer:
            rx.next_seq = seq + 1
            ready = [(seq, int(header.flags), payload, header.timestamp_us)]
        else:
            rx.push(seq, int(header.flags), payload, header.timestamp_us)
            ready = rx.pop_ready()
            ack.immediate = True  # a gap (or its repair): tell the sender now
        ack.unacked_frames += 1
        ack.unacked_bytes += len(payload)
        if rx.cls == 0:
            ack.immediate = True
            ack.critical = True
        elif ack.unacked_frames >= self.ack_every or ack.unacked_bytes >= ACK_BYTES:
            ack.immediate = True
        elif ack.deadline is None:
            ack.deadline = now + self.ack_delay
        return ready

    @staticmethod
    def deliver(rx: RecvStream, frames: Ready, path_id: str) -> Delivery:
        c = rx.cls
        cls = _CLASSES[c]
        events: list[MessageReceived] = []
        for seq, flags, payload, ts in frames:
            msgs = rx.messages(seq, flags, payload)
            if msgs is None:
                return Delivery(events, True)
            for m in msgs:
                n = rx.delivered + 1
                rx.delivered = n
                events.append(MessageReceived((n << 3) | c, cls, m, seq, ts, path_id))
        return Delivery(events, False)

    # -- the ACK owed --------------------------------------------------------------------

    @property
    def ack_due(self) -> bool:
        return self.ack.immediate

    @property
    def deadline(self) -> float | None:
        return self.ack.deadline

    def on_timer(self, now: float) -> None:
        ack = self.ack
        if ack.deadline is not None and now >= ack.deadline:
            ack.immediate = True
            ack.deadline = None

    def want_ack(self) -> None:
        """Ack at once if anything was ever received (e.g. after a path died)."""
        if self.ack.largest_pn >= 0:
            self.ack.immediate = True

    def build_ack(self, entries: list[AckEntry], now: float) -> bytes:
        ack = self.ack
        delay = int((now - ack.largest_at) * 1e6) if ack.largest_at is not None else 0
        return encode_ack(max(ack.largest_pn, 0), max(delay, 0), entries)

    def ack_targets(self, live: list[str], alive: bool) -> list[str]:
        """Where the ACK goes: every live path for CRITICAL data, else the path the latest
        DATA came in on (`alive`: that path is alive), else the preferred one."""
        ack = self.ack
        if ack.critical:
            return live
        if alive:
            return [ack.path]  # it just worked in one direction at least
        return live[:1]

    def ack_sent(self) -> None:
        ack = self.ack
        ack.immediate = False
        ack.critical = False
        ack.deadline = None
        ack.unacked_frames = 0
        ack.unacked_bytes = 0
