"""Rate-limit headers, format by format (pipeline/sampling/ratelimit_headers.py: pure functions)."""

from __future__ import annotations

import pytest

from pipeline.sampling.ratelimit_headers import (
    Window,
    exhausted_for,
    has_precise_timing,
    next_boundary_s,
    parse_duration,
    relevant,
    retry_after_seconds,
    seconds_until,
    windows,
)

NOW = 1_795_000_000.0   # 2026-11-18T11:06:40Z


@pytest.mark.parametrize(("text", "expected"), [
    ("6m0s", 360.0), ("1.5s", 1.5), ("20ms", 0.02), ("1h2m3s", 3723.0), ("59.9s", 59.9),
    ("0s", 0.0), ("7", 7.0), ("0.25", 0.25), ("1m30.5s", 90.5), ("500us", 0.0005),
    ("", None), ("soon", None), ("6m0", None), ("-1s", None), ("-3", None), ("inf", None), ("1s2x", None),
])
def test_openai_durations(text: str, expected: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(expected) if expected is not None else None)


def test_rfc3339_and_http_dates_are_seconds_after_now() -> None:
    assert seconds_until("2026-11-18T11:07:40Z", NOW) == pytest.approx(60.0)
    assert seconds_until("2026-11-18T12:07:40.500+01:00", NOW) == pytest.approx(60.5)
    assert seconds_until("Wed, 18 Nov 2026 11:06:50 GMT", NOW) == pytest.approx(10.0)
    assert seconds_until("2026-11-18T11:00:00Z", NOW) == 0.0    # in the past: no wait
    assert seconds_until("2026-11-18T11:07:40", NOW) is None     # no zone: cannot be placed
    assert seconds_until("tomorrow", NOW) is None


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "Wed, 18 Nov 2026 11:06:50 GMT"}, 10.0),
    ({"llm_provider-retry-after": "60"}, 60.0),                     # LiteLLM
    ({"llm_provider-retry-after-ms": "250"}, 0.25),
    ({"retry-after": "soon", "llm_provider-retry-after": "3"}, 3.0),  # unreadable: the next hint
    ({}, None),
])
def test_retry_hints(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers, NOW) == expected


def test_openai_windows() -> None:
    found = windows({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "0",
                     "x-ratelimit-reset-requests": "6m0s", "x-ratelimit-limit-tokens": "30000",
                     "x-ratelimit-remaining-tokens": "29000", "x-ratelimit-reset-tokens": "20ms"}, NOW)
    assert found == {"requests": Window(500, 0, 360.0), "tokens": Window(30000, 29000, pytest.approx(0.02))}
    assert exhausted_for(found) == (True, 360.0)


def test_anthropic_windows_reset_at_rfc3339_times() -> None:
    found = windows({"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
                     "anthropic-ratelimit-requests-reset": "2026-11-18T11:06:52Z"}, NOW)
    assert found == {"requests": Window(50, 0, 12.0)}
    assert exhausted_for(found) == (True, 12.0)


def test_litellm_windows_have_no_reset() -> None:
    found = windows({"x-ratelimit-limit-requests": "6", "x-ratelimit-remaining-requests": "0"}, NOW)
    assert found == {"requests": Window(6, 0, None)}
    assert exhausted_for(found) == (True, None)   # at 0, but nobody says until when
    assert exhausted_for(windows({"x-ratelimit-remaining-requests": "3"}, NOW)) == (False, None)
    assert windows({}, NOW) == {}


def test_precise_timing_versus_a_window_length_constant() -> None:
    assert has_precise_timing({"retry-after-ms": "20"}, 60)
    assert has_precise_timing({"x-ratelimit-reset-requests": "1s"}, 60)
    assert has_precise_timing({"retry-after": "7"}, 60)
    assert has_precise_timing({"retry-after": "3600"}, 60)            # meant: honoured, then the horizon
    assert not has_precise_timing({"retry-after": "60"}, 60)          # the window's length, not time left
    assert not has_precise_timing({"llm_provider-retry-after": "60"}, 60)
    assert not has_precise_timing({}, 60)


def test_next_boundary_follows_the_clock() -> None:
    assert next_boundary_s(NOW, 60) == pytest.approx(20.0)    # 11:06:40 -> 11:07:00
    assert next_boundary_s(NOW + 5, 10) == pytest.approx(5.0)
    assert next_boundary_s(NOW, 10) == pytest.approx(10.0)    # on a boundary: the whole next window


def test_relevant_headers_for_the_log() -> None:
    headers = {"content-type": "application/json", "llm_provider-retry-after": "60",
               "x-ratelimit-remaining-requests": "0", "retry-after": "1"}
    assert relevant(headers) == {"llm_provider-retry-after": "60", "x-ratelimit-remaining-requests": "0",
                                 "retry-after": "1"}
