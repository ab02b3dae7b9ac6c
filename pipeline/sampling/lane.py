"""One endpoint lane: a client plus its budgets and concurrency, carrying out `retry.decide`.

Every call of every job to one base URL goes through its lane, so the lane alone paces
them: request and token budgets, adaptive concurrency, pauses after a 429. Whether and when
to retry is decided by the pure function in `retry`.

Limits come from the experiment (configured), the server's headers (advertised) or the
sequence of 429s and successes (inferred). Until one is known the lane sends one request at
a time (slow start). A budget the server reports at 0 holds the lane until its reset. A
limiter found to count in clock-aligned fixed windows (LiteLLM: the calendar minute) is met
by counting our own requests per window and holding at the boundary, not by smooth pacing,
which would probe a full window every interval.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from pipeline.errors import PipelineError
from pipeline.experiment.config import DEFAULT_MAX_TOKENS, ModelConfig
from pipeline.experiment.scenarios import Message
from pipeline.progress import Progress
from pipeline.sampling.client import CallFailed, ChatClient, Completion
from pipeline.sampling.limits import AdaptiveConcurrency, TokenBucket, WindowCounter
from pipeline.sampling.ratelimit_headers import Window, exhausted_for, next_boundary_s, relevant
from pipeline.sampling.reasoning import NO_REASONING, NativeReasoning
from pipeline.sampling.retry import (
    BOUNDARY_MARGIN_S,
    Action,
    Decision,
    EndpointError,
    Failure,
    LimitContext,
    RetryPolicy,
    decide,
)

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
    cached_tokens: int | None = None
    cost_usd: float | None = None      # None: the model has no price (unknown, not 0)
    reasoning: NativeReasoning = NO_REASONING

    @property
    def ok(self) -> bool:
        return self.error is None


class Lane:
    def __init__(self, model: ModelConfig, base_url: str, api_key: str | None, progress: Progress):
        self.model = model
        self.base_url = base_url
        self.progress = progress
        self.client = ChatClient(base_url, api_key, model.timeout_s, model.concurrency)
        self.window_s = model.limit_window_s
        self.window = WindowCounter(self.window_s)
        self.fixed_window = False            # the limiter counts in clock-aligned windows (inferred)
        self.limits: dict[str, float] = {}   # requests/tokens per window in force
        self.sources: dict[str, str] = {}    # ... and where each came from
        self._fresh: set[str] = set()        # limits just put in force: the next answer's remaining seeds them
        self.requests: TokenBucket | None = None
        self.tokens: TokenBucket | None = None
        for kind, value in (("requests", model.rpm), ("tokens", model.tpm)):
            if value:
                self._set_limit(kind, value, "configured")
        self.concurrency = AdaptiveConcurrency(model.concurrency, slow_start=not self.sources)
        self.policy = RetryPolicy(max_attempts=model.max_attempts)
        self.paused_until = 0.0
        self._held_since = 0.0               # start of the current (or last) hold
        self._waited_s = 0.0                 # held time of the holds before it
        self.dead: EndpointError | None = None
        self._died = anyio.Event()   # wakes every wait of the lane when the endpoint stops

    def request_params(self, seed: int) -> dict[str, Any]:
        return request_params(self.model, seed)

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
                decision = decide(failure, attempts, rate_limited_s, self.policy, limits=self._limit_context())
                self._count_failure(failure, decision)
                if decision.action is Action.STOP_ENDPOINT:
                    self._stop(failure.message if not decision.reason else f"{failure.message} ({decision.reason})",
                               failure.status)
                    assert self.dead is not None
                    raise self.dead from None
                if decision.action is Action.FAIL_JOB:
                    message = failure.message if attempts == 1 else f"{decision.reason}: {failure.message}"
                    return CallRecord(None, None, None, None, None, attempts, failure.status, message,
                                      cost_usd=None if self.model.price is None else 0.0)
                if decision.pause_lane:
                    rate_limited_s += decision.delay_s
                    self._pause(decision.delay_s)
                await self._wait_retry(decision.delay_s)
                continue
            cost = call_cost(self.model, result.prompt_tokens, result.cached_tokens, result.completion_tokens)
            self.progress.count_cost(cost)
            return CallRecord(result.text, result.finish_reason, result.prompt_tokens,
                               result.completion_tokens, result.latency_s, attempts, result.status, None,
                               result.truncated, result.cached_tokens, cost, reasoning=result.reasoning)

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
            await self._window_gate()
            self.window.at(time.time()).sent += 1
            self.progress.requests += 1
            try:
                result = await self.client.complete(body, headers)
            except CallFailed as exc:
                if self.tokens and exc.failure.status == 429:
                    self.tokens.refund(reserve)  # rejected requests are not billed
                self._adopt_advertised_limits()
                raise
            self._adopt_advertised_limits()
            self._observe(result.windows)
            used = (result.prompt_tokens or 0) + (result.completion_tokens or 0)
            if self.tokens and used:
                self.tokens.refund(max(0, reserve - used))
            self.progress.tokens += used
            self.window.at(time.time()).ok += 1
            self.concurrency.on_success()
            return result
        finally:
            self.concurrency.release()

    async def _window_gate(self) -> None:
        """Hold while the lane is paused, and in a fixed window whose budget we have used up
        (our own count: the server only tells us with a 429, which LiteLLM counts too)."""
        while True:
            await self._wait_if_paused()
            limit, now = self.limits.get("requests"), time.time()
            if not (self.fixed_window and limit) or self.window.at(now).sent < limit:
                return
            self._hold(next_boundary_s(now, self.window_s) + BOUNDARY_MARGIN_S)

    def _observe(self, found: Mapping[str, Window]) -> None:
        """Use what an answer says of the budgets: a budget at 0 holds the lane until it
        resets; one that does not say when is a window that ends at the next boundary."""
        now = time.time()
        fresh, self._fresh = self._fresh, set()
        for kind, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            remaining = found[kind].remaining if kind in found else None
            if bucket and kind in fresh and remaining:
                bucket.credit(remaining)
        requests = found.get("requests")
        if requests and requests.limit is not None and requests.remaining is not None and requests.reset_s is None:
            # A count with no reset time (LiteLLM): a window that ends at the clock's boundary.
            self._infer_fixed_window("limit and remaining without a reset time")
            self.window.sync(now, requests.limit - requests.remaining)
        exhausted, reset = exhausted_for(found)
        if not exhausted:
            return
        if reset is None:
            self._infer_fixed_window("a budget at 0 with no reset time")
            reset = next_boundary_s(now, self.window_s) + BOUNDARY_MARGIN_S
        log.debug("budget at 0: holding the lane", base_url=self.base_url, hold_s=round(reset, 2))
        self._hold(reset)

    def _limit_context(self) -> LimitContext:
        now = time.time()
        hold = self.paused_until - time.monotonic()
        return LimitContext(now=now, window_s=self.window_s, fixed_window=self.fixed_window,
                            untimed_in_window=self.window.at(now).untimed_429, hold_s=hold if hold > 0 else None)

    def _count_failure(self, failure: Failure, decision: Decision) -> None:
        if failure.status != 429:
            self.progress.errors += 1
            return
        self.progress.rate_limited += 1
        log.debug("429 rate limited", base_url=self.base_url, wait_s=round(decision.delay_s, 2),
                  timing=decision.timing, headers=relevant(failure.headers or {}))
        if decision.timing != "server":
            self.window.at(time.time()).untimed_429 += 1
        if decision.fixed_window:
            self._infer_fixed_window("429s without timing")

    def _infer_fixed_window(self, why: str) -> None:
        """From now on count requests per clock window and hold at its boundary; a request
        limit nobody gave us is what this window let through."""
        if self.fixed_window:
            return
        self.fixed_window = True
        ok = self.window.at(time.time()).ok
        if "requests" not in self.sources and ok > 0:
            self._set_limit("requests", ok, "inferred")
        elif self.sources.get("requests") != "configured":
            self.requests = None   # the window count replaces smooth pacing
        log.info("the endpoint counts requests in fixed windows: holding at window boundaries",
                 base_url=self.base_url, window_s=self.window_s, why=why,
                 requests_per_window=self.limits.get("requests"))

    def _set_limit(self, kind: str, per_window: float, source: str) -> None:
        """Put a limit in force; buckets refill per window (per minute unless configured)."""
        self.limits[kind], self.sources[kind] = per_window, source
        if source == "advertised":   # the server's own budget: its `remaining` may seed ours
            self._fresh.add(kind)
        bucket = TokenBucket(per_window * 60.0 / self.window_s)
        if kind == "tokens":
            self.tokens = bucket
        else:  # a fixed window is met by counting, smooth pacing only if configured
            self.requests = bucket if not self.fixed_window or source == "configured" else None

    def limits_in_force(self) -> str:
        """`base_url: 6 rpm (advertised); fixed windows of 60 s (inferred)` for the summary."""
        per = "per minute" if self.window_s == 60 else f"per {self.window_s:g} s"
        parts = [f"{self.limits[kind]:g} {kind} {per} ({self.sources[kind]})" for kind in self.limits]
        text = f"{self.base_url}: {', '.join(parts) or 'none known'}"
        return text + (f"; fixed windows of {self.window_s:g} s (inferred)" if self.fixed_window else "")

    def _adopt_advertised_limits(self) -> None:
        """Pace by the limits the server announces when the experiment gives none; once any
        limit is known, slow start is over."""
        for kind, flag in (("requests", "rpm"), ("tokens", "tpm")):
            value = self.client.advertised.get(kind)
            if value and self.sources.get(kind, "inferred") == "inferred" and value != self.limits.get(kind):
                self._set_limit(kind, value, "advertised")
                log.info(f"pacing by the server's advertised {kind[:-1]} limit", base_url=self.base_url,
                         **{flag: value})
        if self.sources:
            self.concurrency.widen()

    def _pause(self, wait: float) -> None:
        """Pause the whole lane after a 429: every worker would hit the same empty budget."""
        self.concurrency.on_rate_limited()
        self._hold(wait)
        for bucket in (self.requests, self.tokens):
            if bucket:
                bucket.drain()

    def _hold(self, seconds: float) -> None:
        """Hold every worker of the lane for `seconds`. Held time is counted as it passes
        (a hold the run ends inside counts only up to the end)."""
        now = time.monotonic()
        if now >= self.paused_until:   # a new hold: the previous one is over, count it whole
            self._add_waited(self.paused_until - self._held_since)
            self._held_since = now
        self.paused_until = max(self.paused_until, now + seconds)

    def _add_waited(self, seconds: float) -> None:
        self._waited_s += seconds
        self.progress.limit_wait_s += seconds

    def waited_s(self) -> float:
        """Time the lane was held by limits so far (429s, budgets at 0, window boundaries)."""
        return self._waited_s + max(0.0, min(time.monotonic(), self.paused_until) - self._held_since)

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


def request_params(model: ModelConfig, seed: int) -> dict[str, Any]:
    """Everything sent besides the messages (stored with each response)."""
    params: dict[str, Any] = {"model": model.name, **model.params}
    if model.send_seed:
        params["seed"] = seed
    return params


def call_cost(model: ModelConfig, prompt: int | None, cached: int | None, completion: int | None,
              batch: bool = False) -> float | None:
    """$ of one answered call; None when the model has no price."""
    return None if model.price is None else model.price.cost(prompt, cached, completion, batch)


def estimate_tokens(messages: list[Message]) -> int:
    """~4 characters per token plus per-message overhead: close enough to reserve a budget."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)
