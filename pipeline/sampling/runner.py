"""A sampling run: plan what is pending, record the run, feed the engine, finish the run."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import duckdb
import structlog

import pipeline
from pipeline.experiment.config import Experiment, ModelConfig
from pipeline.sampling.engine import EngineResult, Stream, recover_journal, run_engine
from pipeline.errors import PipelineError
from pipeline.sampling.job import execute_job
from pipeline.sampling.journal import Journal
from pipeline.sampling.lane import Lane
from pipeline.sampling.plan import Cell, pending_jobs
from pipeline.progress import Progress
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


def resolve_api_key(model: ModelConfig) -> str | None:
    """Keys come from the environment only, and are never logged or stored."""
    if not model.api_key_env:
        return None
    key = os.environ.get(model.api_key_env)
    if not key:
        raise PipelineError(f"model {model.name!r}: environment variable {model.api_key_env} is not set")
    return key


def models_of(cells: list[Cell]) -> list[ModelConfig]:
    """The distinct models of a plan (cells carry the endpoint actually used, e.g. embedded)."""
    return list({id(cell.model): cell.model for cell in cells}.values())


def make_lanes(model: ModelConfig, progress: Progress) -> list[Lane]:
    key = resolve_api_key(model)
    return [Lane(model, url, key, progress) for url in model.base_urls]


async def sample(experiment: Experiment, cells: list[Cell], store: Store, argv: list[str]) -> RunResult:
    journal = Journal(store.path)
    await anyio.to_thread.run_sync(recover_journal, journal, store)
    done = await anyio.to_thread.run_sync(store.load_done, cells)
    planned = sum(cell.n for cell in cells)
    result = RunResult(run_id=uuid.uuid4().hex[:16], status="completed", planned=planned,
                       pending_at_start=planned - done.count)
    progress = Progress(total=result.pending_at_start)
    models = models_of(cells)
    lanes = {id(model): make_lanes(model, progress) for model in models}
    await anyio.to_thread.run_sync(store.start_run, _run_row(experiment, cells, result, argv), cells)
    log.info("run started", run_id=result.run_id, planned=planned, already_done=done.count,
             pending=result.pending_at_start, db=str(store.path))
    execute = partial(execute_job, run_id=result.run_id)
    streams = [Stream(lanes[id(model)], pending_jobs([c for c in cells if c.model is model], done), execute)
               for model in models]
    started = time.monotonic()
    try:
        engine = await run_engine(streams, store, journal, progress, on_commit=partial(_count, result.run_id))
        result.status, result.endpoint_errors = engine.status, engine.endpoint_errors
        result.stored_done, result.stored_failed = engine.stored_ok, engine.stored_failed
    except BaseException:
        result.status = "failed"
        raise
    finally:
        for model_lanes in lanes.values():
            for lane in model_lanes:
                await lane.aclose()
        result.wall_s = time.monotonic() - started
        result.requests, result.tokens = progress.requests, progress.tokens
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: store.finish_run(result.run_id, status=result.status))
    return result


def _count(run_id: str, con: duckdb.DuckDBPyConnection, engine: EngineResult) -> None:
    """Keep the run's counters in step with what is committed (same transaction)."""
    con.execute("UPDATE runs SET done = ?, failed = ? WHERE run_id = ?",
                [engine.stored_ok, engine.stored_failed, run_id])


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
