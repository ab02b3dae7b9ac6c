"""One chat-completion call to an OpenAI-compatible endpoint: a `ChatResult` or a `CallFailed`.

The client only reports what happened (status, error code, headers, a redacted message);
what to do about it is `retry.decide`'s job.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import orjson

from pipeline.sampling.retry import MALFORMED_BODY, QUOTA_CODES, Failure


class CallFailed(Exception):
    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


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
        except TimeoutError as exc:
            elapsed = time.monotonic() - started
            raise CallFailed(Failure(f"timeout ({type(exc).__name__}) after {elapsed:.1f} s")) from None
        except aiohttp.ClientError as exc:
            raise CallFailed(Failure(f"connection error: {self.redact(str(exc)) or type(exc).__name__}")) from None
        latency = time.monotonic() - started
        self.advertised = advertised_limits(response_headers) or self.advertised
        if status != 200:
            code, message = _error_details(content)
            headers = {name.lower(): value for name, value in response_headers.items()}
            raise CallFailed(Failure(f"HTTP {status}: {self.redact(message)}", status, code, headers))
        try:
            return _parse_completion(content, latency)
        except ValueError as exc:
            raise CallFailed(Failure(self.redact(str(exc)), 200, MALFORMED_BODY)) from None

    def redact(self, text: str) -> str:
        """Servers sometimes echo the key back in errors: never let it reach logs or the DB."""
        return text.replace(self._secret, "[REDACTED]") if self._secret else text

    async def aclose(self) -> None:
        await self._session.close()


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
        codes = [str(c) for c in (error.get("code"), error.get("type")) if c]
        code = next((c for c in codes if c in QUOTA_CODES), codes[0] if codes else None)  # quota wins
        return code, str(error.get("message") or error)
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
        raise ValueError(f"malformed response body ({type(exc).__name__}): {content[:120]!r}") from None
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return ChatResult(text=text, finish_reason=choice.get("finish_reason"),
                      prompt_tokens=usage.get("prompt_tokens"),
                      completion_tokens=usage.get("completion_tokens"),
                      latency_s=latency, status=200)
