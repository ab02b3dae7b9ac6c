"""One endpoint lane: a client plus its budgets and concurrency, carrying out `retry.decide`.

Every call of every job to one base URL goes through its lane, so the lane alone paces
them: request and token budgets, adaptive concurrency, pauses after a 429. Whether and when
to retry is decided by the pure function in `retry`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from pipeline.errors import PipelineError
from pipeline.experiment.config import DEFAULT_MAX_TOKENS, ModelConfig
from pipeline.experiment.scenarios import Message
from pipeline.progress import Progress
from pipeline.sampling.client import CallFailed, ChatClient, Completion
from pipeline.sampling.limits import AdaptiveConcurrency, TokenBucket
from pipeline.sampling.retry import Action, EndpointError, RetryPolicy, decide

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as stored (a `responses` row): its last attempt's answer, or the error that
    ended it, and how many attempts it took."""

    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float | None
    attempts: int
    status: int | None
    error: str | None
    truncated: bool = False

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
        self.policy = RetryPolicy(max_attempts=model.max_attempts)
        self.paused_until = 0.0
        self.dead: EndpointError | None = None
        self._died = anyio.Event()   # wakes every wait of the lane when the endpoint stops

    def request_params(self, seed: int) -> dict[str, Any]:
        """Everything sent besides the messages (stored with each response)."""
        params: dict[str, Any] = {"model": self.model.name, **self.model.params}
        if self.model.send_seed:
            params["seed"] = seed
        return params

    async def call(self, messages: list[Message], seed: int, headers: dict[str, str]) -> CallRecord:
        """One call with retries. Raises EndpointError when the endpoint itself is unusable."""
        body = {**self.request_params(seed), "messages": messages}
        reserve = estimate_tokens(messages) + int(self.model.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        attempts, rate_limited_s = 0, 0.0
        while True:
            attempts += 1
            await self._wait_if_paused()
            try:
                result = await self._send(body, headers, reserve)
            except CallFailed as exc:
                failure = exc.failure
                decision = decide(failure, attempts, rate_limited_s, self.policy)
                self._count_failure(failure.status)
                if decision.action is Action.STOP_ENDPOINT:
                    self._stop(failure.message if not decision.reason else f"{failure.message} ({decision.reason})",
                               failure.status)
                    assert self.dead is not None
                    raise self.dead from None
                if decision.action is Action.FAIL_JOB:
                    message = failure.message if attempts == 1 else f"{decision.reason}: {failure.message}"
                    return CallRecord(None, None, None, None, None, attempts, failure.status, message)
                if decision.pause_lane:
                    rate_limited_s += decision.delay_s
                    self._pause(decision.delay_s)
                await self._wait_retry(decision.delay_s)
                continue
            return CallRecord(result.text, result.finish_reason, result.prompt_tokens,
                               result.completion_tokens, result.latency_s, attempts, result.status, None,
                               result.truncated)

    def _stop(self, message: str, status: int | None) -> None:
        """The endpoint is unusable: every call of the lane, in flight or queued, stops."""
        if self.dead is None:
            self.dead = EndpointError(f"{self.base_url}: {message}", status)
            self._died.set()

    async def _send(self, body: dict[str, Any], headers: dict[str, str], reserve: int) -> Completion:
        if self.dead:
            raise self.dead
        await self.concurrency.acquire()
        try:
            if self.requests:
                await self.requests.acquire(1)
            if self.tokens:
                await self.tokens.acquire(reserve)
            self.progress.requests += 1
            try:
                result = await self.client.complete(body, headers)
            except CallFailed as exc:
                if self.tokens and exc.failure.status == 429:
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

    def _count_failure(self, status: int | None) -> None:
        if status == 429:
            self.progress.rate_limited += 1
        else:
            self.progress.errors += 1

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

    def _pause(self, wait: float) -> None:
        """Pause the whole lane after a 429: every worker would hit the same empty budget."""
        self.concurrency.on_rate_limited()
        self.paused_until = max(self.paused_until, time.monotonic() + wait)
        for bucket in (self.requests, self.tokens):
            if bucket:
                bucket.drain()

    async def _wait_if_paused(self) -> None:
        while (delay := self.paused_until - time.monotonic()) > 0 and not self.dead:
            with anyio.move_on_after(delay):
                await self._died.wait()
        if self.dead:
            raise self.dead

    async def _wait_retry(self, seconds: float) -> None:
        self.progress.retrying += 1
        try:
            with anyio.move_on_after(seconds):
                await self._died.wait()
        finally:
            self.progress.retrying -= 1
        if self.dead:
            raise self.dead

    async def aclose(self) -> None:
        await self.client.aclose()


def resolve_api_key(model: ModelConfig) -> str | None:
    """Keys come from the environment only, and are never logged or stored."""
    if not model.api_key_env:
        return None
    key = os.environ.get(model.api_key_env)
    if not key:
        raise PipelineError(f"model {model.name!r}: environment variable {model.api_key_env} is not set")
    return key


def make_lanes(model: ModelConfig, progress: Progress) -> list[Lane]:
    """One lane per base URL of the model."""
    key = resolve_api_key(model)
    return [Lane(model, url, key, progress) for url in model.base_urls]


async def close_lanes(lanes: list[Lane]) -> None:
    for lane in lanes:
        await lane.aclose()


def estimate_tokens(messages: list[Message]) -> int:
    """~4 characters per token plus per-message overhead: close enough to reserve a budget."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)
