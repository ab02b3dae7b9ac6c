"""retry.decide, case by case: the whole retry rule is one pure function (no sleeping, no I/O)."""

from __future__ import annotations

import pytest

from pipeline.sampling.client import _error_details
from pipeline.sampling.retry import (
    BOUNDARY_MARGIN_S,
    MALFORMED_BODY,
    Action,
    Failure,
    LimitContext,
    RetryPolicy,
    backoff,
    decide,
    retry_after_seconds,
)

POLICY = RetryPolicy(max_attempts=4, max_rate_limit_wait_s=100.0, max_backoff_s=8.0)


def no_jitter() -> float:
    return 0.0


def full_jitter() -> float:
    return 1.0


def failure(status: int | None, code: str | None = None, **headers: str) -> Failure:
    return Failure(f"HTTP {status}", status, code, {k.replace("_", "-"): v for k, v in headers.items()})


# ---------------------------------------------------------------- 429: wait and pause the lane
def test_429_with_retry_after_ms_waits_that_long_and_pauses_the_lane() -> None:
    decision = decide(failure(429, retry_after_ms="1500"), 1, 0.0, POLICY, no_jitter)
    assert decision.action is Action.RETRY
    assert decision.delay_s == pytest.approx(1.5)
    assert decision.pause_lane


def test_429_with_retry_after_seconds() -> None:
    decision = decide(failure(429, retry_after="7"), 3, 0.0, POLICY, no_jitter)
    assert (decision.action, decision.delay_s, decision.pause_lane) == (Action.RETRY, 7.0, True)


def test_429_without_header_backs_off() -> None:
    decision = decide(failure(429), 3, 0.0, POLICY, no_jitter)
    assert decision.action is Action.RETRY and decision.pause_lane
    assert decision.delay_s == backoff(3, POLICY, no_jitter) == 1.0  # 0.5 * 2**2, halved by jitter 0


def test_429_is_not_limited_by_max_attempts() -> None:
    decision = decide(failure(429, retry_after="1"), POLICY.max_attempts + 10, 0.0, POLICY, no_jitter)
    assert decision.action is Action.RETRY


def test_429_beyond_the_rate_limit_budget_stops_the_endpoint() -> None:
    """One policy for a wait beyond the horizon, however it adds up: the endpoint stops and
    its jobs (in flight and queued) stay pending; no job is failed for it."""
    assert decide(failure(429, retry_after="10"), 1, 90.0, POLICY).action is Action.RETRY   # 100 s: at the cap
    decision = decide(failure(429, retry_after="11"), 1, 90.0, POLICY)
    assert decision.action is Action.STOP_ENDPOINT
    assert not decision.pause_lane
    assert "rate limited" in decision.reason and "horizon" in decision.reason


@pytest.mark.parametrize("headers", [{"retry_after": "3600"}, {"retry_after_ms": "3600000"}])
def test_a_single_retry_after_beyond_the_horizon_stops_the_endpoint_at_once(headers: dict[str, str]) -> None:
    decision = decide(failure(429, **headers), 1, 0.0, POLICY, no_jitter)
    assert decision.action is Action.STOP_ENDPOINT and not decision.pause_lane and decision.delay_s == 0.0
    assert "3600 s" in decision.reason and "100 s give-up horizon" in decision.reason and "pending" in decision.reason


def test_429_with_insufficient_quota_stops_the_endpoint() -> None:
    decision = decide(failure(429, "insufficient_quota", retry_after="1"), 1, 0.0, POLICY)
    assert decision.action is Action.STOP_ENDPOINT


