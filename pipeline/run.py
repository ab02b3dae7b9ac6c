"""Orchestrate a sampling run: producers, per-endpoint workers, one writer, progress.

    producer (per model) --jobs--> workers (per lane, `concurrency` each) --outcomes--> writer

Ctrl-C / SIGTERM cancel producers and workers only; the writer then drains and stores
every finished job before the run is marked interrupted. In-flight calls are dropped
and simply stay pending for the next run.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import ObjectReceiveStream, ObjectSendStream

import pipeline
from pipeline.client import EndpointError
from pipeline.config import Experiment, ModelConfig
from pipeline.execute import execute_job
from pipeline.journal import Journal, Segment, read_segment
from pipeline.lane import Lane
from pipeline.plan import Cell, DoneIndex, Job, pending_jobs
from pipeline.progress import Progress, ProgressReporter
from pipeline.store import JobOutcome, Store, hostname, utc_now
from pipeline.errors import PipelineError

log = structlog.get_logger()
FLUSH_INTERVAL_S = 0.5      # commit cadence; between commits readers can open the file
MAX_PENDING = 20_000        # outcomes waiting for a commit before workers are held back
STREAM_BUFFER = 256


@dataclass
class RunResult:
    run_id: str
    status: str              # completed | interrupted | failed
    planned: int
    pending_at_start: int
    stored_done: int = 0
    stored_failed: int = 0
    wall_s: float = 0.0
    requests: int = 0
    tokens: int = 0
    endpoint_errors: list[str] = field(default_factory=list)


def resolve_api_key(model: ModelConfig) -> str | None:
    """Keys come from the environment only, and are never logged or stored."""
    if not model.api_key_env:
        return None
    key = os.environ.get(model.api_key_env)
    if not key:
        raise PipelineError(f"model {model.name!r}: environment variable {model.api_key_env} is not set")
    return key


async def sample(experiment: Experiment, cells: list[Cell], store: Store, argv: list[str]) -> RunResult:
    journal = Journal(store.path)
    await anyio.to_thread.run_sync(recover_journal, journal, store)
    done = await anyio.to_thread.run_sync(store.load_done, cells)
    planned = sum(cell.n for cell in cells)
    result = RunResult(run_id=uuid.uuid4().hex[:16], status="completed", planned=planned,
                       pending_at_start=planned - done.count)
    progress = Progress(total=result.pending_at_start)
    await anyio.to_thread.run_sync(store.start_run, _run_row(experiment, cells, result, argv), cells)
    log.info("run started", run_id=result.run_id, planned=planned, already_done=done.count,
             pending=result.pending_at_start, db=str(store.path))
    lanes = [Lane(model, url, resolve_api_key(model), progress)
             for model in models_of(cells) for url in model.base_urls]
    started = time.monotonic()
    try:
        await _run(cells, done, lanes, store, journal, result, progress)
    finally:
        for lane in lanes:
            await lane.aclose()
        result.wall_s = time.monotonic() - started
        result.requests, result.tokens = progress.requests, progress.tokens
        await anyio.to_thread.run_sync(lambda: store.finish_run(result.run_id, status=result.status))
    return result


def models_of(cells: list[Cell]) -> list[ModelConfig]:
    """The distinct models of a plan (cells carry the endpoint actually used, e.g. embedded)."""
    return list({id(cell.model): cell.model for cell in cells}.values())


async def _run(cells: list[Cell], done: DoneIndex, lanes: list[Lane], store: Store, journal: Journal,
               result: RunResult, progress: Progress) -> None:
    send_outcomes, receive_outcomes = anyio.create_memory_object_stream[JobOutcome](STREAM_BUFFER)
    reporter = ProgressReporter(progress)
    async with anyio.create_task_group() as outer:
        writer_done = anyio.Event()
        outer.start_soon(_write_outcomes, receive_outcomes, store, journal, result, writer_done)
        outer.start_soon(_report, reporter)
        with anyio.CancelScope() as work:
            outer.start_soon(_cancel_on_signal, work, result)
            async with send_outcomes, anyio.create_task_group() as tg:
                for model in models_of(cells):
                    model_cells = [c for c in cells if c.model is model]
                    send_jobs, receive_jobs = anyio.create_memory_object_stream[Job](model.concurrency)
                    tg.start_soon(_produce, pending_jobs(model_cells, done), send_jobs)
                    with receive_jobs:
                        for lane in (lane for lane in lanes if lane.model is model):
                            for _ in range(model.concurrency):
                                tg.start_soon(_work, lane, receive_jobs.clone(), send_outcomes.clone(),
                                              result, progress)
        await writer_done.wait()
        reporter.close()
        outer.cancel_scope.cancel()
    dead = [lane.dead for lane in lanes if lane.dead]
    if dead and result.status == "completed":
        result.status = "failed"
    result.endpoint_errors = sorted({f"{lane.base_url}: {lane.dead.message}" for lane in lanes if lane.dead})


async def _produce(jobs: Any, send: ObjectSendStream[Job]) -> None:
    async with send:
        for job in jobs:
            try:
                await send.send(job)
            except anyio.BrokenResourceError:
                return  # every lane of this model is dead: leave the rest pending


async def _work(lane: Lane, jobs: ObjectReceiveStream[Job], outcomes: ObjectSendStream[JobOutcome],
                result: RunResult, progress: Progress) -> None:
    async with jobs, outcomes:
        async for job in jobs:
            if lane.dead:
                return
            try:
                outcome = await execute_job(job, lane, result.run_id)
            except EndpointError as exc:
                if lane.dead is exc:
                    log.error("endpoint unusable, stopping its lane", base_url=lane.base_url,
                              model=lane.model.name, error=exc.message)
                return
            if outcome.job["status"] == "done":
                progress.done += 1
            else:
                progress.failed += 1
                log.warning("job failed", job_id=job.job_id, scenario=job.cell.scenario.id,
                            branch=job.cell.branch, seed=job.seed, error=outcome.job["error"])
            await outcomes.send(outcome)


async def _write_outcomes(receive: ObjectReceiveStream[JobOutcome], store: Store, journal: Journal,
                          result: RunResult, finished: anyio.Event) -> None:
    """The only writer. One task journals each outcome the moment it arrives; another
    commits what has gathered every FLUSH_INTERVAL_S in one short transaction. Keeping
    them apart means outcomes are journaled even while a commit is running."""
    pending = PendingBatch(journal)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_journal_outcomes, receive, pending)
        while not (pending.closed and not pending.outcomes):
            with anyio.move_on_after(FLUSH_INTERVAL_S):
                await pending.closed_event.wait()
            if pending.outcomes:
                batch, segment = pending.take()
                await _flush(batch, store, result)
                segment.discard()
    finished.set()


class PendingBatch:
    """Outcomes received but not committed, and the journal segment that holds them."""

    def __init__(self, journal: Journal):
        self.journal = journal
        self.outcomes: list[JobOutcome] = []
        self.segment: Segment | None = None
        self.closed = False
        self.closed_event = anyio.Event()
        self.taken = anyio.Event()

    def add(self, outcome: JobOutcome) -> None:
        if self.segment is None:
            self.segment = self.journal.new_segment()
        self.segment.append(outcome)
        self.outcomes.append(outcome)

    def take(self) -> tuple[list[JobOutcome], Segment]:
        assert self.segment is not None
        taken = self.outcomes, self.segment
        self.outcomes, self.segment = [], None
        self.taken.set()
        self.taken = anyio.Event()
        return taken


async def _journal_outcomes(receive: ObjectReceiveStream[JobOutcome], pending: PendingBatch) -> None:
    async with receive:
        async for outcome in receive:
            pending.add(outcome)
            while len(pending.outcomes) >= MAX_PENDING:  # DuckDB fell behind: hold the workers
                await pending.taken.wait()
    pending.closed = True
    pending.closed_event.set()


async def _flush(batch: list[JobOutcome], store: Store, result: RunResult) -> None:
    done = sum(1 for o in batch if o.job["status"] == "done")
    result.stored_done += done
    result.stored_failed += len(batch) - done
    counters = {"done": result.stored_done, "failed": result.stored_failed}
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(store.write_batch, batch, result.run_id, counters)


def recover_journal(journal: Journal, store: Store) -> None:
    """Import what a killed run had answered but not committed (idempotent)."""
    for path in journal.leftovers():
        outcomes = list(read_segment(path))
        store.write_batch(outcomes, recovering=True)
        path.unlink()
        log.info("recovered finished jobs from a killed run's journal", jobs=len(outcomes), segment=path.name)


async def _report(reporter: ProgressReporter) -> None:
    while True:
        await anyio.sleep(reporter.interval)
        reporter.tick()


async def _cancel_on_signal(scope: anyio.CancelScope, result: RunResult) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.warning("stopping: storing finished jobs; in-flight calls stay pending",
                        signal=signal.Signals(signum).name)
            result.status = "interrupted"
            scope.cancel()
            return


def _run_row(experiment: Experiment, cells: list[Cell], result: RunResult, argv: list[str]) -> dict[str, Any]:
    models = [{"name": m.name, "base_urls": list(m.base_urls), "api_key_env": m.api_key_env,
               "params": m.params, "rpm": m.rpm, "tpm": m.tpm, "concurrency": m.concurrency,
               "embedded": m.embedded} for m in models_of(cells)]
    config = {"branches": list(experiment.branches), "models": models,
              "scenarios": [s.id for s in experiment.scenarios], "variants": experiment.variants}
    return {"run_id": result.run_id, "experiment": experiment.name,
            "experiment_path": str(experiment.path), "config": config, "argv": argv,
            "started_at": utc_now(), "status": "running", "planned": result.planned,
            "pending_at_start": result.pending_at_start, "done": 0, "failed": 0,
            "pipeline_version": pipeline.__version__, "hostname": hostname(), "pid": os.getpid()}
