"""A sampling run: plan what is pending, record the run, feed the engine, finish the run."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio
import duckdb
import structlog

import pipeline
from pipeline.errors import PipelineError
from pipeline.experiment.config import Experiment, ModelConfig
from pipeline.progress import Progress
from pipeline.sampling.batch.driver import BatchDriver, BatchOptions, BatchTally
from pipeline.sampling.budget import Budget, experiment_spent
from pipeline.sampling.engine import Stream, recover_journal, run_engine
from pipeline.sampling.interrupts import Interrupts, until_interrupted
from pipeline.sampling.job import execute_job
from pipeline.sampling.journal import Journal
from pipeline.sampling.lane import Lane, close_lanes, make_lanes
from pipeline.sampling.plan import Cell, DoneIndex, load_done, pending_jobs
from pipeline.store.connection import STOP_GRACE_S, WaitAbandoned, retry_on_disk, stop_waiting
from pipeline.store.writer import RunCounters, Store, hostname, utc_now

log = structlog.get_logger()
T = TypeVar("T")


@dataclass
class RunSummary:
    """What `pipeline sample` prints at the end and returns as its exit status."""

    run_id: str
    status: str              # completed | interrupted | failed | budget_reached
    planned: int
    pending_at_start: int
    stored_done: int = 0
    stored_failed: int = 0
    wall_s: float = 0.0
    requests: int = 0
    tokens: int = 0
    rate_limited: int = 0    # 429 answers
    limit_wait_s: float = 0.0
    limits: list[str] = field(default_factory=list)   # per lane: limits in force and their source
    endpoint_errors: list[str] = field(default_factory=list)
    spent: str = ""          # this run's cost as printed ("$1.23 + unknown (...)")
    budget: Budget | None = None
    batch: BatchTally | None = None   # what the Batch API side did (models sampled by batch)


def models_of(cells: list[Cell]) -> list[ModelConfig]:
    """The distinct models of a plan (cells carry the endpoint actually used, e.g. embedded)."""
    return list({id(cell.model): cell.model for cell in cells}.values())


def lane_workers(lanes: list[Lane], run_id: str, budget: Budget | None) -> list[partial[Any]]:
    """`concurrency` workers per lane, each running one job at a time through its lane."""
    return [partial(execute_job, lane=lane, run_id=run_id, budget=budget)
            for lane in lanes for _ in range(lane.model.concurrency)]


async def sample(experiment: Experiment, cells: list[Cell], store: Store, argv: list[str],
                 max_cost: float | None = None, batch: BatchOptions | None = None) -> RunSummary:
    """Sample the pending jobs of `cells`, online or (models with `batch`) through the Batch API;
    `max_cost` caps what the experiment may cost ($). A Ctrl-C / SIGTERM while the engine runs
    stops it gracefully (status interrupted); at any other point it cancels the run and
    KeyboardInterrupt is raised once the run is marked."""
    return await until_interrupted(partial(_sample, experiment, cells, store, argv, max_cost, batch))


async def _sample(experiment: Experiment, cells: list[Cell], store: Store, argv: list[str],
                  max_cost: float | None, batch: BatchOptions | None, interrupts: Interrupts) -> RunSummary:
    journal = Journal(store.path)
    await _in_thread(recover_journal, journal, store)
    done = await _in_thread(_load_done, store, cells)
    budget = None
    if max_cost is not None:
        budget = Budget(max_cost, spent_before=await _in_thread(_spent, store, experiment.name))
    planned = sum(cell.n for cell in cells)
    result = RunSummary(run_id=uuid.uuid4().hex[:16], status="completed", planned=planned,
                       pending_at_start=planned - done.count, budget=budget)
    progress = Progress(total=result.pending_at_start)
    models = models_of(cells)
    lanes: dict[int, list[Lane]] = {}
    started = time.monotonic()
    run_recorded = False
    try:
        for model in models:   # inside the try: an early Ctrl-C still closes every client session
            lanes[id(model)] = [] if model.batch else make_lanes(model, progress)
        grid = [(*cell.key, cell.n) for cell in cells]
        run_row = _run_row(experiment, cells, result, argv)
        await _in_thread(store.start_run, run_row, grid)
        run_recorded = True
        log.info("run started", run_id=result.run_id, planned=planned, already_done=done.count,
                 pending=result.pending_at_start, db=str(store.path))
        streams = [Stream(pending_jobs([c for c in cells if c.model is model], done),
                          lane_workers(lanes[id(model)], result.run_id, budget)) for model in models if not model.batch]
        if streams:
            engine = await run_engine(streams, store, journal, progress, interrupts, run_id=result.run_id)
            result.status, result.endpoint_errors = engine.status, engine.endpoint_errors
            result.stored_done, result.stored_failed = engine.stored_ok, engine.stored_failed
        batch_cells = [cell for cell in cells if cell.model.batch]
        if batch_cells and result.status == "completed":
            counted = RunCounters(result.run_id, result.stored_done, result.stored_failed)
            driver = BatchDriver(batch_cells, store, result.run_id, progress, batch or BatchOptions(), max_cost,
                                 experiment.name, counted)
            result.batch = await driver.run()
            result.stored_done += result.batch.jobs_done
            result.endpoint_errors += result.batch.endpoint_errors
            if result.batch.status != "completed":
                result.status = result.batch.status
            if budget and result.batch.status == "budget_reached":
                budget.reached = True
        if result.status == "completed" and result.stored_failed and not result.stored_done:
            result.status = "failed"   # every job of the run failed: nothing was sampled
        if result.status == "completed" and budget and budget.reached:
            result.status = "budget_reached"
    except BaseException as exc:
        interrupted = isinstance(exc, (KeyboardInterrupt, anyio.get_cancelled_exc_class(), WaitAbandoned))
        result.status = "interrupted" if interrupted else "failed"
        raise
    finally:
        with anyio.CancelScope(shield=True):
            all_lanes = [lane for model_lanes in lanes.values() for lane in model_lanes]
            await close_lanes(all_lanes)
            result.wall_s = time.monotonic() - started
            result.requests, result.tokens = progress.requests, progress.tokens
            result.spent = progress.spent()
            if budget:   # what this run's calls cost, online and by batch (for the summary)
                budget.spent, budget.reserved = progress.cost_usd, 0.0
            result.rate_limited = progress.rate_limited
            result.limit_wait_s = sum(lane.waited_s() for lane in all_lanes)
            result.limits = [lane.limits_in_force() for lane in all_lanes]
            if run_recorded:
                await anyio.to_thread.run_sync(_finish_run, store, result)
    return result


async def _in_thread(func: Callable[..., T], *args: Any) -> T:
    """A blocking database step, in a thread, run to its end even when a signal cancels the
    run meanwhile (the signal makes its waits for another process's lock give up at once), so
    that what it did is known; the cancellation is raised at the next checkpoint (the first
    thing here: an interrupted run starts no further step)."""
    await anyio.lowlevel.checkpoint()
    with anyio.CancelScope(shield=True):
        value = await anyio.to_thread.run_sync(func, *args)
    return value


def _finish_run(store: Store, result: RunSummary) -> None:
    """Mark the run; if the database cannot be had (stopping while another process holds it,
    a disk that stays unwritable) say so: the next start marks the run `killed`."""
    warned: list[float] = []

    def warn(waited: float, exc: BaseException) -> None:
        if not warned or waited - warned[-1] > 10:
            warned.append(waited)
            log.warning("database not writable; retrying to mark the run", error=str(exc).splitlines()[0])

    try:
        retry_on_disk(lambda: store.finish_run(result.run_id, status=result.status,
                                               timeout_s=STOP_GRACE_S if stop_waiting.is_set() else None),
                      timeout_s=store.lock_timeout_s, what=f"writing {store.path}", on_wait=warn)
    except (PipelineError, duckdb.Error) as exc:
        log.warning("could not mark the run as finished; the next start marks it killed",
                    run_id=result.run_id, status=result.status, error=str(exc).splitlines()[0])


def _spent(store: Store, experiment: str) -> float:
    with store.connect() as con:
        return experiment_spent(con, experiment)


def _load_done(store: Store, cells: list[Cell]) -> DoneIndex:
    with store.connect() as con:
        return load_done(con, cells)


def _run_row(experiment: Experiment, cells: list[Cell], result: RunSummary, argv: list[str]) -> dict[str, Any]:
    models = [{"name": m.name, "base_urls": list(m.base_urls), "api_key_env": m.api_key_env,
               "params": m.params, "rpm": m.rpm, "tpm": m.tpm, "concurrency": m.concurrency,
               "embedded": m.embedded, "batch": m.batch, "cot": m.cot, "send_reasoning_back": m.send_reasoning_back}
              for m in models_of(cells)]
    config = {"branches": list(experiment.branches), "models": models,
              "scenarios": [s.id for s in experiment.scenarios], "variants": experiment.variants}
    return {"run_id": result.run_id, "experiment": experiment.name,
            "experiment_path": str(experiment.path), "config": config, "argv": argv,
            "started_at": utc_now(), "status": "running", "planned": result.planned,
            "pending_at_start": result.pending_at_start, "done": 0, "failed": 0,
            "pipeline_version": pipeline.__version__, "hostname": hostname(), "pid": os.getpid()}
