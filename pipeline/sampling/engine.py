"""The async engine shared by sampling and grading: producers, workers, one writer.

    items (per stream) --> workers (each a coroutine, e.g. bound to a lane) --outcomes--> writer --> DuckDB

Work is described by `Stream`s: a lazy iterator of items (async when they are read from the
database, in a thread) and the workers that turn one
item into an `Outcome`. The engine knows nothing of endpoints: a worker that raises
`EndpointError` stops (its endpoint is unusable) and the error is reported. The writer journals
each outcome the moment it arrives and commits what has gathered every
FLUSH_INTERVAL_S in one short transaction. Ctrl-C / SIGTERM cancel producers and
workers only; the writer then drains, so every finished item is stored — or, when another
process holds the database, left in the journal for the next start (a second Ctrl-C exits
at once). A database that cannot be written (permissions, full disk) is waited for with a
warning; a journal that cannot be written is done without (results stay in memory until
committed); an outcome DuckDB refuses goes to the quarantine file instead of stopping the run.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import anyio
import duckdb
import orjson
import structlog
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from pipeline.progress import Progress, ProgressReporter
from pipeline.sampling.interrupts import Interrupts
from pipeline.sampling.journal import Journal, Segment, read_segment
from pipeline.sampling.retry import EndpointError
from pipeline.store.connection import WaitAbandoned, is_disk_error, is_lock_error, retry_on_disk
from pipeline.store.writer import Outcome, RunCounters, Store

log = structlog.get_logger()
FLUSH_INTERVAL_S = 0.5      # commit cadence; between commits readers can open the file
# Outcomes per commit at most: a full batch is committed at once, and workers are held until it
# is taken. It bounds what a commit holds in memory (DuckDB's share grows with the batch; 20,000
# before, batches of ~1,900 set a million-job run's peak) while a commit of 1,024 (0.1-0.3 s)
# still outpaces the workers several times over.
MAX_PENDING = 1024
STREAM_BUFFER = 256
Item = TypeVar("Item")
T = TypeVar("T")
Worker = Callable[[Item], Awaitable[Outcome]]


class StopWorker(Exception):
    """Raised by a worker to stop taking items (e.g. a budget reached): the rest stay pending."""


@dataclass
class Stream(Generic[Item]):
    """Items and the workers that share them (e.g. `concurrency` workers per lane of a model)."""

    items: Iterator[Item] | AsyncIterator[Item]   # async: items that are read from a database (in a thread)
    workers: Sequence[Worker[Item]]


@dataclass
class EngineTally:
    """What the engine stored (kept in step with each commit) and how it ended."""

    status: str = "completed"          # completed | interrupted | failed
    stored_ok: int = 0
    stored_failed: int = 0
    endpoint_errors: list[str] = field(default_factory=list)


async def run_engine(streams: list[Stream[Any]], store: Store, journal: Journal, progress: Progress,
                     interrupts: Interrupts, run_id: str | None = None) -> EngineTally:
    """Run every stream to its end (or a signal); `run_id` names the `runs` row whose
    counters are kept in step with each commit. `interrupts`: the command's signal handling
    (`interrupts.until_interrupted`); the engine takes the first signal while it runs."""
    result = EngineTally()
    send, receive = anyio.create_memory_object_stream[Outcome](STREAM_BUFFER)
    reporter = ProgressReporter(progress)
    async with anyio.create_task_group() as outer:
        writer_done = anyio.Event()
        outer.start_soon(_write, receive, store, journal, result, run_id, writer_done)
        outer.start_soon(_report, reporter)
        with anyio.CancelScope() as work, interrupts.handled_by(partial(_stop_sending, work, result)):
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
                  progress: Progress, result: EngineTally) -> None:
    send_items, receive_items = anyio.create_memory_object_stream[Any](max(1, len(stream.workers)))
    tg.start_soon(_produce, stream.items, send_items)
    with receive_items:
        for worker in stream.workers:
            tg.start_soon(_work, worker, receive_items.clone(), outcomes.clone(), progress, result)


async def _produce(items: Iterator[Any] | AsyncIterator[Any], send: MemoryObjectSendStream[Any]) -> None:
    async with send:
        try:
            if isinstance(items, AsyncIterator):
                async for item in items:
                    await _send(send, item)
            else:
                for item in items:
                    await _send(send, item)
        except anyio.BrokenResourceError:
            return  # every lane of this model is dead: leave the rest pending


async def _send(stream: MemoryObjectSendStream[T], item: T) -> None:
    """Send, waiting only when the buffer is full: anyio's `send` checkpoints first, and each
    checkpoint looks up the event loop's backend (~3% of the loop's CPU at 2,000 jobs/s)."""
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


async def _work(worker: Worker[Any], items: ObjectReceiveStream[Any], outcomes: MemoryObjectSendStream[Outcome],
                progress: Progress, result: EngineTally) -> None:
    async with items, outcomes:
        async for item in items:
            try:
                outcome = await worker(item)
            except StopWorker:
                return
            except EndpointError as exc:
                if exc.message not in result.endpoint_errors:
                    result.endpoint_errors.append(exc.message)
                    log.error("endpoint unusable, stopping its workers", error=exc.message)
                return
            if outcome.failed:
                progress.failed += 1
            else:
                progress.done += 1
            await _send(outcomes, outcome)


class PendingBatch:
    """Outcomes received but not committed, and the journal segment that holds them."""

    def __init__(self, journal: Journal):
        self.journal = journal
        self.outcomes: list[Outcome] = []
        self.segment: Segment | None = None
        self.closed = anyio.Event()
        self.taken = anyio.Event()
        self.ready = anyio.Event()   # a full batch waits, or no more will come: commit now
        self.journal_failed_at = 0.0   # when the journal last failed; retried after a while
        self._prompt_ids: set[str] = set()   # prompts this batch already holds

    def add(self, outcome: Outcome) -> None:
        """Hold `outcome` and journal it. A prompt (a cell's ~5 KB opening) is kept only with its
        first outcome in the batch: the batch and its segment hold each prompt once, and the
        segment is imported as one batch too (journaling every copy cost ~5% of the loop's CPU)."""
        prompts = outcome.rows.get("prompts")
        if prompts:
            outcome.rows["prompts"] = [row for row in prompts if row["prompt_id"] not in self._prompt_ids]
            self._prompt_ids.update(row["prompt_id"] for row in prompts)
        self.outcomes.append(outcome)
        if len(self.outcomes) >= MAX_PENDING:
            self.ready.set()
        if time.monotonic() - self.journal_failed_at < 10.0:
            return
        try:
            if self.segment is None:
                self.segment = self.journal.new_segment()
            self.segment.append(outcome)
        except OSError as exc:
            self.journal_failed_at = time.monotonic()
            log.warning("journal not writable: finished results are kept in memory until committed "
                        "(a kill before the next commit would lose them)", journal=str(self.journal.directory),
                        error=str(exc))

    def take(self) -> tuple[list[Outcome], Segment | None]:
        taken = self.outcomes, self.segment
        self.outcomes, self.segment = [], None
        self._prompt_ids = set()
        self.taken.set()
        self.taken = anyio.Event()
        if not self.closed.is_set():
            self.ready = anyio.Event()
        return taken

    def close(self) -> None:
        self.closed.set()
        self.ready.set()


async def _write(receive: ObjectReceiveStream[Outcome], store: Store, journal: Journal, result: EngineTally,
                 run_id: str | None, finished: anyio.Event) -> None:
    """The only writer. Journaling and committing are separate tasks, so outcomes are
    journaled even while a commit is running."""
    pending = PendingBatch(journal)
    abandoned = False   # the user stopped while the database was unavailable: leave the rest journaled
    async with anyio.create_task_group() as tg:
        tg.start_soon(_journal, receive, pending)
        while not (pending.closed.is_set() and not pending.outcomes):
            with anyio.move_on_after(FLUSH_INTERVAL_S):
                await pending.ready.wait()
            if pending.outcomes:
                batch, segment = pending.take()
                if not abandoned:
                    abandoned = not await _commit(batch, store, journal, result, run_id)
                _settle(segment, committed=not abandoned)
    if abandoned:
        log.warning("stopped before the database was free: finished results wait in the journal "
                    "and are imported by the next run", journal=str(journal.directory))
    finished.set()


def _settle(segment: Segment | None, committed: bool) -> None:
    """Delete a committed batch's journal segment; keep an uncommitted one for the next start."""
    if segment is None:
        return
    try:
        segment.discard() if committed else segment.close()
    except OSError as exc:   # an unwritable journal directory: the next start re-imports it (idempotent)
        log.warning("could not remove a committed journal segment", segment=str(segment.path), error=str(exc))


async def _journal(receive: ObjectReceiveStream[Outcome], pending: PendingBatch) -> None:
    async with receive:
        async for outcome in receive:
            pending.add(outcome)
            while len(pending.outcomes) >= MAX_PENDING:  # DuckDB fell behind: hold the workers
                await pending.taken.wait()
    pending.close()


async def _commit(batch: list[Outcome], store: Store, journal: Journal, result: EngineTally,
                  run_id: str | None) -> bool:
    """Commit one batch; False if the user stopped while the database was unavailable."""
    failed = sum(1 for outcome in batch if outcome.failed)
    ok, bad = result.stored_ok + len(batch) - failed, result.stored_failed + failed
    counters = RunCounters(run_id, ok, bad) if run_id else None
    with anyio.CancelScope(shield=True):
        committed = await anyio.to_thread.run_sync(commit_batch, store, journal, batch, counters)
    if committed:
        result.stored_ok, result.stored_failed = ok, bad
    return committed


def commit_batch(store: Store, journal: Journal, batch: list[Outcome], counters: RunCounters | None,
                 recovering: bool = False) -> bool:
    """Write `batch` in one transaction, waiting (with a warning) while the database cannot
    be written. If DuckDB refuses the batch itself, each outcome is written alone and those
    it still refuses are quarantined. False: given up because the user stopped."""
    last_warning = 0.0

    def warn(waited: float, exc: BaseException) -> None:
        nonlocal last_warning
        if time.monotonic() - last_warning > 10:
            last_warning = time.monotonic()
            log.warning("database not writable; retrying (finished results are kept in the journal)",
                        db=str(store.path), error=str(exc).splitlines()[0], waited_s=round(waited, 1))

    try:
        retry_on_disk(lambda: store.write_batch(batch, counters, recovering=recovering),
                      timeout_s=store.lock_timeout_s, what=f"writing {store.path}", on_wait=warn)
        return True
    except WaitAbandoned:
        return False
    except duckdb.Error as exc:
        if is_lock_error(exc):
            raise
    # DuckDB refused the data itself: import outcome by outcome, quarantine what it still refuses.
    refused: list[tuple[Outcome, Exception]] = []
    # Each prompt is held by the first outcome of the batch that used it: store them all first,
    # so that a refused outcome never takes away a prompt the others refer to.
    shared = Outcome({"prompts": [row for outcome in batch for row in outcome.rows.get("prompts", [])]})
    for outcome in [shared, *batch] if shared.rows["prompts"] else batch:
        try:
            store.write_batch([outcome], recovering=True)
        except (duckdb.Error, ValueError, TypeError, KeyError) as exc:
            if is_disk_error(exc) or is_lock_error(exc):
                raise
            refused.append((outcome, exc))
    if counters:
        store.write_batch([], counters)
    if refused:
        journal.quarantine([orjson.dumps({"rows": o.rows, "failed": o.failed}) for o, _ in refused])
        log.warning("the database refused some finished results: moved to the quarantine file",
                    items=len(refused), quarantine=str(journal.quarantine_path), error=str(refused[0][1])[:300])
    return True


def recover_journal(journal: Journal, store: Store) -> int:
    """Import what a killed run had finished but not committed (idempotent). Lines that are
    not outcomes, or that DuckDB refuses, go to the quarantine file: they never block a run."""
    recovered = 0
    for path in journal.leftovers():
        contents = read_segment(path)
        if contents.damaged_lines:
            journal.quarantine(contents.damaged_lines)
            log.warning("skipped damaged journal lines (torn or of the wrong shape): moved to the quarantine file",
                        segment=path.name, lines=contents.damaged, count=len(contents.damaged),
                        quarantine=str(journal.quarantine_path))
        if contents.outcomes and not commit_batch(store, journal, contents.outcomes, None, recovering=True):
            raise WaitAbandoned(f"{store.path}: stopped while importing the journal")
        path.unlink()
        recovered += len(contents.outcomes)
        log.info("recovered finished work from a killed run's journal", items=len(contents.outcomes),
                 segment=path.name)
    return recovered


async def _report(reporter: ProgressReporter) -> None:
    while True:
        await anyio.sleep(reporter.interval)
        reporter.tick()


def _stop_sending(work: anyio.CancelScope, result: EngineTally, signum: signal.Signals) -> None:
    """First signal: stop sending, store what is finished (waits for the database give up at
    once: the journal keeps it); a second exits at once (`Interrupts`)."""
    log.warning("stopping: storing finished work; in-flight calls stay pending (interrupt again to exit now)",
                signal=signum.name)
    result.status = "interrupted"
    work.cancel()
