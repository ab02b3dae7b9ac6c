"""The engine's writer: a commit holds at most MAX_PENDING outcomes, and a full batch is committed
at once instead of waiting for the flush interval (memory per commit stays flat at any speed)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from pipeline.progress import Progress
from pipeline.sampling.engine import FLUSH_INTERVAL_S, MAX_PENDING, PendingBatch, Stream, commit_batch, run_engine
from pipeline.sampling.interrupts import until_interrupted
from pipeline.sampling.journal import Journal, read_segment
from pipeline.store.writer import Outcome, RunCounters, Store
from tests.conftest import query


class CountingStore(Store):
    """The real writer, noting each commit's size and when it happened."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.commits: list[tuple[float, int]] = []

    def write_batch(self, outcomes: Sequence[Outcome], counters: RunCounters | None = None,
                    recovering: bool = False) -> None:
        super().write_batch(outcomes, counters, recovering)
        self.commits.append((time.monotonic(), len(outcomes)))


def job_outcome(seed: int) -> Outcome:
    return Outcome({"jobs": [{"job_id": f"job-{seed}", "run_id": "r1", "scenario": "s", "variant": "v",
                              "branch": "refusal", "model": "m", "seed": seed, "status": "done"}]})


def test_commits_hold_at_most_max_pending_and_a_full_batch_does_not_wait(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "db.duckdb")
    store.initialize()
    jobs = 5 * MAX_PENDING + 7

    async def instant(seed: int) -> Outcome:   # a worker faster than any commit
        return job_outcome(seed)

    async def main() -> None:
        stream: Stream[Any] = Stream(iter(range(jobs)), [instant] * 8)
        await until_interrupted(partial(run_engine, [stream], store, Journal(store.path), Progress(total=jobs)))

    try:
        anyio.run(main)
    finally:
        store.close()
    sizes = [size for _, size in store.commits]
    assert sum(sizes) == jobs and max(sizes) <= MAX_PENDING + 8   # + what the workers had in hand
    full = [moment for moment, size in store.commits if size >= MAX_PENDING]
    assert len(full) >= 4
    gaps = sorted(later - earlier for earlier, later in zip(full, full[1:]))
    assert gaps[len(gaps) // 2] < FLUSH_INTERVAL_S   # full batches go out back to back, not once per interval
    assert query(store.path, "SELECT count(*), count(DISTINCT job_id) FROM jobs") == [(jobs, jobs)]


def job_with_prompt(seed: int, opening: dict[str, Any], bad: bool = False) -> Outcome:
    outcome = job_outcome(seed)
    if bad:   # DuckDB refuses the whole batch over this row; the outcomes are then stored one by one
        outcome.rows["jobs"][0]["seed"] = "not a number"
    outcome.rows["responses"] = [{"job_id": f"job-{seed}", "call": "final", "prompt_id": opening["prompt_id"]}]
    outcome.rows["prompts"] = [dict(opening)]
    return outcome


def test_a_batch_journals_and_stores_each_prompt_once_even_when_its_first_holder_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    store.initialize()
    journal = Journal(store.path)
    opening = {"prompt_id": "p-open", "parent_id": None, "messages": [{"role": "user", "content": "x" * 5000}]}
    pending = PendingBatch(journal)
    for seed in range(5):
        pending.add(job_with_prompt(seed, opening, bad=seed == 0))
    batch, segment = pending.take()
    assert segment is not None
    lines = segment.path.read_bytes().splitlines()
    assert [line.count(b"x" * 5000) for line in lines] == [1, 0, 0, 0, 0]   # the opening journaled once
    try:
        assert commit_batch(store, journal, read_segment(segment.path).outcomes, None, recovering=True)
    finally:
        store.close()
    assert query(store.path, "SELECT count(*) FROM jobs") == [(4,)]   # the refused one is quarantined
    assert query(store.path, "SELECT count(*) FROM prompts") == [(1,)]   # kept though its first holder was refused
    assert query(store.path, "SELECT count(*) FROM responses JOIN prompts USING (prompt_id)") == [(4,)]
