"""Which DATA frame goes out next: per class, resends first, then new frames, within the
flight window. CRITICAL may use the whole window; the other classes leave it an eighth.

Owns the window limits and the chunk size; given the streams per call.
"""

from __future__ import annotations

from p2pmed.core.config import SessionConfig
from p2pmed.core.reliability import SentFrame
from p2pmed.core.scheduler import FramePlan
from p2pmed.core.streams import Streams


class Sender:
    __slots__ = ("chunk", "limit_critical", "limit_other")

    def __init__(self, config: SessionConfig) -> None:
        self.chunk = config.chunk_bytes
        frames, size = config.window_frames, config.window_bytes
        reserve_f = max(1, frames // 8)
        reserve_b = max(1024, size // 8)
        self.limit_critical = (frames, size)
        self.limit_other = (max(1, frames - reserve_f), max(1024, size - reserve_b))

    def next_frame(self, streams: Streams, c: int) -> tuple[SentFrame, FramePlan | None] | None:
        """The next frame of class `c` to send: (a frame to resend, None) or (a new frame,
        its plan); None when nothing of `c` fits the window."""
        lim_f, lim_b = self.limit_critical if c == 0 else self.limit_other
        if streams.retx[c]:
            f = streams.next_resend(c, lim_f, lim_b)
            if f is not None:
                return f, None
        return streams.next_new(c, lim_f, lim_b, self.chunk)
