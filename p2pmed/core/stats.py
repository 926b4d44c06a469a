"""Counters of one Session, and the read-only mapping view existing readers use."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields


@dataclass(slots=True)
class SessionStats:
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    data_frames_sent: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    messages_acked: int = 0
    retransmits: int = 0
    fast_retransmits: int = 0
    rto_timeouts: int = 0
    failover_resends: int = 0
    duplicates: int = 0
    duplicate_frames: int = 0
    duplicate_handshake: int = 0
    critical_copies: int = 0
    acks_sent: int = 0
    acks_received: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    ratchets: int = 0
    handshake_retransmits: int = 0
    rejected_total: int = 0
    rejected_state: int = 0
    held_binds: int = 0
    stale_binds: int = 0
    path_binds: int = 0
    stalls: int = 0
    # "rejected_<kind>_<reason>" -> count, for kinds other than "state"
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, kind: str) -> None:
        self.rejected_total += 1
        if kind == "state":
            self.rejected_state += 1
        else:
            key = f"rejected_{kind}_{reason}"
            self.rejected[key] = self.rejected.get(key, 0) + 1


COUNTERS = tuple(f.name for f in fields(SessionStats) if f.name != "rejected")
_COUNTER_SET = frozenset(COUNTERS)


class StatsView(Mapping[str, int]):
    """`session.stats[...]`: every counter by name, and "rejected_<kind>_<reason>" keys once
    counted (a reason never seen is absent, as it always was: use .get(key, 0))."""

    __slots__ = ("_stats",)

    def __init__(self, stats: SessionStats) -> None:
        self._stats = stats

    def __getitem__(self, key: str) -> int:
        if key in _COUNTER_SET:
            value: int = getattr(self._stats, key)
            return value
        return self._stats.rejected[key]

    def __iter__(self) -> Iterator[str]:
        yield from COUNTERS
        yield from list(self._stats.rejected)

    def __len__(self) -> int:
        return len(COUNTERS) + len(self._stats.rejected)

    def __repr__(self) -> str:
        return f"StatsView({dict(self)!r})"
