"""Token buckets: pure arithmetic on a rate, a burst and the time passed in.

Used wherever something must not happen too often: sends to a chat platform (before it answers
429), strangers recorded per chat, and repeated error lines in the log. No clock inside:
``now`` is an argument, so the tests are tables::

    >>> bucket = TokenBucket(rate=1.0, burst=2)
    >>> bucket.reserve(now=0.0), bucket.reserve(now=0.0), bucket.reserve(now=0.0)
    (0.0, 0.0, 1.0)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")


@dataclass
class TokenBucket:
    rate: float  # tokens added per second; 0 means no limit at all
    burst: float  # the most tokens it holds
    tokens: float | None = None  # None: full (set on first use); below 0: in debt
    stamp: float = 0.0

    def _refill(self, now: float) -> float:
        if self.tokens is None:
            self.tokens, self.stamp = self.burst, now
        elif now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def allow(self, now: float) -> bool:
        """Take a token if there is one; never waits, never goes into debt."""
        if self.rate <= 0:
            return True
        tokens = self._refill(now)
        if tokens >= 1:
            self.tokens = tokens - 1
            return True
        return False

    def reserve(self, now: float) -> float:
        """Take a token, going into debt if need be: returns the seconds to wait before using
        it (0.0 when one was there). Reservations queue up in the order they were made."""
        if self.rate <= 0:
            return 0.0
        tokens = self._refill(now) - 1
        self.tokens = tokens
        return 0.0 if tokens >= 0 else -tokens / self.rate


class KeyedBuckets(Generic[K]):
    """One bucket per key (a chat, a log event), at most ``max_keys`` of them: the least
    recently used is forgotten first, so a flood of new keys costs bounded memory."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def get(self, key: K) -> TokenBucket:
        bucket = self._buckets.pop(key, None) or TokenBucket(self.rate, self.burst)
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return bucket

    def allow(self, key: K, now: float) -> bool:
        return self.get(key).allow(now)

    def reserve(self, key: K, now: float) -> float:
        return self.get(key).reserve(now)
