"""What servers and gateways say about their rate limits, read from response headers.

Pure functions (the clock is an argument), so each format is a unit test
(tests/test_ratelimit_headers.py). Three families exist in the wild:

- OpenAI (and gateways that copy it, e.g. LiteLLM): `x-ratelimit-limit|remaining|reset-requests`
  and `-tokens`; resets are Go-style durations (`6m0s`, `1.5s`, `20ms`). LiteLLM sends limit and
  remaining only, no reset.
- Anthropic: `anthropic-ratelimit-requests|tokens-limit|remaining|reset`; resets are RFC 3339 times.
- Retry hints on a 429: `retry-after-ms` (OpenAI), `retry-after` (seconds or an HTTP date) and
  LiteLLM's `llm_provider-retry-after` (the upstream's hint, passed on under a prefix; LiteLLM's
  own limiter always says 60, the window length, not the time left in it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

KINDS = ("requests", "tokens")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# Hints that give a precise wait; `retry-after` alone may be a constant (LiteLLM: always 60).
RETRY_HINTS = (("retry-after-ms", 0.001), ("retry-after", 1.0), ("llm_provider-retry-after-ms", 0.001),
               ("llm_provider-retry-after", 1.0))


@dataclass(frozen=True)
class Window:
    """One limit as the server reports it after an answer; None where it says nothing."""

    limit: float | None = None
    remaining: float | None = None
    reset_s: float | None = None   # seconds from the answer until the budget is full again


def parse_duration(text: str) -> float | None:
    """`6m0s` -> 360, `1.5s` -> 1.5, `20ms` -> 0.02, a bare number -> seconds; else None."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def seconds_until(text: str, now: float) -> float | None:
    """An RFC 3339 time (`2026-11-24T04:05:06Z`) or HTTP date, as seconds after `now` (epoch
    seconds; never negative); None if it is neither."""
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The server's requested wait after a 429: the first hint found of `RETRY_HINTS`
    (milliseconds are finer than seconds); an HTTP date counts only when `now` is given."""
    for name, scale in RETRY_HINTS:
        value = headers.get(name)
        if value is None:
            continue
        seconds: float | None
        try:
            seconds = float(value) * scale
        except ValueError:
            seconds = seconds_until(value, now) if now is not None else None
        if seconds is not None and math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def windows(headers: Mapping[str, str], now: float) -> dict[str, Window]:
    """Per kind (`requests`, `tokens`), what the server says of its budget; kinds it says
    nothing about are left out. OpenAI-style headers win over Anthropic's."""
    found: dict[str, Window] = {}
    for kind in KINDS:
        openai = _window(headers.get(f"x-ratelimit-limit-{kind}"), headers.get(f"x-ratelimit-remaining-{kind}"),
                         _maybe(parse_duration, headers.get(f"x-ratelimit-reset-{kind}")))
        anthropic = _window(headers.get(f"anthropic-ratelimit-{kind}-limit"),
                            headers.get(f"anthropic-ratelimit-{kind}-remaining"),
                            _maybe(lambda text: seconds_until(text, now), headers.get(f"anthropic-ratelimit-{kind}-reset")))
        window = openai if openai != Window() else anthropic
        if window != Window():
            found[kind] = window
    return found


def exhausted_for(found: Mapping[str, Window]) -> tuple[bool, float | None]:
    """(whether some budget is at 0, seconds until the last exhausted one resets if every
    exhausted one says when). The lane holds until then: sending earlier only buys a 429."""
    empty = [w for w in found.values() if w.remaining is not None and w.remaining <= 0]
    if not empty:
        return False, None
    resets = [w.reset_s for w in empty]
    return True, (max(r for r in resets if r is not None) if all(r is not None for r in resets) else None)


def has_precise_timing(headers: Mapping[str, str], window_s: float, now: float | None = None) -> bool:
    """Whether a 429 says when to come back: a millisecond hint, a reset time, or a
    retry-after other than the window's length. That length itself (LiteLLM's constant `60`)
    or no hint at all marks a limiter that counts in fixed windows without saying where
    they end; a retry-after far beyond the window (`3600`) is meant and is honoured."""
    if any(name in headers for name in ("retry-after-ms", "llm_provider-retry-after-ms")):
        return True
    if any(f"x-ratelimit-reset-{kind}" in headers or f"anthropic-ratelimit-{kind}-reset" in headers
           for kind in KINDS):
        return True
    hint = retry_after_seconds(headers, now)
    return hint is not None and not is_window_length(hint, window_s)


def is_window_length(seconds: float, window_s: float) -> bool:
    """A hint equal to the window (to the second): a constant, not the time left in it."""
    return abs(seconds - window_s) < 1.0


def next_boundary_s(now: float, window_s: float) -> float:
    """Seconds from `now` (epoch) to the next multiple of `window_s`: where a fixed window
    aligned to the clock (LiteLLM: the calendar minute) starts counting from zero."""
    return window_s - math.fmod(now, window_s)


def relevant(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers that bear on rate limiting, for a debug log line."""
    return {name: value for name, value in headers.items()
            if "ratelimit" in name or "retry-after" in name}


def _window(limit: str | None, remaining: str | None, reset_s: float | None) -> Window:
    return Window(_number(limit), _number(remaining), reset_s)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _maybe(parse: Callable[[str], float | None], text: str | None) -> float | None:
    return None if text is None else parse(text)
