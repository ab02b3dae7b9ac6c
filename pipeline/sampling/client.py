"""One chat-completion call to an OpenAI-compatible endpoint: a `Completion` or a `CallFailed`.

The client only reports what happened (status, error code, headers, a redacted message);
what to do about it is `retry.decide`'s job.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import orjson

from pipeline.experiment.pricing import cached_prompt_tokens
from pipeline.sampling.ratelimit_headers import Window, windows
from pipeline.sampling.reasoning import NO_REASONING, NativeReasoning, parse_reasoning
from pipeline.sampling.retry import MALFORMED_BODY, QUOTA_CODES, Failure
from pipeline.store.writer import cap_text


class CallFailed(Exception):
    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True, slots=True)
class Completion:
    """One successful chat completion, as the server sent it."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    status: int
    cached_tokens: int | None = None   # prompt tokens served from the provider's cache
    truncated: bool = False   # the text (or the trace) was longer than MAX_TEXT_CHARS and is cut there
    windows: Mapping[str, Window] = field(default_factory=dict)  # the server's budgets after it
    reasoning: NativeReasoning = NO_REASONING   # the model's own trace / reasoning-token count


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
        # sock_read is per read: `total` caps the whole call too (aiohttp's own timer: anyio's
        # fail_after around each call cost ~6% of the event loop's CPU at 2,000 jobs/s)
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s * 2 + 15.0, sock_connect=min(timeout_s, 15.0),
                                          sock_read=timeout_s),
            connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections),
        )

    async def complete(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> Completion:
        """The one boundary for server-derived text: every message and reply leaving this
        method is redacted (the key, any `Bearer` token), whatever path produced it."""
        try:
            result = await self._complete(body, headers)
        except CallFailed as exc:
            failure = exc.failure
            raise CallFailed(replace(failure, message=self.redact(failure.message))) from None
        if self._secret and self._secret in result.text:
            result = replace(result, text=self.redact(result.text))
        trace = result.reasoning.text
        if self._secret and trace and self._secret in trace:
            result = replace(result, reasoning=replace(result.reasoning, text=self.redact(trace)))
        return result

    async def _complete(self, body: dict[str, Any], headers: dict[str, str] | None) -> Completion:
        started = time.monotonic()
        try:
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
            code, message = _error_details(self.redact_bytes(content))
            headers = {name.lower(): value for name, value in response_headers.items()}
            raise CallFailed(Failure(f"HTTP {status}: {self.redact(message)}", status, code, headers))
        try:
            return replace(parse_completion(content, latency), windows=windows(response_headers, time.time()))
        except ValueError:
            pass
        try:  # the message quotes the body: redact it whole before it is cut short
            parse_completion(self.redact_bytes(content), latency)
        except ValueError as exc:
            raise CallFailed(Failure(str(exc), 200, MALFORMED_BODY)) from None
        raise CallFailed(Failure("malformed response body", 200, MALFORMED_BODY))

    def redact(self, text: str) -> str:
        """Servers sometimes echo the key back in errors: never let it reach logs or the DB."""
        return redact(text, self._secret)

    def redact_bytes(self, content: bytes) -> bytes:
        """`content` with the key replaced, before any of it is cut short (a cut key would
        no longer match)."""
        if not self._secret:
            return content
        for form in {self._secret.encode(), orjson.dumps(self._secret)[1:-1]}:
            content = content.replace(form, REDACTED.encode())
        return content

    async def aclose(self) -> None:
        await self._session.close()


REDACTED = "[REDACTED]"
_BEARER = re.compile(r"(bearer\s+)(?!\[REDACTED\])[^\s\"'\\,;}\]]+", re.IGNORECASE)
_MIN_KEY_TAIL = 8   # a cut-off start of the key this long is redacted too


def redact(text: str, secret: str | None) -> str:
    """`text` without the key: the whole key, any `Bearer <token>`, and a start of the key
    left at the end of a text cut short."""
    if secret:
        text = text.replace(secret, REDACTED)
        for size in range(min(len(secret) - 1, len(text)), _MIN_KEY_TAIL - 1, -1):
            if secret[:size] in text:
                text = text.replace(secret[:size], REDACTED)
                break
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


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


def parse_completion(content: bytes, latency: float) -> Completion:
    try:
        data = orjson.loads(content)
        choice = data["choices"][0]
        message = choice["message"]
        if not isinstance(message, dict) or "content" not in message:
            raise KeyError("content")
        usage = data.get("usage") or {}
        cached = cached_prompt_tokens(usage if isinstance(usage, dict) else {})
        text, reasoning = parse_reasoning(message, usage if isinstance(usage, dict) else {})
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"malformed response body ({type(exc).__name__}): {content[:120]!r}") from None
    text, truncated = cap_text(text)
    if reasoning.text:
        trace, cut = cap_text(reasoning.text)
        reasoning, truncated = replace(reasoning, text=trace), truncated or cut
    return Completion(text=text, finish_reason=choice.get("finish_reason"),
                      prompt_tokens=usage.get("prompt_tokens"),
                      completion_tokens=usage.get("completion_tokens"), cached_tokens=cached,
                      latency_s=latency, status=200, truncated=truncated, reasoning=reasoning)
