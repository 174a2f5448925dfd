"""Per-principal limits (`server.limits`): a token bucket of requests per principal, and
a cap on the entities of one request. Kept in each server process (with `--workers N`,
each worker allows the rate). A request over a limit is answered 429 with Retry-After,
before any work is done for it."""

from __future__ import annotations

import math
import time

from almanac.config import LimitsConfig
from almanac.serving.errors import TooManyRequestsError


class RateLimiter:
    def __init__(self, config: LimitsConfig) -> None:
        self.rate, self.burst = config.requests_per_second, float(config.burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # principal → (tokens, at)

    def take(self, principal: str) -> None:
        """Spend one request of `principal`'s bucket, or TooManyRequestsError."""
        if self.rate is None:
            return
        now = time.monotonic()
        tokens, at = self._buckets.get(principal, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            wait = math.ceil((1 - tokens) / self.rate)
            self._buckets[principal] = (tokens, now)
            limit = f"server.limits.requests_per_second = {self.rate:g}"
            raise TooManyRequestsError(
                f"{principal} sends more than {limit}: retry in {wait} s",
                {"retry-after": str(wait)},
            )
        self._buckets[principal] = (tokens - 1, now)
        if len(self._buckets) > 100_000:  # bounded: forget the idle ones
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
