"""`sample --batch`: submit pending jobs as Batch API batches, poll them, collect the results.

Each loop: advance every open batch one step (upload, create, poll, collect when it has ended),
then submit what is pending and not in an open batch: sampled jobs' initial calls and every
fixed job's call in one round, sampled jobs' final calls once their initial reply has landed
(the second round). Every step is stored before the next is taken (`ledger`), and a run
killed between upload and create finds its file (by name) or its batch (by input file) again
instead of submitting twice. Within one invocation a call is submitted at most once: a
request that comes back unanswered leaves its job pending for the next `sample --batch`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import anyio
import orjson
import structlog

from pipeline.experiment.config import ModelConfig
from pipeline.experiment.scenarios import Message
from pipeline.progress import Progress
from pipeline.sampling.batch.api import BatchApi, BatchApiError
from pipeline.sampling.batch.collect import collect, results_by_id
from pipeline.sampling.batch.ledger import (
    TERMINAL,
    BatchRecord,
    in_flight,
    initial_replies,
    open_batches,
    request_lines,
    save,
)
from pipeline.sampling.batch.requests import BatchLine, custom_id, make_line, split
from pipeline.sampling.budget import Budget, BudgetReached, call_cost_bound, experiment_spent
from pipeline.sampling.lane import resolve_api_key
from pipeline.sampling.plan import Cell, DoneIndex, Job, load_done, pending_jobs
from pipeline.store.writer import RunCounters, Store, utc_now

log = structlog.get_logger()


@dataclass(frozen=True)
class BatchOptions:
    wait: bool = True          # poll until every batch is collected (False: submit and return)
    poll_s: float = 30.0


@dataclass
class BatchTally:
    """What the batch side of a run did (printed in the summary)."""

    status: str = "completed"            # completed | budget_reached | failed
    submitted: int = 0                   # batches submitted by this run
    requests_submitted: int = 0
    collected: int = 0                   # batches collected by this run
    answered: int = 0
    unanswered: int = 0
    jobs_done: int = 0
    still_open: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    endpoint_errors: list[str] = field(default_factory=list)


@dataclass
class State:
    done: DoneIndex
    open: list[BatchRecord]
    flying: set[str]
    initials: dict[str, tuple[str, str]]
    spent: float


class BatchDriver:
    def __init__(self, cells: list[Cell], store: Store, run_id: str, progress: Progress, options: BatchOptions,
                 cap_usd: float | None, experiment: str, counted: RunCounters | None = None):
        self.cells = cells
        self.store = store
        self.run_id = run_id
        self.progress = progress
        self.options = options
        self.cap_usd = cap_usd
        self.experiment = experiment
        self.counted = counted or RunCounters(run_id, 0, 0)   # what the online side of the run stored
        self.models = {cell.model.name: cell.model for cell in cells}
        self.jobs = {job.job_id: job for cell in cells for job in map(cell.job, range(cell.n))}
        self.apis: dict[str, BatchApi] = {}
        self.keys: dict[str, str | None] = {}
        self.submitted_now: set[str] = set()
        self.tally = BatchTally()

    async def run(self) -> BatchTally:
        try:
            for name, model in self.models.items():
                self.keys[name] = resolve_api_key(model)
                self.apis[name] = BatchApi(model.base_urls[0], self.keys[name], model.timeout_s)
            await self._loop()
        except BatchApiError as exc:
            self.tally.status = "failed"
            self.tally.endpoint_errors.append(str(exc))
            log.error("Batch API unusable; stored batches are resumed by the next run", error=str(exc))
        finally:
            with anyio.CancelScope(shield=True):
                for api in self.apis.values():
                    await api.aclose()
        return self.tally

    async def _loop(self) -> None:
        while True:
            state = await self._state()
            for record in state.open:
                await self._advance(record, state.done)
            await self._submit(await self._state())
            still_open = (await self._state()).open
            self.tally.still_open = len(still_open)
            self.tally.by_status = dict(Counter(record.status for record in still_open))
            if not self.options.wait or not still_open:
                return
            log.info("batches", **self.tally.by_status, requests_answered=self.tally.answered,
                     requests_unanswered=self.tally.unanswered, jobs_done=self.tally.jobs_done,
                     spent=self.progress.spent())
            await anyio.sleep(self.options.poll_s)

    async def _state(self) -> State:
        return await anyio.to_thread.run_sync(self._read_state)

    def _read_state(self) -> State:
        with self.store.connect() as con:
            return State(done=load_done(con, self.cells), open=open_batches(con, list(self.models)),
                         flying=in_flight(con), initials=initial_replies(con),
                         spent=experiment_spent(con, self.experiment) if self.cap_usd is not None else 0.0)

    # --- submitting ------------------------------------------------------------------------

    async def _submit(self, state: State) -> None:
        budget = None
        if self.cap_usd is not None:
            budget = Budget(self.cap_usd, spent_before=state.spent + sum(r.reserved_usd or 0.0 for r in state.open))
        rounds: dict[tuple[str, str], list[BatchLine]] = defaultdict(list)
        for job in pending_jobs(self.cells, state.done):
            call, messages, run_id = self._next_call(job, state.initials)
            key = custom_id(job.job_id, call)
            if key in state.flying or key in self.submitted_now:
                continue
            reserve = 0.0
            if budget:
                reserve = call_cost_bound(job.cell.model, messages, batch=True)
                try:
                    budget.reserve(reserve)
                except BudgetReached:
                    self.tally.status = "budget_reached"
                    break
            rounds[(job.cell.model.name, call)].append(make_line(job, call, messages, run_id, reserve))
        for (name, call), lines in rounds.items():
            for part in split(lines):
                await self._send(self.models[name], call, part)

    def _next_call(self, job: Job, initials: dict[str, tuple[str, str]]) -> tuple[str, list[Message], str]:
        """(call, messages, run_id): a fixed job's one call, or a sampled job's initial call, or
        its final call on the initial reply a batch brought back (stored under that run_id)."""
        conversation = job.cell.conversation
        fixed = job.fixed_response()
        if fixed is not None:
            return "final", conversation.closing(fixed), self.run_id
        if job.job_id in initials:
            run_id, text = initials[job.job_id]
            return "final", conversation.closing(text), run_id
        return "initial", conversation.opening(), self.run_id

    async def _send(self, model: ModelConfig, call: str, lines: list[BatchLine]) -> None:
        record = BatchRecord.new(self.run_id, model.name, model.base_urls[0], call, len(lines),
                                 sum(line.reserved_usd for line in lines))
        requests = [{"batch_key": record.batch_key, "custom_id": line.custom_id, "job_id": line.job.job_id,
                     "call": line.call, "run_id": line.run_id, "line": orjson.loads(line.line)} for line in lines]
        await anyio.to_thread.run_sync(lambda: save(self.store, record, requests=requests))
        self.submitted_now.update(line.custom_id for line in lines)
        self.tally.submitted += 1
        self.tally.requests_submitted += len(lines)
        content = b"\n".join(line.line for line in lines) + b"\n"
        await self._advance(record, None, content=content)
        log.info("batch submitted", model=model.name, round=call, requests=len(lines), batch_id=record.batch_id)

    # --- one step of a batch -----------------------------------------------------------------

    async def _advance(self, record: BatchRecord, done: DoneIndex | None, content: bytes | None = None) -> None:
        """Take the batch as far as it goes now. `content` given: this process just prepared it
        (nothing can exist on the server yet); else look for what a killed run left there."""
        try:
            await self._submit_steps(record, content)
        except BatchApiError as exc:
            if exc.refused:   # e.g. a file the server will not take: give its jobs back, then stop
                record.status, record.error, record.collected_at = "failed", str(exc)[:1000], utc_now()
                await self._save(record)
            raise
        if record.status not in TERMINAL:
            before = (record.status, record.completed, record.failed)
            assert record.batch_id
            record.adopt(await self.apis[record.model].retrieve(record.batch_id))
            if (record.status, record.completed, record.failed) != before:
                await self._save(record)
        if record.status in TERMINAL:
            await self._collect(record, done or (await self._state()).done)

    async def _submit_steps(self, record: BatchRecord, content: bytes | None) -> None:
        """Upload and create, each step stored the moment it is done."""
        api = self.apis[record.model]
        fresh = content is not None
        if record.status == "preparing":
            file_id = None if fresh else await api.find_file(record.filename)
            if file_id is None:
                file_id = await api.upload(record.filename, content or await self._content(record))
            record.input_file_id, record.status = file_id, "uploaded"
            await self._save(record)
        if record.status == "uploaded":
            assert record.input_file_id
            found = None if fresh else await api.find_batch(record.input_file_id)
            if found is None:
                found = await api.create(record.input_file_id, {"pipeline_batch_key": record.batch_key})
            record.adopt(found)
            await self._save(record)

    async def _content(self, record: BatchRecord) -> bytes:
        def read() -> bytes:
            with self.store.connect() as con:
                return "".join(line + "\n" for *_, line in request_lines(con, record.batch_key)).encode()
        return await anyio.to_thread.run_sync(read)

    async def _save(self, record: BatchRecord) -> None:
        await anyio.to_thread.run_sync(lambda: save(self.store, record))

    async def _collect(self, record: BatchRecord, done: DoneIndex) -> None:
        api = self.apis[record.model]
        files = [await api.content(file_id) for file_id in (record.output_file_id, record.error_file_id) if file_id]

        def read() -> list[tuple[str, str, str, str, str]]:
            with self.store.connect() as con:
                return request_lines(con, record.batch_key)
        requests = await anyio.to_thread.run_sync(read)
        got = collect(record, requests, results_by_id(*files), self.jobs, lambda job: done.is_done(job.cell, job.seed),
                      self.keys.get(record.model))
        record.collected_at = utc_now()
        self.tally.jobs_done += got.jobs_done
        counters = RunCounters(self.run_id, self.counted.done + self.tally.jobs_done, self.counted.failed)
        await anyio.to_thread.run_sync(lambda: save(self.store, record, got.outcomes, counters))
        for cost in got.costs:
            self.progress.count_cost(cost)
        self.progress.done += got.jobs_done
        self.tally.collected += 1
        self.tally.answered += got.answered
        self.tally.unanswered += got.unanswered
        self.tally.errors.update(got.errors)
        log.info("batch collected", batch_id=record.batch_id, status=record.status, round=record.round,
                 answered=got.answered, unanswered=got.unanswered, jobs_done=got.jobs_done,
                 **({"why_unanswered": dict(got.errors)} if got.errors else {}))
