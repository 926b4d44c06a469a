"""Token buckets for per-endpoint message rates and per-IP join attempts."""

from __future__ import annotations

import time


class TokenBucket:
    __slots__ = ("burst", "rate", "t", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.t = time.monotonic() if now is None else now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class PerKeyLimiter:
    """One bucket per key (client IP), pruned so a flood of addresses cannot grow it forever."""

    def __init__(self, rate: float, burst: float, max_keys: int = 50_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float) -> bool:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            b = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return b.take(now)

    def _prune(self, now: float) -> None:
        full = self.burst / self.rate if self.rate > 0 else 0.0
        for k in [k for k, b in self._buckets.items() if now - b.t >= full]:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()
