"""What to do after a failed attempt: the whole retry rule in one pure function.

`decide(failure, attempt, rate_limited_s, policy)` turns what went wrong (HTTP status, the
error code in the body, the response headers) into one of:

- RETRY after `delay_s` (and, for a 429, pause the whole lane: every worker would meet the
  same empty budget);

  For a 429 the wait is, in order: what the 429 says precisely (`retry-after-ms`, a reset
  time, a `retry-after` shorter than the limit window); else, for a limiter that counts in
  fixed windows, the next window boundary (the lane has inferred one, or this 429 shows it:
  a `retry-after` equal to the window's length, e.g. LiteLLM's constant `60`, or a second untimed 429
  in the same window); else a known reset (a budget the server reported at 0); else backoff.
  Probing every pacing interval into a full fixed window only buys 429s, and a gateway that
  counts rejected requests (LiteLLM) is fed more of them;
- FAIL_JOB: retrying cannot help this request (a 400, a context too long), or we gave up;
- STOP_ENDPOINT: every request would fail the same way (bad key, unknown model, no quota),
  or a 429 asks to wait beyond the give-up horizon (`max_rate_limit_wait_s`).

The lane carries the decision out; nothing here sleeps, counts or logs, so each case is a
unit test (tests/test_retry.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from pipeline.sampling.ratelimit_headers import (
    exhausted_for,
    has_precise_timing,
    is_window_length,
    next_boundary_s,
    windows,
)
from pipeline.sampling.ratelimit_headers import retry_after_seconds as retry_after_seconds

ENDPOINT_FATAL_STATUS = frozenset({401, 403, 404})
QUOTA_CODES = frozenset({"insufficient_quota"})
MALFORMED_BODY = "malformed_body"   # code given to a 200 whose body is not a completion


class Action(Enum):
    RETRY = "retry"
    FAIL_JOB = "fail_job"
    STOP_ENDPOINT = "stop_endpoint"


@dataclass(frozen=True)
class Failure:
    """One failed attempt. `status` None: no HTTP answer (connection error, timeout)."""

    message: str
    status: int | None = None
    code: str | None = None          # the body's error `code` or `type`
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    delay_s: float = 0.0
    pause_lane: bool = False         # a 429: hold every worker of the lane for delay_s
    reason: str = ""
    timing: str = ""                 # a 429: where delay_s came from (server, window boundary, reset, backoff)
    fixed_window: bool = False       # a 429 that shows the limiter counts in fixed windows


BOUNDARY_MARGIN_S = 0.25   # after a window boundary: clocks of client and gateway differ a little


@dataclass(frozen=True)
class LimitContext:
    """What the lane knows about the endpoint's limiter when a 429 arrives.

    `now` is wall-clock epoch seconds: fixed windows follow the clock (LiteLLM counts per
    calendar minute), so their boundaries are multiples of `window_s` since the epoch."""

    now: float
    window_s: float = 60.0
    fixed_window: bool = False       # inferred earlier
    untimed_in_window: int = 0       # 429s without precise timing already seen in this window
    hold_s: float | None = None      # a reset the server announced (a budget at 0), seconds left


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6            # for 5xx, timeouts, connection errors, unreadable bodies
    max_rate_limit_wait_s: float = 900.0   # 429s are waited out this long per call
    max_backoff_s: float = 60.0


class EndpointError(Exception):
    """Raised by a lane whose endpoint is unusable: its workers stop, its jobs stay pending."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


def decide(failure: Failure, attempt: int, rate_limited_s: float, policy: RetryPolicy,
           jitter: Callable[[], float] = random.random, limits: LimitContext | None = None) -> Decision:
    """The decision after `attempt` attempts (1-based), `rate_limited_s` already spent
    waiting on 429s for this call; `limits` is what the lane knows of the limiter."""
    status, code = failure.status, failure.code
    if code in QUOTA_CODES or status in ENDPOINT_FATAL_STATUS:
        return Decision(Action.STOP_ENDPOINT, reason="the endpoint refuses every request")
    if status == 429:
        wait, timing, fixed = rate_limit_wait(failure.headers or {}, attempt, policy, jitter,
                                              limits or LimitContext(now=time.time()))
        if rate_limited_s + wait > policy.max_rate_limit_wait_s:
            # Beyond the horizon every call of the endpoint would wait as long: stop it and
            # leave its jobs pending (a rerun picks them up), rather than fail each job or
            # hold the lane silently for the whole wait.
            return Decision(Action.STOP_ENDPOINT, reason=(
                f"rate limited: the server asks to wait {wait:.0f} s more after {rate_limited_s:.0f} s, beyond the "
                f"{policy.max_rate_limit_wait_s:.0f} s give-up horizon; its jobs stay pending, run again later"))
        return Decision(Action.RETRY, delay_s=wait, pause_lane=True, reason="rate limited", timing=timing,
                        fixed_window=fixed)
    if is_transient(failure):
        if attempt >= policy.max_attempts:
            return Decision(Action.FAIL_JOB, reason=f"gave up after {attempt} attempts")
        return Decision(Action.RETRY, delay_s=backoff(attempt, policy, jitter), reason="transient error")
    return Decision(Action.FAIL_JOB, reason="the server rejected this request")


def is_transient(failure: Failure) -> bool:
    """No answer, a server error, a request timeout, or a 200 with an unreadable body."""
    status = failure.status
    return status is None or status >= 500 or status == 408 or failure.code == MALFORMED_BODY


def backoff(attempt: int, policy: RetryPolicy, jitter: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: spreads retries so they do not arrive in waves."""
    return (0.5 + 0.5 * jitter()) * min(policy.max_backoff_s, 0.5 * 2.0 ** (attempt - 1))


def rate_limit_wait(headers: Mapping[str, str], attempt: int, policy: RetryPolicy,
                    jitter: Callable[[], float], limits: LimitContext) -> tuple[float, str, bool]:
    """(seconds to wait after a 429, where that came from, whether the limiter is a fixed
    window), in the order the module docstring gives."""
    hint = retry_after_seconds(headers, limits.now)
    if has_precise_timing(headers, limits.window_s, limits.now):
        _, reset = exhausted_for(windows(headers, limits.now))
        wait = hint if hint is not None else reset
        if wait is not None:
            return wait, "server", False
    fixed = (limits.fixed_window or limits.untimed_in_window >= 1
             or (hint is not None and is_window_length(hint, limits.window_s)))
    if fixed:
        return next_boundary_s(limits.now, limits.window_s) + BOUNDARY_MARGIN_S, "window boundary", True
    if limits.hold_s is not None:
        return limits.hold_s, "reset", False
    return backoff(attempt, policy, jitter), "backoff", False
