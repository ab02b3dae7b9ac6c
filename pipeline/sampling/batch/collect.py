"""A finished batch's output and error files into the same `responses`/`jobs` rows online
calls make. Results are joined to requests on `custom_id`, never on order. A request with no
answer (a line in the error file, one an expired or cancelled batch never ran, or an answer
that cannot be read) stores nothing: its job stays pending and the next `sample --batch`
submits it again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from pipeline.sampling.batch.ledger import BatchRecord
from pipeline.sampling.client import parse_completion, redact
from pipeline.sampling.job import job_outcome, request_prompts, response_row
from pipeline.sampling.lane import CallRecord, call_cost
from pipeline.sampling.plan import Job
from pipeline.store.writer import Outcome


@dataclass
class Collected:
    outcomes: list[Outcome] = field(default_factory=list)
    answered: int = 0               # requests with a usable answer
    unanswered: int = 0             # error lines, never-run lines, unreadable answers
    jobs_done: int = 0
    costs: list[float | None] = field(default_factory=list)   # per answered call; None: no price
    errors: dict[str, int] = field(default_factory=dict)   # why requests came back unanswered


def results_by_id(*files: bytes) -> dict[str, dict[str, Any]]:
    """custom_id -> result line, from output and error JSONL files (the first answer wins)."""
    found: dict[str, dict[str, Any]] = {}
    for content in files:
        for raw in content.splitlines():
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("custom_id"), str):
                found.setdefault(entry["custom_id"], entry)
    return found


def collect(record: BatchRecord, requests: list[tuple[str, str, str, str, str]], results: dict[str, dict[str, Any]],
            jobs: Mapping[str, Job], is_done: Callable[[Job], bool], secret: str | None) -> Collected:
    """Rows for every answered request of `record` whose job is planned and not yet done."""
    collected = Collected()
    for custom_id, job_id, call, run_id, line in requests:
        job = jobs.get(job_id)
        if job is None or is_done(job):
            continue
        answer, why = _answer(results.get(custom_id), secret)
        if answer is None:
            collected.unanswered += 1
            collected.errors[why] = collected.errors.get(why, 0) + 1
            continue
        model = job.cell.model
        cost = call_cost(model, answer.prompt_tokens, answer.cached_tokens, answer.completion_tokens, batch=True)
        text = redact(answer.text, secret) if secret and secret in answer.text else answer.text
        reasoning = answer.reasoning   # the trace is server-derived text too: redacted like online calls'
        if secret and reasoning.text and secret in reasoning.text:
            reasoning = replace(reasoning, text=redact(reasoning.text, secret))
        record_ = CallRecord(text, answer.finish_reason, answer.prompt_tokens, answer.completion_tokens,
                             None, 1, 200, None, answer.truncated, answer.cached_tokens, cost, reasoning=reasoning)
        used = request_prompts(job, orjson.loads(line)["body"]["messages"])
        row = {**response_row(job, model, record.base_url, run_id, call, used[-1], record_),
               "batch_id": record.batch_id}
        collected.answered += 1
        collected.costs.append(cost)
        if call == "initial":
            collected.outcomes.append(Outcome({"responses": [row], "prompts": [prompt.row() for prompt in used]}))
        else:
            collected.outcomes.append(job_outcome(job, run_id, None, [row], used))
            collected.jobs_done += 1
    return collected


def _answer(entry: dict[str, Any] | None, secret: str | None) -> tuple[Any, str]:
    """The completion of a result line, or None and why not."""
    if entry is None:
        return None, "no result line (the batch never ran it)"
    response, error = entry.get("response"), entry.get("error")
    if isinstance(error, dict):
        return None, redact(f"{error.get('code')}: {error.get('message')}", secret)[:200]
    if not isinstance(response, dict) or response.get("status_code") != 200:
        status = response.get("status_code") if isinstance(response, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        message = (body or {}).get("error", {}).get("message") if isinstance(body, dict) else None
        return None, redact(f"HTTP {status}: {message or 'no answer'}", secret)[:200]
    try:
        return parse_completion(orjson.dumps(response.get("body")), 0.0), ""
    except ValueError as exc:
        return None, redact(str(exc), secret)[:200]
