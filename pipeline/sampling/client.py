"""One chat-completion call to an OpenAI-compatible endpoint, and what can go wrong with it.

Errors are sorted by what the caller should do: wait and retry (`RateLimited`), back off
and retry (`TransientError`), give up on this job (`JobError`), or stop using the
endpoint (`EndpointError`: bad key, unknown model, no quota - every job would fail).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import orjson

_ENDPOINT_FATAL_STATUS = {401, 403, 404}


class CallError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


class TransientError(CallError):
    """5xx, connection failures, timeouts, unreadable bodies: retry after a backoff."""


class RateLimited(TransientError):
    """429: retry after the delay the server asked for (None: it did not say)."""

    def __init__(self, message: str, status: int, retry_after_s: float | None):
        super().__init__(message, status)
        self.retry_after_s = retry_after_s


class JobError(CallError):
    """A 4xx that retrying cannot fix (bad request, context too long): the job fails."""


class EndpointError(CallError):
    """Every request to this endpoint would fail the same way: stop using it."""


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    status: int


class ChatClient:
    """Keep-alive HTTP client for one base URL. The API key lives only in its headers.

    aiohttp, not httpx, on this hot path: measured here at 32 concurrent requests,
    httpx's async pool costs ~3 ms of CPU per request (encode/httpx#3215; ~300 req/s on
    two cores), httpx on aiohttp's transport ~0.37 ms, plain aiohttp ~0.11 ms. At zero
    latency the client's CPU is the whole cost of a run, so it decides jobs/s.
    """

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, max_connections: int):
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._secret = api_key
        self.base_url = base_url
        self._url = base_url.rstrip("/") + "/chat/completions"
        self.advertised: dict[str, float] = {}  # per-minute limits the server announces
        self._deadline_s = timeout_s * 2 + 15.0  # sock_read is per read: cap the whole call too
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, 15.0), sock_read=timeout_s),
            connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections),
        )

    async def complete(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> ChatResult:
        started = time.monotonic()
        try:
            with anyio.fail_after(self._deadline_s):
                async with self._session.post(self._url, data=orjson.dumps(body), headers=headers) as response:
                    content = await response.read()
                    status, response_headers = response.status, response.headers
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise TransientError(f"timeout ({type(exc).__name__}) after {time.monotonic() - started:.1f} s") from None
        except aiohttp.ClientError as exc:
            raise TransientError(f"connection error: {self.redact(str(exc)) or type(exc).__name__}") from None
        latency = time.monotonic() - started
        self.advertised = advertised_limits(response_headers) or self.advertised
        if status != 200:
            raise self._classify(status, content, response_headers)
        return _parse_completion(content, latency)

    def _classify(self, status: int, content: bytes, headers: Mapping[str, str]) -> CallError:
        code, message = _error_details(content)
        message = f"HTTP {status}: {self.redact(message)}"
        if status == 429 and code == "insufficient_quota":
            return EndpointError(message, status)
        if status == 429:
            return RateLimited(message, status, retry_after_seconds(headers))
        if status >= 500 or status == 408:
            return TransientError(message, status)
        if status in _ENDPOINT_FATAL_STATUS:
            return EndpointError(message, status)
        return JobError(message, status)

    def redact(self, text: str) -> str:
        """Servers sometimes echo the key back in errors: never let it reach logs or the DB."""
        return text.replace(self._secret, "[REDACTED]") if self._secret else text

    async def aclose(self) -> None:
        await self._session.close()


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


def advertised_limits(headers: Mapping[str, str]) -> dict[str, float]:
    """Per-minute limits from OpenAI-style `x-ratelimit-limit-requests/-tokens` headers."""
    limits = {}
    for kind in ("requests", "tokens"):
        try:
            limits[kind] = float(headers.get(f"x-ratelimit-limit-{kind}") or "")
        except ValueError:
            continue
    return {kind: value for kind, value in limits.items() if value > 0}


def _error_details(content: bytes) -> tuple[str | None, str]:
    try:
        error = orjson.loads(content).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict):
        return error.get("code"), str(error.get("message") or error)
    if isinstance(error, str):
        return None, error
    return None, content[:300].decode("utf-8", "replace").strip() or "(empty body)"


def _parse_completion(content: bytes, latency: float) -> ChatResult:
    try:
        data = orjson.loads(content)
        choice = data["choices"][0]
        text = choice["message"]["content"]
        usage = data.get("usage") or {}
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise TransientError(f"malformed response body ({type(exc).__name__}): {content[:120]!r}", 200) from None
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return ChatResult(text=text, finish_reason=choice.get("finish_reason"),
                      prompt_tokens=usage.get("prompt_tokens"),
                      completion_tokens=usage.get("completion_tokens"),
                      latency_s=latency, status=200)
