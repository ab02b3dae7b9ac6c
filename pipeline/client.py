"""One chat-completion call to an OpenAI-compatible endpoint, and what can go wrong with it.

Errors are sorted by what the caller should do: wait and retry (`RateLimited`), back off
and retry (`TransientError`), give up on this job (`JobError`), or stop using the
endpoint (`EndpointError`: bad key, unknown model, no quota - every job would fail).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
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
    """Keep-alive HTTP client for one base URL. The API key lives only in its headers."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, max_connections: int):
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._secret = api_key
        self.base_url = base_url
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 15.0), pool=None),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
        )

    async def complete(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> ChatResult:
        started = time.monotonic()
        try:
            response = await self._http.post("/chat/completions", content=orjson.dumps(body), headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientError(f"timeout ({type(exc).__name__}) after {time.monotonic() - started:.1f} s") from None
        except httpx.TransportError as exc:
            raise TransientError(f"connection error: {self.redact(str(exc)) or type(exc).__name__}") from None
        latency = time.monotonic() - started
        if response.status_code != 200:
            raise self._classify(response)
        return _parse_completion(response.content, latency)

    def _classify(self, response: httpx.Response) -> CallError:
        status = response.status_code
        code, message = _error_details(response.content)
        message = f"HTTP {status}: {self.redact(message)}"
        if status == 429 and code == "insufficient_quota":
            return EndpointError(message, status)
        if status == 429:
            return RateLimited(message, status, retry_after_seconds(response.headers))
        if status >= 500 or status == 408:
            return TransientError(message, status)
        if status in _ENDPOINT_FATAL_STATUS:
            return EndpointError(message, status)
        return JobError(message, status)

    def redact(self, text: str) -> str:
        """Servers sometimes echo the key back in errors: never let it reach logs or the DB."""
        return text.replace(self._secret, "[REDACTED]") if self._secret else text

    async def aclose(self) -> None:
        await self._http.aclose()


def retry_after_seconds(headers: httpx.Headers) -> float | None:
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
