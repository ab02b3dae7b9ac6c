"""`pipeline grade`: the one grading driver, for every judge.

Grading never resamples and never touches another judge's (or version's) labels: rows are
keyed by (job_id, judge, judge_version). Ungraded responses are streamed a page at a time
through the engine, so grading gets the same journal, resume, progress line and Ctrl-C
handling as sampling, and a sampling run on the same database keeps going.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from functools import partial
from typing import Any

import anyio
import structlog

from pipeline.experiment.scenarios import Scenario
from pipeline.grading.evaluate import Labelled
from pipeline.grading.judge import UNCLEAR, FinalResponse, Judge, judgment_row
from pipeline.progress import Progress
from pipeline.sampling.engine import EngineTally, Stream, recover_journal, run_engine
from pipeline.sampling.interrupts import Interrupts, until_interrupted
from pipeline.sampling.journal import Journal
from pipeline.store.connection import WaitAbandoned
from pipeline.store.queries import sql
from pipeline.store.writer import Outcome, Store

log = structlog.get_logger()
PAGE = 1000


async def grade(store: Store, judge: Judge, scenarios: dict[str, Scenario], progress: Progress) -> EngineTally:
    """Label every final response `judge` (this version) has not labelled yet. Ctrl-C while the
    engine runs stores what is graded (status interrupted); before it, KeyboardInterrupt."""
    return await until_interrupted(partial(_grade, store, judge, scenarios, progress))


async def _grade(store: Store, judge: Judge, scenarios: dict[str, Scenario], progress: Progress,
                 interrupts: Interrupts) -> EngineTally:
    journal = Journal(store.path)
    await anyio.to_thread.run_sync(recover_journal, journal, store)
    await anyio.to_thread.run_sync(_warn_unknown_scenarios, store, scenarios)
    progress.total = await anyio.to_thread.run_sync(count_ungraded, store, judge, scenarios)
    log.info("grading started", judge=judge.name, version=judge.version, ungraded=progress.total)
    workers = [partial(judge_to_outcome, judge=judge) for _ in range(judge.concurrency)]
    return await run_engine([Stream(ungraded(store, judge, scenarios), workers)], store, journal, progress, interrupts)


async def judge_to_outcome(response: FinalResponse, judge: Judge) -> Outcome:
    judgment = await judge.judge(response)
    if judgment is None:
        return Outcome({}, failed=True)
    return Outcome({"judgments": [judgment_row(response.job_id, judge.name, judge.version, judgment)]})


async def ungraded(store: Store, judge: Judge, scenarios: dict[str, Scenario]) -> AsyncIterator[FinalResponse]:
    """Responses this judge version has not labelled, a page per short connection, read in a
    thread: the event loop keeps serving the workers (and Ctrl-C) while a page waits for the
    database, e.g. for another process's batch or this process's commit."""
    after = ""
    while True:
        try:
            rows = await anyio.to_thread.run_sync(_ungraded_page, store, judge, scenarios, after)
        except WaitAbandoned:   # stopping while another process holds the database: the rest stays ungraded
            return
        if not rows:
            return
        for job_id, scenario_id, text, finish_reason, reasoning_text, reasoning_tokens in rows:
            yield FinalResponse(job_id, scenarios[scenario_id], text or "", finish_reason,
                                reasoning_text, reasoning_tokens)
        after = rows[-1][0]


def _ungraded_page(store: Store, judge: Judge, scenarios: dict[str, Scenario], after: str) -> list[tuple[Any, ...]]:
    params = {"judge": judge.name, "version": judge.version, "scenarios": list(scenarios), "limit": PAGE,
              "after": after}
    with store.connect() as con:
        return con.execute(sql("ungraded_page"), params).fetchall()


def count_ungraded(store: Store, judge: Judge, scenarios: dict[str, Scenario]) -> int:
    params = {"judge": judge.name, "version": judge.version, "scenarios": list(scenarios)}
    with store.connect() as con:
        ((count,),) = con.execute(sql("ungraded_count"), params).fetchall()
    return int(count)


def _warn_unknown_scenarios(store: Store, scenarios: dict[str, Scenario]) -> None:
    with store.connect() as con:
        unknown = con.execute(sql("unknown_scenarios"), {"scenarios": list(scenarios)}).fetchall()
    for (scenario_id,) in unknown:
        log.warning("not graded: no scenario file for these responses", scenario=scenario_id)


async def predict(judge: Judge, items: list[Labelled]) -> list[dict[str, Any]]:
    """Label hand-labelled fixtures directly (no database); no answer counts as 'unclear'."""
    predictions: list[dict[str, Any]] = [{}] * len(items)
    limiter = anyio.Semaphore(judge.concurrency)

    async def one(index: int, item: Labelled) -> None:
        async with limiter:
            judgment = await judge.judge(FinalResponse(item.id, item.scenario, item.text, item.finish_reason))
        predictions[index] = (asdict(judgment) if judgment else
                              {"output_label": UNCLEAR, "cot_present": "?", "cot_label": UNCLEAR})

    async with anyio.create_task_group() as tg:
        for index, item in enumerate(items):
            tg.start_soon(one, index, item)
    return predictions
