"""A batch's input: one JSONL line per call, `custom_id` = `<job_id>:<call>`, split at the
Batch API's documented limits (50,000 requests and 200 MB per file)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from pipeline.experiment.scenarios import Message
from pipeline.sampling.lane import request_params
from pipeline.sampling.plan import Job

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True)
class BatchLine:
    job: Job
    call: str                 # initial | final
    run_id: str               # the run_id the job's rows are stored under
    line: bytes               # the JSONL line (no newline)
    reserved_usd: float = 0.0

    @property
    def custom_id(self) -> str:
        return custom_id(self.job.job_id, self.call)


def custom_id(job_id: str, call: str) -> str:
    return f"{job_id}:{call}"


def make_line(job: Job, call: str, messages: list[Message], run_id: str, reserved_usd: float = 0.0) -> BatchLine:
    body = {**request_params(job.cell.model, job.seed), "messages": messages}
    line = orjson.dumps({"custom_id": custom_id(job.job_id, call), "method": "POST", "url": ENDPOINT, "body": body})
    return BatchLine(job, call, run_id, line, reserved_usd)


def split(lines: Iterable[BatchLine], max_requests: int = MAX_REQUESTS,
          max_bytes: int = MAX_BYTES) -> list[list[BatchLine]]:
    """Consecutive parts of at most `max_requests` lines and `max_bytes` bytes (newlines counted)."""
    parts: list[list[BatchLine]] = []
    current: list[BatchLine] = []
    size = 0
    for line in lines:
        needed = len(line.line) + 1
        if needed > max_bytes:
            raise ValueError(f"one request of job {line.job.job_id} is {needed} bytes, over the {max_bytes}-byte file limit")
        if current and (len(current) >= max_requests or size + needed > max_bytes):
            parts.append(current)
            current, size = [], 0
        current.append(line)
        size += needed
    if current:
        parts.append(current)
    return parts
