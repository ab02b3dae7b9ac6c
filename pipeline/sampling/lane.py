"""One endpoint lane: a client plus its budgets, concurrency and retry policy.

Every call of every job to one base URL goes through its lane, so the lane alone
decides pacing: request and token budgets, adaptive concurrency, and what to do with
each kind of error (see `client`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from pipeline.sampling.client import ChatClient, EndpointError, JobError, RateLimited, TransientError
from pipeline.experiment.config import ModelConfig
from pipeline.sampling.limits import AdaptiveConcurrency, TokenBucket
from pipeline.progress import Progress
from pipeline.experiment.scenarios import Message

log = structlog.get_logger()
MAX_BACKOFF_S = 60.0
MAX_RATE_LIMIT_WAIT_S = 900.0   # 429s are waited out this long per call before giving up
DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """The last attempt of one call: a response, or the error that ended it."""

    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float | None
    attempts: int
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


class Lane:
    def __init__(self, model: ModelConfig, base_url: str, api_key: str | None, progress: Progress):
        self.model = model
        self.base_url = base_url
        self.progress = progress
        self.client = ChatClient(base_url, api_key, model.timeout_s, model.concurrency)
        self.requests = TokenBucket(model.rpm) if model.rpm else None
        self.tokens = TokenBucket(model.tpm) if model.tpm else None
        self.concurrency = AdaptiveConcurrency(model.concurrency)
        self.paused_until = 0.0
        self.dead: EndpointError | None = None

    def request_params(self, seed: int) -> dict[str, Any]:
        """Everything sent besides the messages (stored with each response)."""
        params: dict[str, Any] = {"model": self.model.name, **self.model.params}
        if self.model.send_seed:
            params["seed"] = seed
        return params

    async def call(self, messages: list[Message], seed: int, headers: dict[str, str]) -> CallOutcome:
        """One call with retries. Raises EndpointError when the endpoint itself is unusable."""
        body = {**self.request_params(seed), "messages": messages}
        reserve = estimate_tokens(messages) + int(self.model.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        attempts = 0
        rate_limited_s = 0.0
        last_error = "no attempt made"
        last_status: int | None = None
        while True:
            attempts += 1
            await self._wait_if_paused()
            try:
                result = await self._send(body, headers, reserve)
            except RateLimited as exc:
                wait = exc.retry_after_s if exc.retry_after_s is not None else _backoff(attempts)
                self._on_rate_limited(wait)
                rate_limited_s += wait
                last_error, last_status = exc.message, exc.status
                if rate_limited_s > MAX_RATE_LIMIT_WAIT_S:
                    break
                await self._wait_retry(wait)
                continue
            except TransientError as exc:
                self.progress.errors += 1
                last_error, last_status = exc.message, exc.status
                if attempts >= self.model.max_attempts:
                    break
                await self._wait_retry(_backoff(attempts))
                continue
            except JobError as exc:
                self.progress.errors += 1
                return CallOutcome(None, None, None, None, None, attempts, exc.status, exc.message)
            return CallOutcome(result.text, result.finish_reason, result.prompt_tokens,
                               result.completion_tokens, result.latency_s, attempts, result.status, None)
        return CallOutcome(None, None, None, None, None, attempts, last_status,
                           f"gave up after {attempts} attempts: {last_error}")

    async def _send(self, body: dict[str, Any], headers: dict[str, str], reserve: int) -> Any:
        await self.concurrency.acquire()
        try:
            if self.requests:
                await self.requests.acquire(1)
            if self.tokens:
                await self.tokens.acquire(reserve)
            self.progress.requests += 1
            try:
                result = await self.client.complete(body, headers)
            except EndpointError as exc:
                self.dead = exc
                raise
            except RateLimited:
                if self.tokens:
                    self.tokens.refund(reserve)  # rejected requests are not billed
                self._adopt_advertised_limits()
                raise
            self._adopt_advertised_limits()
            used = (result.prompt_tokens or 0) + (result.completion_tokens or 0)
            if self.tokens and used:
                self.tokens.refund(max(0, reserve - used))
            self.progress.tokens += used
            self.concurrency.on_success()
            return result
        finally:
            self.concurrency.release()

    def _adopt_advertised_limits(self) -> None:
        """Pace by the limits the server announces when the experiment gives none."""
        advertised = self.client.advertised
        if self.requests is None and "requests" in advertised:
            self.requests = TokenBucket(advertised["requests"])
            log.info("pacing by the server's advertised request limit", base_url=self.base_url,
                     rpm=advertised["requests"])
        if self.tokens is None and "tokens" in advertised:
            self.tokens = TokenBucket(advertised["tokens"])
            log.info("pacing by the server's advertised token limit", base_url=self.base_url,
                     tpm=advertised["tokens"])

    def _on_rate_limited(self, wait: float) -> None:
        """Pause the whole lane: every worker would hit the same empty budget."""
        self.progress.rate_limited += 1
        self.concurrency.on_rate_limited()
        self.paused_until = max(self.paused_until, time.monotonic() + wait)
        for bucket in (self.requests, self.tokens):
            if bucket:
                bucket.drain()

    async def _wait_if_paused(self) -> None:
        while (delay := self.paused_until - time.monotonic()) > 0:
            await anyio.sleep(delay)

    async def _wait_retry(self, seconds: float) -> None:
        self.progress.retrying += 1
        try:
            await anyio.sleep(seconds)
        finally:
            self.progress.retrying -= 1

    async def aclose(self) -> None:
        await self.client.aclose()


def _backoff(attempt: int) -> float:
    """Full-jitter exponential backoff: spreads retries so they do not arrive in waves."""
    return random.uniform(0.5, 1.0) * min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1))


def estimate_tokens(messages: list[Message]) -> int:
    """~4 characters per token plus per-message overhead: close enough to reserve a budget."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)
