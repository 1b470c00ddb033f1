"""Request and token rate limits for the LALM client (token buckets; pure, with an injectable clock).

``RateLimiter(per_minute)`` holds at most ``per_minute`` units and refills ``per_minute / 60`` per second.
:meth:`~RateLimiter.wait_time` says how long to wait before ``cost`` units can be taken; :meth:`take`
takes them (the level may go negative when a cost is only known afterwards, e.g. the tokens a response
used: later callers then wait until it is paid back)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """A thread-safe token bucket of ``per_minute`` units per minute (``None``: unlimited)."""

    def __init__(self, per_minute: float | None, clock: Callable[[], float] = time.monotonic):
        if per_minute is not None and not per_minute > 0:
            raise ValueError(f"a rate limit must be positive, got {per_minute}")
        self.per_minute, self.clock = per_minute, clock
        self.level = float(per_minute or 0.0)
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        if self.per_minute is not None:
            self.level = min(self.per_minute, self.level + (now - self._at) * self.per_minute / 60.0)
        self._at = now

    def wait_time(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` units are available (0 when they are, or when unlimited). A cost above the
        bucket's size waits only for a full bucket."""
        if self.per_minute is None:
            return 0.0
        with self._lock:
            self._refill()
            need = min(cost, self.per_minute) - self.level
            return max(0.0, need * 60.0 / self.per_minute)

    def take(self, cost: float = 1.0) -> None:
        """Spend ``cost`` units now (the level may go below zero)."""
        if self.per_minute is None:
            return
        with self._lock:
            self._refill()
            self.level -= cost

    def acquire(self, cost: float = 1.0, sleep: Callable[[float], object] = time.sleep) -> float:
        """Wait until ``cost`` units are available, take them; returns the seconds waited."""
        waited = 0.0
        while (w := self.wait_time(cost)) > 0:
            sleep(w)
            waited += w
        self.take(cost)
        return waited