def test_insufficient_quota_in_the_body_type_reaches_failure_code() -> None:
    # OpenAI sends {"error": {"type": "insufficient_quota", "code": null}} or with another code
    body = b'{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": null}}'
    assert _error_details(body) == ("insufficient_quota", "You exceeded your current quota")
    body = b'{"error": {"message": "quota", "type": "insufficient_quota", "code": "rate_limit_exceeded"}}'
    code, _ = _error_details(body)
    assert code == "insufficient_quota"  # quota wins over the other field
    assert decide(Failure("HTTP 429", 429, code), 1, 0.0, POLICY).action is Action.STOP_ENDPOINT


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"error": {"message": "bad", "code": "context_length_exceeded", "type": "invalid_request_error"}}',
     ("context_length_exceeded", "bad")),
    (b'{"error": {"message": "bad", "type": "invalid_request_error"}}', ("invalid_request_error", "bad")),
    (b'{"error": "plain string"}', (None, "plain string")),
    (b'[1, 2]', (None, "[1, 2]")),
    (b'<html>Bad Gateway</html>', (None, "<html>Bad Gateway</html>")),
    (b'', (None, "(empty body)")),
])
def test_error_details(body: bytes, expected: tuple[str | None, str]) -> None:
    assert _error_details(body) == expected


# ---------------------------------------------------------------- the endpoint is unusable
@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_not_found_stop_the_endpoint(status: int) -> None:
    decision = decide(failure(status), 1, 0.0, POLICY)
    assert decision.action is Action.STOP_ENDPOINT and not decision.pause_lane


# ---------------------------------------------------------------- transient: retry, then give up
@pytest.mark.parametrize("case", [failure(500), failure(502), failure(503), failure(408), failure(None),
                                  Failure("malformed", 200, MALFORMED_BODY)],
                         ids=["500", "502", "503", "408", "no-answer", "malformed-body"])
def test_transient_errors_retry_until_max_attempts(case: Failure) -> None:
    for attempt in range(1, POLICY.max_attempts):
        decision = decide(case, attempt, 0.0, POLICY, no_jitter)
        assert decision.action is Action.RETRY, attempt
        assert not decision.pause_lane
        assert decision.delay_s == backoff(attempt, POLICY, no_jitter)
    decision = decide(case, POLICY.max_attempts, 0.0, POLICY, no_jitter)
    assert decision.action is Action.FAIL_JOB
    assert f"{POLICY.max_attempts} attempts" in decision.reason


def test_a_200_with_an_unknown_code_is_not_transient() -> None:
    assert decide(Failure("odd", 200, "something_else"), 1, 0.0, POLICY).action is Action.FAIL_JOB


# ---------------------------------------------------------------- the request itself is bad
@pytest.mark.parametrize("status", [400, 422])
def test_bad_requests_fail_the_job_at_once(status: int) -> None:
    decision = decide(failure(status, "context_length_exceeded"), 1, 0.0, POLICY)
    assert decision.action is Action.FAIL_JOB and decision.delay_s == 0.0


# ---------------------------------------------------------------- backoff
def test_backoff_bounds_with_jitter() -> None:
    for attempt in range(1, 5):
        base = 0.5 * 2 ** (attempt - 1)
        assert backoff(attempt, POLICY, no_jitter) == base / 2
        assert backoff(attempt, POLICY, full_jitter) == base
        assert base / 2 <= backoff(attempt, POLICY) <= base


def test_backoff_is_capped() -> None:
    assert backoff(5, POLICY, full_jitter) == 8.0   # 0.5 * 16 = 8: the cap
    assert backoff(30, POLICY, full_jitter) == 8.0
    assert backoff(30, POLICY, no_jitter) == 4.0
    assert backoff(1000, RetryPolicy(max_backoff_s=60.0), full_jitter) == 60.0  # no overflow


# ---------------------------------------------------------------- Retry-After parsing
@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "0.25"}, 0.25),
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),            # ms beats seconds
    ({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),         # HTTP date: needs `now`
    ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),            # unreadable ms: seconds
    ({"retry-after": "-5"}, 0.0),                                     # negative clamps to 0
    ({"retry-after-ms": "-5"}, 0.0),
])
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers) == expected


