"""Run one job's calls through a lane and turn them into database rows.

`sampled` jobs make two calls (the initial response, then the final one with the
trigger appended); `refusal`/`rebuttal` jobs one, the fixed text standing in as the
initial response.
"""

from __future__ import annotations

from typing import Any

import structlog

from pipeline.experiment.scenarios import Message
from pipeline.sampling.lane import CallRecord, Lane
from pipeline.sampling.plan import Job
from pipeline.sampling.reasoning import assistant_turn
from pipeline.store.writer import Outcome, utc_now

log = structlog.get_logger()


async def execute_job(job: Job, lane: Lane, run_id: str) -> Outcome:
    conversation = job.cell.conversation
    responses: list[dict[str, Any]] = []
    initial: str | Message | None = job.fixed_response()
    if initial is None:
        messages = conversation.opening()
        outcome = await _call(lane, job, "initial", messages)
        responses.append(_response_row(job, lane, run_id, "initial", messages, outcome))
        if not outcome.ok:
            return _outcome(job, run_id, f"initial call: {outcome.error}", responses)
        initial = assistant_turn(outcome.text or "", outcome.reasoning, lane.model.send_reasoning_back)
    messages = conversation.closing(initial)
    outcome = await _call(lane, job, "final", messages)
    responses.append(_response_row(job, lane, run_id, "final", messages, outcome))
    error = None if outcome.ok else f"final call: {outcome.error}"
    return _outcome(job, run_id, error, responses)


def _outcome(job: Job, run_id: str, error: str | None, responses: list[dict[str, Any]]) -> Outcome:
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


def _response_row(job: Job, lane: Lane, run_id: str, call: str, messages: list[Message],
                  outcome: CallRecord) -> dict[str, Any]:
    return {"job_id": job.job_id, "run_id": run_id, "call": call, "model": lane.model.name,
            "base_url": lane.base_url, "request_messages": messages,
            "request_params": lane.request_params(job.seed),
            "response_text": outcome.text, "finish_reason": outcome.finish_reason,
            "prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "latency_ms": None if outcome.latency_s is None else round(outcome.latency_s * 1000, 2),
            "attempts": outcome.attempts, "http_status": outcome.status, "error": outcome.error,
            "truncated": outcome.truncated, "created_at": utc_now(),
            "reasoning_text": outcome.reasoning.text, "reasoning_field": outcome.reasoning.field,
            "reasoning_tokens": outcome.reasoning.tokens}
