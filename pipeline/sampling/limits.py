"""Request/token budgets and adaptive concurrency for one endpoint.

Providers enforce per-minute limits over short windows, so budgets refill continuously
and allow at most half a second of burst: steady pacing at the limit finishes in the
ideal time, and the server's own burst allowance is left as slack for network jitter
(requests sent evenly can still arrive bunched), so pacing does not provoke 429s. Token reservations are estimates (prompt +
max_tokens) and the unused part is given back once the server reports real usage.
"""

from __future__ import annotations

import time

import anyio

BURST_SECONDS = 0.5


class TokenBucket:
    """A continuously refilled budget of `per_minute` units, served first come first served."""

    def __init__(self, per_minute: float, burst_seconds: float = BURST_SECONDS):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock = anyio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float) -> None:
        """Wait for `amount`. A request larger than the burst waits for a full bucket and
        leaves a debt that later requests wait out, so the long-run rate stays exact."""
        needed = min(amount, self.capacity)
        async with self._lock:  # FIFO: a large request is not starved by small ones
            self._refill()
            while self._level < needed:
                await anyio.sleep((needed - self._level) / self.rate)
                self._refill()
            self._level -= amount

    def refund(self, amount: float) -> None:
        self._refill()
        self._level = min(self.capacity, self._level + amount)

    def drain(self) -> None:
        """After a 429 the server's budget is empty: stop our own burst too."""
        self._refill()
        self._level = min(self._level, 0.0)


class AdaptiveConcurrency:
    """A semaphore whose size shrinks on 429s and grows back slowly on success (AIMD)."""

    def __init__(self, maximum: int, minimum: int = 1):
        self.maximum = maximum
        self.minimum = minimum
        self.limit = float(maximum)
        self.in_flight = 0
        self._changed = anyio.Event()
        self._last_decrease = 0.0

    async def acquire(self) -> None:
        while self.in_flight >= int(self.limit):
            event = self._changed
            await event.wait()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._notify()

    def on_rate_limited(self) -> None:
        """Multiplicative decrease, at most once a second (one burst of 429s = one signal)."""
        now = time.monotonic()
        if now - self._last_decrease >= 1.0:
            self._last_decrease = now
            self.limit = max(self.minimum, self.limit * 0.7)

    def on_success(self) -> None:
        if self.limit < self.maximum:
            self.limit = min(self.maximum, self.limit + 1.0 / max(1.0, self.limit))
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