def test_429_with_an_http_date_waits_until_then() -> None:
    now = 1_792_567_670.0   # 2026-10-21T07:27:50Z
    decision = decide(failure(429, retry_after="Wed, 21 Oct 2026 07:28:00 GMT"), 2, 0.0, POLICY, full_jitter,
                      LimitContext(now=now))
    assert decision.action is Action.RETRY and decision.delay_s == pytest.approx(10.0)
    assert decision.timing == "server"


# ---------------------------------------------------------------- 429s of fixed-window limiters
NOW = 1_795_000_005.0   # 11:06:45Z: 15 s before the next minute, 5 s before the next 10 s window


def litellm_429(seconds: str) -> Failure:
    return Failure("HTTP 429", 429, "429", {"llm_provider-retry-after": seconds})


def test_litellm_constant_retry_after_waits_for_the_window_boundary_not_60_s() -> None:
    decision = decide(litellm_429("60"), 1, 0.0, POLICY, no_jitter, LimitContext(now=NOW))
    assert decision.delay_s == pytest.approx(15.0 + BOUNDARY_MARGIN_S)   # 11:06:45 -> 11:07:00
    assert (decision.timing, decision.fixed_window, decision.pause_lane) == ("window boundary", True, True)
    short = decide(litellm_429("10"), 1, 0.0, POLICY, no_jitter,
                   LimitContext(now=NOW, window_s=10))
    assert short.delay_s == pytest.approx(5.0 + BOUNDARY_MARGIN_S) and short.fixed_window


def test_a_first_untimed_429_backs_off_a_second_in_the_same_window_waits_for_the_boundary() -> None:
    first = decide(failure(429), 2, 0.0, POLICY, no_jitter, LimitContext(now=NOW))
    assert (first.timing, first.fixed_window, first.delay_s) == ("backoff", False, backoff(2, POLICY, no_jitter))
    second = decide(failure(429), 3, 0.5, POLICY, no_jitter, LimitContext(now=NOW, untimed_in_window=1))
    assert (second.timing, second.fixed_window) == ("window boundary", True)
    assert second.delay_s == pytest.approx(15.0 + BOUNDARY_MARGIN_S)


def test_once_a_fixed_window_is_known_every_untimed_429_waits_for_the_boundary() -> None:
    decision = decide(failure(429), 1, 0.0, POLICY, no_jitter, LimitContext(now=NOW, fixed_window=True))
    assert decision.delay_s == pytest.approx(15.0 + BOUNDARY_MARGIN_S) and decision.timing == "window boundary"


def test_precise_timing_wins_over_a_known_fixed_window() -> None:
    """Sliding windows (OpenAI) keep working as before: the 429 says when."""
    context = LimitContext(now=NOW, fixed_window=True)
    assert decide(failure(429, retry_after_ms="1500"), 1, 0.0, POLICY, no_jitter, context).delay_s == 1.5
    reset = decide(failure(429, x_ratelimit_remaining_requests="0", x_ratelimit_reset_requests="2s"),
                   1, 0.0, POLICY, no_jitter, context)
    assert (reset.delay_s, reset.timing) == (2.0, "server")
    anthropic = decide(failure(429, anthropic_ratelimit_requests_remaining="0",
                               anthropic_ratelimit_requests_reset="2026-11-18T11:06:48Z"),
                       1, 0.0, POLICY, no_jitter, LimitContext(now=NOW))
    assert anthropic.delay_s == pytest.approx(3.0)


def test_an_untimed_429_waits_for_a_reset_the_lane_already_knows() -> None:
    decision = decide(failure(429), 1, 0.0, POLICY, no_jitter, LimitContext(now=NOW, hold_s=4.0))
    assert (decision.delay_s, decision.timing) == (4.0, "reset")


def test_a_retry_after_far_beyond_the_window_still_stops_the_endpoint() -> None:
    decision = decide(failure(429, retry_after="3600"), 1, 0.0, POLICY, no_jitter,
                      LimitContext(now=NOW, fixed_window=True))
    assert decision.action is Action.STOP_ENDPOINT
