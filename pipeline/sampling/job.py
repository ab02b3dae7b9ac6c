"""Run one job's calls through a lane and turn them into database rows.

`sampled` jobs make two calls (the initial response, then the final one with the
trigger appended); `refusal`/`rebuttal` jobs one, the fixed text standing in as the
initial response.
"""

from __future__ import annotations

from typing import Any

import structlog

from pipeline.experiment.config import ModelConfig
from pipeline.experiment.scenarios import Message
from pipeline.sampling.budget import Budget, job_cost_bound
from pipeline.sampling.lane import CallRecord, Lane, request_params
from pipeline.sampling.plan import Job
from pipeline.sampling.reasoning import assistant_turn
from pipeline.store.writer import Outcome, utc_now

log = structlog.get_logger()


async def execute_job(job: Job, lane: Lane, run_id: str, budget: Budget | None = None) -> Outcome:
    """One job; under a budget its upper bound is reserved first and settled at its real cost."""
    if budget is None:
        return await _run_job(job, lane, run_id)
    bound = job_cost_bound(job, lane.model)
    budget.reserve(bound)
    cost = bound   # a job that ends in an exception may have spent its calls: count them all
    try:
        outcome = await _run_job(job, lane, run_id)
        cost = sum(row["cost_usd"] or 0.0 for row in outcome.rows["responses"])
        return outcome
    finally:
        budget.settle(bound, cost)


async def _run_job(job: Job, lane: Lane, run_id: str) -> Outcome:
    conversation = job.cell.conversation
    responses: list[dict[str, Any]] = []
    initial: str | Message | None = job.fixed_response()
    if initial is None:
        messages = conversation.opening()
        outcome = await _call(lane, job, "initial", messages)
        responses.append(response_row(job, lane.model, lane.base_url, run_id, "initial", messages, outcome))
        if not outcome.ok:
            return job_outcome(job, run_id, f"initial call: {outcome.error}", responses)
        initial = assistant_turn(outcome.text or "", outcome.reasoning, lane.model.send_reasoning_back)
    messages = conversation.closing(initial)
    outcome = await _call(lane, job, "final", messages)
    responses.append(response_row(job, lane.model, lane.base_url, run_id, "final", messages, outcome))
    error = None if outcome.ok else f"final call: {outcome.error}"
    return job_outcome(job, run_id, error, responses)


def job_outcome(job: Job, run_id: str, error: str | None, responses: list[dict[str, Any]]) -> Outcome:
    if error:
        log.warning("job failed", job_id=job.job_id, scenario=job.cell.scenario.id, branch=job.cell.branch,
                    seed=job.seed, error=error)
    return Outcome({"jobs": [_job_row(job, run_id, error)], "responses": responses}, failed=error is not None)


async def _call(lane: Lane, job: Job, call: str, messages: list[Message]) -> CallRecord:
    # Correlation headers let server-side logs (and the test server) tie requests to jobs.
    headers = {"X-Pipeline-Job-Id": job.job_id, "X-Pipeline-Call": call}
    return await lane.call(messages, job.seed, headers)


def _job_row(job: Job, run_id: str, error: str | None) -> dict[str, Any]:
    cell = job.cell
    return {"job_id": job.job_id, "run_id": run_id, "scenario": cell.scenario.id,
            "scenario_hash": cell.scenario.content_hash, "variant": cell.variant,
            "branch": cell.branch, "phrasing": job.phrasing, "model": cell.model.name,
            "seed": job.seed, "status": "failed" if error else "done", "error": error,
            "finished_at": utc_now()}


def response_row(job: Job, model: ModelConfig, base_url: str, run_id: str, call: str, messages: list[Message],
                 outcome: CallRecord) -> dict[str, Any]:
    return {"job_id": job.job_id, "run_id": run_id, "call": call, "model": model.name,
            "base_url": base_url, "request_messages": messages,
            "request_params": request_params(model, job.seed),
            "response_text": outcome.text, "finish_reason": outcome.finish_reason,
            "prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "latency_ms": None if outcome.latency_s is None else round(outcome.latency_s * 1000, 2),
            "attempts": outcome.attempts, "http_status": outcome.status, "error": outcome.error,
            "truncated": outcome.truncated, "cached_tokens": outcome.cached_tokens, "cost_usd": outcome.cost_usd,
            "created_at": utc_now(), "reasoning_text": outcome.reasoning.text,
            "reasoning_field": outcome.reasoning.field, "reasoning_tokens": outcome.reasoning.tokens}
