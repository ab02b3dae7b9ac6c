"""TokenBucket and AdaptiveConcurrency on a fake clock: sleeping advances it, nothing waits."""

from __future__ import annotations

import types

import anyio
import pytest

from pipeline.sampling import limits
from pipeline.sampling.limits import AdaptiveConcurrency, TokenBucket, WindowCounter


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """Stands in for `time` and `anyio.sleep` inside pipeline.sampling.limits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        # A real sleep always lets the clock move; a float sum at 1000.0 may not (a wait of
        # 1e-17 s for a rounding remainder would loop for ever).
        self.now += max(seconds, 1e-9)
        await anyio.sleep(0)  # still a checkpoint: other tasks run


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(limits, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    monkeypatch.setattr(limits, "anyio", types.SimpleNamespace(Lock=anyio.Lock, Event=anyio.Event, sleep=fake.sleep))
    return fake


# ---------------------------------------------------------------- TokenBucket
def test_capacity_is_half_a_second_of_rate_but_at_least_one(clock: Clock) -> None:
    assert TokenBucket(600).capacity == 5.0       # 10/s
    assert TokenBucket(60).capacity == 1.0        # 0.5 units rounded up to one request
    assert TokenBucket(600, burst_seconds=2).capacity == 20.0


@pytest.mark.anyio
async def test_a_full_bucket_serves_its_burst_without_waiting(clock: Clock) -> None:
    bucket = TokenBucket(600)
    for _ in range(5):
        await bucket.acquire(1)
    assert clock.slept == []
    await bucket.acquire(1)                       # empty: one unit at 10/s
    assert sum(clock.slept) == pytest.approx(0.1)


@pytest.mark.anyio
async def test_refill_rate_and_burst_cap(clock: Clock) -> None:
    bucket = TokenBucket(600)
    await bucket.acquire(5)
    clock.now += 0.3
    bucket._refill()
    assert bucket._level == pytest.approx(3.0)    # 0.3 s at 10/s
    clock.now += 100
    bucket._refill()
    assert bucket._level == 5.0                   # never more than the burst


@pytest.mark.anyio
async def test_steady_pacing_keeps_the_rate(clock: Clock) -> None:
    bucket = TokenBucket(600)
    start = clock.now
    for _ in range(105):
        await bucket.acquire(1)
    # 5 from the initial burst, then 100 at 10/s
    assert clock.now - start == pytest.approx(10.0)


@pytest.mark.anyio
async def test_a_request_larger_than_the_burst_leaves_a_debt(clock: Clock) -> None:
    bucket = TokenBucket(600)
    await bucket.acquire(15)                      # a full bucket is enough to start
    assert clock.slept == [] and bucket._level == -10.0
    await bucket.acquire(1)                       # waits out the debt: 11 units at 10/s
    assert sum(clock.slept) == pytest.approx(1.1)


@pytest.mark.anyio
async def test_drain_empties_the_burst_but_keeps_a_debt(clock: Clock) -> None:
    bucket = TokenBucket(600)
    bucket.drain()
    assert bucket._level == 0.0
    await bucket.acquire(1)
    assert sum(clock.slept) == pytest.approx(0.1)
    bucket._level = -3.0
    bucket.drain()
    assert bucket._level == -3.0                  # a debt is not forgiven


@pytest.mark.anyio
async def test_refund_gives_back_unused_units_up_to_the_cap(clock: Clock) -> None:
    bucket = TokenBucket(600)
    await bucket.acquire(15)                      # level -10
    bucket.refund(8)
    assert bucket._level == pytest.approx(-2.0)
    bucket.refund(100)
    assert bucket._level == 5.0


@pytest.mark.anyio
async def test_waiters_are_served_in_order(clock: Clock) -> None:
    bucket = TokenBucket(600)
    await bucket.acquire(5)
    served: list[str] = []

    async def take(name: str, amount: float) -> None:
        await bucket.acquire(amount)
        served.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "big", 5)
        await anyio.sleep(0)
        for i in range(3):
            tg.start_soon(take, f"small{i}", 1)
    assert served == ["big", "small0", "small1", "small2"]


@pytest.mark.anyio
async def test_real_time_pacing() -> None:
    """No fake clock: 6000/min is 100/s with a burst of 50; 70 units take ~0.2 s."""
    bucket = TokenBucket(6000)
    start = anyio.current_time()
    for _ in range(70):
        await bucket.acquire(1)
    elapsed = anyio.current_time() - start
    assert 0.15 <= elapsed < 0.6


@pytest.mark.anyio
async def test_a_credit_from_the_servers_remaining_is_spent_not_cut_back(clock: Clock) -> None:
    bucket = TokenBucket(600)                     # our own burst: 5
    bucket.credit(12)                             # the first answer said 12 more fit now
    clock.now += 1.0                              # refill does not cut the credit to capacity
    for _ in range(12):
        await bucket.acquire(1)
    assert clock.slept == []
    await bucket.acquire(1)
    assert sum(clock.slept) == pytest.approx(0.1)  # then the steady rate, as before
    bucket.credit(3)
    assert bucket._level == 3                     # an empty bucket starts again from the credit


# ---------------------------------------------------------------- AdaptiveConcurrency
def test_decrease_is_multiplicative_once_a_second_and_bounded(clock: Clock) -> None:
    limit = AdaptiveConcurrency(10, minimum=2)
    limit.on_rate_limited()
    assert limit.limit == pytest.approx(7.0)
    limit.on_rate_limited()                       # same burst of 429s: one signal
    clock.now += 0.5
    limit.on_rate_limited()
    assert limit.limit == pytest.approx(7.0)
    for _ in range(20):
        clock.now += 1.0
        limit.on_rate_limited()
    assert limit.limit == 2                       # never below the minimum


def test_increase_is_additive_and_bounded(clock: Clock) -> None:
    limit = AdaptiveConcurrency(4)
    limit.on_rate_limited()
    assert limit.limit == pytest.approx(2.8)
    limit.on_success()
    assert limit.limit == pytest.approx(2.8 + 1 / 2.8)   # +1 per window of `limit` successes
    for _ in range(50):
        limit.on_success()
    assert limit.limit == 4.0                     # never above the maximum
    limit.limit = 0.5
    limit.on_success()
    assert limit.limit == pytest.approx(1.5)      # the step is at most one


def test_slow_start_begins_at_one_and_grows_by_one_per_success(clock: Clock) -> None:
    limit = AdaptiveConcurrency(8, slow_start=True)
    assert limit.limit == 1                      # one request until something is known
    limit.on_success()
    limit.on_success()
    assert limit.limit == 3                      # doubling per round trip, not +1/limit
    limit.widen()                                # the first headers told us the limits
    assert (limit.limit, limit.slow_start) == (8, False)


def test_slow_start_ends_at_the_first_429(clock: Clock) -> None:
    limit = AdaptiveConcurrency(8, slow_start=True)
    for _ in range(4):
        limit.on_success()
    limit.on_rate_limited()
    assert limit.limit == pytest.approx(3.5) and not limit.slow_start
    limit.on_success()
    assert limit.limit == pytest.approx(3.5 + 1 / 3.5)   # back to additive increase
    limit.widen()                                          # too late to widen: AIMD governs now
    assert limit.limit < 8


def test_no_slow_start_with_configured_limits_or_a_single_slot() -> None:
    assert AdaptiveConcurrency(8).limit == 8
    assert not AdaptiveConcurrency(1, slow_start=True).slow_start


def test_window_counter_rolls_over_at_clock_boundaries() -> None:
    window = WindowCounter(60.0)
    window.at(120.5).sent += 3
    window.at(179.9).ok += 2
    assert (window.sent, window.ok, window.index) == (3, 2, 2)
    assert window.at(180.0).sent == 0            # a new calendar minute counts from zero
    window.sync(181.0, 5)                        # the server counted other clients too
    assert window.sent == 5
    window.sync(182.0, 2)
    assert window.sent == 5                      # never below our own count


@pytest.mark.anyio
async def test_acquire_blocks_at_the_limit_and_release_wakes_a_waiter(clock: Clock) -> None:
    limit = AdaptiveConcurrency(3)
    limit.on_rate_limited()                       # 2.1: two slots
    await limit.acquire()
    await limit.acquire()
    got_third = anyio.Event()

    async def third() -> None:
        await limit.acquire()
        got_third.set()

    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            tg.start_soon(third)
            await anyio.wait_all_tasks_blocked()
            assert not got_third.is_set() and limit.in_flight == 2
            limit.release()
            await got_third.wait()
    assert limit.in_flight == 2


@pytest.mark.anyio
async def test_growth_wakes_a_waiter(clock: Clock) -> None:
    limit = AdaptiveConcurrency(2)
    clock.now += 1
    limit.on_rate_limited()                       # 1.4: one slot
    await limit.acquire()
    done = anyio.Event()

    async def second() -> None:
        await limit.acquire()
        done.set()

    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            limit.on_success()                    # 1.4 + 1/1.4 > 2 -> capped at 2
            await done.wait()
    assert limit.in_flight == 2
