"""The async engine shared by sampling and LLM grading: producers, lanes, one writer.

    items (per model) --> workers (per lane, `concurrency` each) --outcomes--> writer --> DuckDB

Work is described by `Stream`s: the lanes of one model, a lazy iterator of items and
the coroutine that turns one item into an `Outcome` through a lane. The writer journals
each outcome the moment it arrives and commits what has gathered every
FLUSH_INTERVAL_S in one short transaction. Ctrl-C / SIGTERM cancel producers and
workers only; the writer then drains, so every finished item is stored.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
import duckdb
import structlog
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from pipeline.sampling.client import EndpointError
from pipeline.sampling.journal import Journal, Segment, read_segment
from pipeline.sampling.lane import Lane
from pipeline.progress import Progress, ProgressReporter
from pipeline.store.writer import Outcome, Store

log = structlog.get_logger()
FLUSH_INTERVAL_S = 0.5      # commit cadence; between commits readers can open the file
MAX_PENDING = 20_000        # outcomes waiting for a commit before workers are held back
STREAM_BUFFER = 256
Item = TypeVar("Item")


@dataclass
class Stream(Generic[Item]):
    """The work of one model: its lanes (one per base URL), items, and how to run one."""

    lanes: list[Lane]
    items: Iterator[Item]
    execute: Callable[[Item, Lane], Awaitable[Outcome]]


@dataclass
class EngineResult:
    status: str = "completed"          # completed | interrupted | failed
    stored_ok: int = 0
    stored_failed: int = 0
    endpoint_errors: list[str] = field(default_factory=list)


CommitHook = Callable[[duckdb.DuckDBPyConnection, EngineResult], None]


async def run_engine(streams: list[Stream[Any]], store: Store, journal: Journal, progress: Progress,
                     on_commit: CommitHook | None = None) -> EngineResult:
    result = EngineResult()
    send, receive = anyio.create_memory_object_stream[Outcome](STREAM_BUFFER)
    reporter = ProgressReporter(progress)
    async with anyio.create_task_group() as outer:
        writer_done = anyio.Event()
        outer.start_soon(_write, receive, store, journal, result, on_commit, writer_done)
        outer.start_soon(_report, reporter)
        with anyio.CancelScope() as work:
            outer.start_soon(_cancel_on_signal, work, result)
            async with send, anyio.create_task_group() as tg:
                for stream in streams:
                    _start_stream(tg, stream, send, progress)
        await writer_done.wait()
        reporter.close()
        outer.cancel_scope.cancel()
    lanes = [lane for stream in streams for lane in stream.lanes]
    result.endpoint_errors = sorted({f"{lane.base_url}: {lane.dead.message}" for lane in lanes if lane.dead})
    if result.endpoint_errors and result.status == "completed":
        result.status = "failed"
    return result


def _start_stream(tg: anyio.abc.TaskGroup, stream: Stream[Any], outcomes: ObjectSendStream[Outcome],
                  progress: Progress) -> None:
    concurrency = max((lane.model.concurrency for lane in stream.lanes), default=1)
    send_items, receive_items = anyio.create_memory_object_stream[Any](concurrency)
    tg.start_soon(_produce, stream.items, send_items)
    with receive_items:
        for lane in stream.lanes:
            for _ in range(lane.model.concurrency):
                tg.start_soon(_work, lane, stream.execute, receive_items.clone(), outcomes.clone(), progress)


async def _produce(items: Iterator[Any], send: ObjectSendStream[Any]) -> None:
    async with send:
        for item in items:
            try:
                await send.send(item)
            except anyio.BrokenResourceError:
                return  # every lane of this model is dead: leave the rest pending


async def _work(lane: Lane, execute: Callable[[Any, Lane], Awaitable[Outcome]], items: ObjectReceiveStream[Any],
                outcomes: ObjectSendStream[Outcome], progress: Progress) -> None:
    async with items, outcomes:
        async for item in items:
            if lane.dead:
                return
            try:
                outcome = await execute(item, lane)
            except EndpointError as exc:
                if lane.dead is exc:
                    log.error("endpoint unusable, stopping its lane", base_url=lane.base_url,
                              model=lane.model.name, error=exc.message)
                return
            if outcome.failed:
                progress.failed += 1
            else:
                progress.done += 1
            await outcomes.send(outcome)


class PendingBatch:
    """Outcomes received but not committed, and the journal segment that holds them."""

    def __init__(self, journal: Journal):
        self.journal = journal
        self.outcomes: list[Outcome] = []
        self.segment: Segment | None = None
        self.closed = anyio.Event()
        self.taken = anyio.Event()

    def add(self, outcome: Outcome) -> None:
        if self.segment is None:
            self.segment = self.journal.new_segment()
        self.segment.append(outcome)
        self.outcomes.append(outcome)

    def take(self) -> tuple[list[Outcome], Segment]:
        assert self.segment is not None
        taken = self.outcomes, self.segment
        self.outcomes, self.segment = [], None
        self.taken.set()
        self.taken = anyio.Event()
        return taken


async def _write(receive: ObjectReceiveStream[Outcome], store: Store, journal: Journal, result: EngineResult,
                 on_commit: CommitHook | None, finished: anyio.Event) -> None:
    """The only writer. Journaling and committing are separate tasks, so outcomes are
    journaled even while a commit is running."""
    pending = PendingBatch(journal)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_journal, receive, pending)
        while not (pending.closed.is_set() and not pending.outcomes):
            with anyio.move_on_after(FLUSH_INTERVAL_S):
                await pending.closed.wait()
            if pending.outcomes:
                batch, segment = pending.take()
                await _commit(batch, store, result, on_commit)
                segment.discard()
    finished.set()


async def _journal(receive: ObjectReceiveStream[Outcome], pending: PendingBatch) -> None:
    async with receive:
        async for outcome in receive:
            pending.add(outcome)
            while len(pending.outcomes) >= MAX_PENDING:  # DuckDB fell behind: hold the workers
                await pending.taken.wait()
    pending.closed.set()


async def _commit(batch: list[Outcome], store: Store, result: EngineResult, on_commit: CommitHook | None) -> None:
    failed = sum(1 for outcome in batch if outcome.failed)
    result.stored_ok += len(batch) - failed
    result.stored_failed += failed
    hook = (lambda con: on_commit(con, result)) if on_commit else None
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(store.write_batch, batch, hook)


def recover_journal(journal: Journal, store: Store) -> int:
    """Import what a killed run had finished but not committed (idempotent)."""
    recovered = 0
    for path in journal.leftovers():
        outcomes = list(read_segment(path))
        store.write_batch(outcomes, recovering=True)
        path.unlink()
        recovered += len(outcomes)
        log.info("recovered finished work from a killed run's journal", items=len(outcomes), segment=path.name)
    return recovered


async def _report(reporter: ProgressReporter) -> None:
    while True:
        await anyio.sleep(reporter.interval)
        reporter.tick()


async def _cancel_on_signal(scope: anyio.CancelScope, result: EngineResult) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.warning("stopping: storing finished work; in-flight calls stay pending",
                        signal=signal.Signals(signum).name)
            result.status = "interrupted"
            scope.cancel()
            return
