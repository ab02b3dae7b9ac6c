"""What to do after a failed attempt: the whole retry rule in one pure function.

`decide(failure, attempt, rate_limited_s, policy)` turns what went wrong (HTTP status, the
error code in the body, the response headers) into one of:

- RETRY after `delay_s` (and, for a 429, pause the whole lane: every worker would meet the
  same empty budget);
- FAIL_JOB: retrying cannot help this request (a 400, a context too long), or we gave up;
- STOP_ENDPOINT: every request would fail the same way (bad key, unknown model, no quota),
  or a 429 asks to wait beyond the give-up horizon (`max_rate_limit_wait_s`).

The lane carries the decision out; nothing here sleeps, counts or logs, so each case is a
unit test (tests/test_retry.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

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
           jitter: Callable[[], float] = random.random) -> Decision:
    """The decision after `attempt` attempts (1-based), `rate_limited_s` already spent
    waiting on 429s for this call."""
    status, code = failure.status, failure.code
    if code in QUOTA_CODES or status in ENDPOINT_FATAL_STATUS:
        return Decision(Action.STOP_ENDPOINT, reason="the endpoint refuses every request")
    if status == 429:
        wait = retry_after_seconds(failure.headers or {})
        if wait is None:
            wait = backoff(attempt, policy, jitter)
        if rate_limited_s + wait > policy.max_rate_limit_wait_s:
            # Beyond the horizon every call of the endpoint would wait as long: stop it and
            # leave its jobs pending (a rerun picks them up), rather than fail each job or
            # hold the lane silently for the whole wait.
            return Decision(Action.STOP_ENDPOINT, reason=(
                f"rate limited: the server asks to wait {wait:.0f} s more after {rate_limited_s:.0f} s, beyond the "
                f"{policy.max_rate_limit_wait_s:.0f} s give-up horizon; its jobs stay pending, run again later"))
        return Decision(Action.RETRY, delay_s=wait, pause_lane=True, reason="rate limited")
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


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait: `retry-after-ms` (OpenAI) is finer than `Retry-After`."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP date: rare for APIs, fall back to our own backoff
    return None
