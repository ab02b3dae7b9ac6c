"""The async engine shared by sampling and grading: producers, workers, one writer.

    items (per stream) --> workers (each a coroutine, e.g. bound to a lane) --outcomes--> writer --> DuckDB

Work is described by `Stream`s: a lazy iterator of items and the workers that turn one
item into an `Outcome`. The engine knows nothing of endpoints: a worker that raises
`EndpointError` stops (its endpoint is unusable) and the error is reported. The writer journals
each outcome the moment it arrives and commits what has gathered every
FLUSH_INTERVAL_S in one short transaction. Ctrl-C / SIGTERM cancel producers and
workers only; the writer then drains, so every finished item is stored.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
import structlog
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectSendStream

from pipeline.progress import Progress, ProgressReporter
from pipeline.sampling.journal import Journal, Segment, read_segment
from pipeline.sampling.retry import EndpointError
from pipeline.store.writer import Outcome, RunCounters, Store

log = structlog.get_logger()
FLUSH_INTERVAL_S = 0.5      # commit cadence; between commits readers can open the file
MAX_PENDING = 20_000        # outcomes waiting for a commit before workers are held back
STREAM_BUFFER = 256
Item = TypeVar("Item")
Worker = Callable[[Item], Awaitable[Outcome]]


@dataclass
class Stream(Generic[Item]):
    """Items and the workers that share them (e.g. `concurrency` workers per lane of a model)."""

    items: Iterator[Item]
    workers: Sequence[Worker[Item]]


@dataclass
class EngineResult:
    status: str = "completed"          # completed | interrupted | failed
    stored_ok: int = 0
    stored_failed: int = 0
    endpoint_errors: list[str] = field(default_factory=list)


async def run_engine(streams: list[Stream[Any]], store: Store, journal: Journal, progress: Progress,
                     run_id: str | None = None) -> EngineResult:
    """Run every stream to its end (or a signal); `run_id` names the `runs` row whose
    counters are kept in step with each commit."""
    result = EngineResult()
    send, receive = anyio.create_memory_object_stream[Outcome](STREAM_BUFFER)
    reporter = ProgressReporter(progress)
    async with anyio.create_task_group() as outer:
        writer_done = anyio.Event()
        outer.start_soon(_write, receive, store, journal, result, run_id, writer_done)
        outer.start_soon(_report, reporter)
        with anyio.CancelScope() as work:
            outer.start_soon(_cancel_on_signal, work, result)
            async with send, anyio.create_task_group() as tg:
                for stream in streams:
                    _start_stream(tg, stream, send, progress, result)
        await writer_done.wait()
        reporter.close()
        outer.cancel_scope.cancel()
    result.endpoint_errors.sort()
    if result.endpoint_errors and result.status == "completed":
        result.status = "failed"
    return result


def _start_stream(tg: anyio.abc.TaskGroup, stream: Stream[Any], outcomes: MemoryObjectSendStream[Outcome],
                  progress: Progress, result: EngineResult) -> None:
    send_items, receive_items = anyio.create_memory_object_stream[Any](max(1, len(stream.workers)))
    tg.start_soon(_produce, stream.items, send_items)
    with receive_items:
        for worker in stream.workers:
            tg.start_soon(_work, worker, receive_items.clone(), outcomes.clone(), progress, result)


async def _produce(items: Iterator[Any], send: ObjectSendStream[Any]) -> None:
    async with send:
        for item in items:
            try:
                await send.send(item)
            except anyio.BrokenResourceError:
                return  # every lane of this model is dead: leave the rest pending


async def _work(worker: Worker[Any], items: ObjectReceiveStream[Any], outcomes: ObjectSendStream[Outcome],
                progress: Progress, result: EngineResult) -> None:
    async with items, outcomes:
        async for item in items:
            try:
                outcome = await worker(item)
            except EndpointError as exc:
                if exc.message not in result.endpoint_errors:
                    result.endpoint_errors.append(exc.message)
                    log.error("endpoint unusable, stopping its workers", error=exc.message)
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
                 run_id: str | None, finished: anyio.Event) -> None:
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
                await _commit(batch, store, result, run_id)
                segment.discard()
    finished.set()


async def _journal(receive: ObjectReceiveStream[Outcome], pending: PendingBatch) -> None:
    async with receive:
        async for outcome in receive:
            pending.add(outcome)
            while len(pending.outcomes) >= MAX_PENDING:  # DuckDB fell behind: hold the workers
                await pending.taken.wait()
    pending.closed.set()


async def _commit(batch: list[Outcome], store: Store, result: EngineResult, run_id: str | None) -> None:
    failed = sum(1 for outcome in batch if outcome.failed)
    result.stored_ok += len(batch) - failed
    result.stored_failed += failed
    counters = RunCounters(run_id, result.stored_ok, result.stored_failed) if run_id else None
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(store.write_batch, batch, counters)


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
