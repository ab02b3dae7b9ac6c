"""A sampling run: plan what is pending, record the run, feed the engine, finish the run."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import structlog

import pipeline
from pipeline.experiment.config import Experiment, ModelConfig
from pipeline.progress import Progress
from pipeline.sampling.engine import Stream, recover_journal, run_engine
from pipeline.sampling.job import execute_job
from pipeline.sampling.journal import Journal
from pipeline.sampling.lane import Lane, close_lanes, make_lanes
from pipeline.sampling.plan import Cell, DoneIndex, load_done, pending_jobs
from pipeline.store.writer import Store, hostname, utc_now

log = structlog.get_logger()


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


def models_of(cells: list[Cell]) -> list[ModelConfig]:
    """The distinct models of a plan (cells carry the endpoint actually used, e.g. embedded)."""
    return list({id(cell.model): cell.model for cell in cells}.values())


def lane_workers(lanes: list[Lane], run_id: str) -> list[partial[Any]]:
    """`concurrency` workers per lane, each running one job at a time through its lane."""
    return [partial(execute_job, lane=lane, run_id=run_id)
            for lane in lanes for _ in range(lane.model.concurrency)]


async def sample(experiment: Experiment, cells: list[Cell], store: Store, argv: list[str]) -> RunResult:
    journal = Journal(store.path)
    await anyio.to_thread.run_sync(recover_journal, journal, store)
    done = await anyio.to_thread.run_sync(_load_done, store, cells)
    planned = sum(cell.n for cell in cells)
    result = RunResult(run_id=uuid.uuid4().hex[:16], status="completed", planned=planned,
                       pending_at_start=planned - done.count)
    progress = Progress(total=result.pending_at_start)
    models = models_of(cells)
    lanes = {id(model): make_lanes(model, progress) for model in models}
    grid = [(*cell.key, cell.n) for cell in cells]
    await anyio.to_thread.run_sync(store.start_run, _run_row(experiment, cells, result, argv), grid)
    log.info("run started", run_id=result.run_id, planned=planned, already_done=done.count,
             pending=result.pending_at_start, db=str(store.path))
    streams = [Stream(pending_jobs([c for c in cells if c.model is model], done),
                      lane_workers(lanes[id(model)], result.run_id)) for model in models]
    started = time.monotonic()
    try:
        engine = await run_engine(streams, store, journal, progress, run_id=result.run_id)
        result.status, result.endpoint_errors = engine.status, engine.endpoint_errors
        result.stored_done, result.stored_failed = engine.stored_ok, engine.stored_failed
    except BaseException:
        result.status = "failed"
        raise
    finally:
        await close_lanes([lane for model_lanes in lanes.values() for lane in model_lanes])
        result.wall_s = time.monotonic() - started
        result.requests, result.tokens = progress.requests, progress.tokens
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: store.finish_run(result.run_id, status=result.status))
    return result


def _load_done(store: Store, cells: list[Cell]) -> DoneIndex:
    with store.connect() as con:
        return load_done(con, cells)


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
