"""Priority scheduler: per-class FIFO queues, chunking of large and batching of small messages.

The Session asks for the next DATA payload of a class; lower class values always
go first. Large messages are cut into chunks of at most the sender's chunk size, so a
more urgent message waits behind at most one chunk of anything else. Small
messages of one class are coalesced into one BATCH payload.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from p2pmed.core.frame import DEFAULT_CHUNK, MAX_CHUNK, NUM_CLASSES, Flags

_FIRST = int(Flags.FIRST)
_LAST = int(Flags.LAST)
_FIRST_LAST = _FIRST | _LAST
_BATCH = int(Flags.BATCH)
MIN_CHUNK = 1024  # do not cut a chunk smaller than this to squeeze into the window


@dataclass(slots=True, eq=False)
class OutMessage:
    msg_id: int
    cls: int
    data: bytes
    ts_us: int
    offset: int = 0  # bytes already put into frames


@dataclass(slots=True, frozen=True)
class FramePlan:
    cls: int
    flags: int
    payload: bytes
    ts_us: int
    done: tuple[int, ...]  # messages wholly framed by this plan (their last byte is in it)
    progress: tuple[int, int] | None  # (msg_id, new offset) of a message still being chunked


class Scheduler:
    __slots__ = ("_queues", "next_index", "queued_bytes")

    def __init__(self) -> None:
        self._queues: list[deque[OutMessage]] = [deque() for _ in range(NUM_CLASSES)]
        self.queued_bytes = 0
        self.next_index = [1] * NUM_CLASSES  # per class: the number of the next message

    def queue(self, cls: int, data: bytes, ts_us: int) -> int:
        """Queue a new message; returns its id, `(n << 3) | cls` with n counting from 1."""
        index = self.next_index[cls]
        self.next_index[cls] = index + 1
        msg_id = (index << 3) | cls
        self._queues[cls].append(OutMessage(msg_id, cls, data, ts_us))
        self.queued_bytes += len(data)
        return msg_id

    def push(self, msg: OutMessage) -> None:
        """Queue a message that already has its id (restored after a restart)."""
        self._queues[msg.cls].append(msg)
        self.queued_bytes += len(msg.data) - msg.offset

    def has(self, cls: int) -> bool:
        return bool(self._queues[cls])

    def messages(self) -> list[OutMessage]:
        """Every queued message, class by class, in queue order."""
        return [m for q in self._queues for m in q]

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues)

    def build(self, cls: int, budget: int = DEFAULT_CHUNK) -> FramePlan | None:
        """Next payload of `cls` holding at most `budget` plaintext bytes, or None."""
        q = self._queues[cls]
        if not q:
            return None
        budget = min(budget, MAX_CHUNK)
        head = q[0]
        data = head.data
        size = len(data)
        offset = head.offset
        remaining = size - offset
        if offset or remaining + 4 > budget:
            take = min(remaining, budget)
            if take < remaining and take < MIN_CHUNK:
                return None
            flags = (_FIRST if offset == 0 else 0) | (_LAST if take == remaining else 0)
            payload = data[offset : offset + take] if take != size else data
            self.queued_bytes -= take
            if flags & _LAST:
                q.popleft()
                return FramePlan(cls, flags, payload, head.ts_us, (head.msg_id,), None)
            head.offset = offset + take
            return FramePlan(cls, flags, payload, head.ts_us, (), (head.msg_id, head.offset))
        if len(q) == 1 or len(q[1].data) + 8 + remaining > budget:
            q.popleft()
            self.queued_bytes -= size
            return FramePlan(cls, _FIRST_LAST, data, head.ts_us, (head.msg_id,), None)
        parts: list[bytes] = []
        done: list[int] = []
        total = 0
        while q:
            m = q[0]
            n = len(m.data)
            if total + n + 4 > budget:
                break
            q.popleft()
            parts.append(n.to_bytes(4, "big"))
            parts.append(m.data)
            done.append(m.msg_id)
            total += n + 4
        self.queued_bytes -= total - 4 * len(done)
        return FramePlan(cls, _BATCH, b"".join(parts), head.ts_us, tuple(done), None)
