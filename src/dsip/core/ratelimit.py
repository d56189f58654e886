"""Token buckets keyed by DID or IP address (sans-I/O: ``now`` is a parameter).

A bucket refills at ``rate_per_minute / 60`` tokens per second up to ``burst`` tokens. The
table of buckets is bounded: idle, full buckets are forgotten first (they carry no
information — a new bucket starts full), so a flood of fresh keys cannot grow memory.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RateLimiter"]


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(
        self, rate_per_minute: float, *, burst: float | None = None, max_keys: int = 100_000
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1.0, rate_per_minute / 6.0))
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket if it has them."""
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            b = self._buckets[key] = _Bucket(self.burst, now)
        else:
            b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
        if b.tokens >= cost:
            b.tokens -= cost
            return True
        return False

    def retry_after(self, key: str, cost: float = 1.0) -> int:
        """Whole seconds until ``cost`` tokens are available (at least 1)."""
        b = self._buckets.get(key)
        missing = cost - (b.tokens if b else self.burst)
        return max(1, int(missing / self.rate + 0.999))

    def _evict(self, now: float) -> None:
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for k in full or list(self._buckets)[: max(1, len(self._buckets) // 10)]:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
