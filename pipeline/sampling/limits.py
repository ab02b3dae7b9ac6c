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
        now = time.monotonic()  # a credit above capacity is spent, not cut back
        self._level = min(max(self.capacity, self._level), self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def credit(self, amount: float) -> None:
        """The server says `amount` more fit now (its `remaining`): a fresh budget starts
        from that instead of our own half-second burst, so slow start costs no throughput."""
        self._refill()
        self._level = max(self._level, amount)

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
    """A semaphore whose size shrinks on 429s and grows back slowly on success (AIMD).

    With `slow_start`, it starts at 1 and grows by one per success (doubling per round
    trip) until `widen()` (the limits became known), a 429, or the maximum: an opening burst
    of `maximum` requests would overrun a tight limit before any header could warn us."""

    def __init__(self, maximum: int, minimum: int = 1, slow_start: bool = False):
        self.maximum = maximum
        self.minimum = minimum
        self.slow_start = slow_start and maximum > 1
        self.limit = float(minimum if self.slow_start else maximum)
        self.in_flight = 0
        self._changed = anyio.Event()
        self._waiting = 0   # acquirers waiting for a change: without any, no Event is made per release
        self._last_decrease = 0.0

    def widen(self) -> None:
        """The limits are known (pacing takes over): leave slow start at full width."""
        if self.slow_start:
            self.slow_start = False
            self.limit = float(self.maximum)
            self._notify()

    async def acquire(self) -> None:
        while self.in_flight >= int(self.limit):
            self._waiting += 1
            try:
                await self._changed.wait()
            finally:
                self._waiting -= 1
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._notify()

    def on_rate_limited(self) -> None:
        """Multiplicative decrease, at most once a second (one burst of 429s = one signal)."""
        self.slow_start = False
        now = time.monotonic()
        if now - self._last_decrease >= 1.0:
            self._last_decrease = now
            self.limit = max(self.minimum, self.limit * 0.7)

    def on_success(self) -> None:
        if self.limit < self.maximum:
            step = 1.0 if self.slow_start else 1.0 / max(1.0, self.limit)
            self.limit = min(self.maximum, self.limit + step)
            self._notify()
        else:
            self.slow_start = False

    def _notify(self) -> None:
        if self._waiting:
            self._changed.set()
            self._changed = anyio.Event()


class WindowCounter:
    """Requests sent and answered in the current clock-aligned window, counted as a
    fixed-window limiter counts them (LiteLLM: per calendar minute, rejected requests too).
    Times are wall-clock epoch seconds, passed in so that tests need no clock."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self.index = -1
        self.sent = 0
        self.ok = 0
        self.untimed_429 = 0

    def at(self, now: float) -> WindowCounter:
        """Roll over to the window `now` falls in (counts start from zero there)."""
        index = int(now // self.window_s)
        if index != self.index:
            self.index, self.sent, self.ok, self.untimed_429 = index, 0, 0, 0
        return self

    def sync(self, now: float, used: float) -> None:
        """The server's own count (limit - remaining) includes other clients' requests."""
        self.at(now).sent = max(self.sent, int(used))
