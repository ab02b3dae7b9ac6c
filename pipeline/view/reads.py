"""What the viewer's pages show, read with the named statements `view_*` (store/sql/queries.sql).

Every function takes an open read-only connection; `Database` opens one per request, in one
thread, and closes it before the answer goes out, so a run's writer finds the file free
between requests (connection.py: the single-writer rule).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import orjson

from pipeline.grading.human import CellFilter
from pipeline.grading.split import Split, split_response
from pipeline.report.data import Row, fetch
from pipeline.store.connection import open_reader
from pipeline.store.queries import sql
from pipeline.view.filters import Cursor, SampleFilter

T = TypeVar("T")
PARAMETER = re.compile(r"\$(\w+)")
COMMENT = re.compile(r"--[^\n]*")
READ_WAIT_S = 2.0    # a request waits this long for a run's batch, then the page says "updating"
RUNS_SHOWN = 20
LABEL_STAMP = 4   # fingerprint(): judgments (count, newest) and human labels (count, newest)


class Database:
    """The results file as the viewer uses it: one short connection per request, all database
    work on one thread (DuckDB refuses a read-only and a read-write connection to one file in
    one process at the same time, and a label write may happen between two reads)."""

    def __init__(self, path: Path, wait_s: float = READ_WAIT_S):
        self.path = path
        self.wait_s = wait_s
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="view-db")

    async def read(self, action: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        return await self.call(lambda: self.read_here(action))

    async def call(self, action: Callable[[], T]) -> T:
        """Run `action` on the database thread (for work that opens the file itself)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, action)

    def read_here(self, action: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`action` with a fresh read-only connection, on the calling thread (the database
        thread: from inside `call`)."""
        con = open_reader(self.path, timeout_s=self.wait_s)
        try:
            return action(con)
        finally:
            con.close()

    def close(self) -> None:
        self._thread.shutdown(wait=True)


# ---------------------------------------------------------------- overview

@dataclass
class Overview:
    runs: list[Row]
    cells: list[Row]
    rates: list[Row]          # per (cell, judge)
    corrected: list[Row]      # per (cell, judge), where people labelled
    judges: list[str]

    @property
    def running(self) -> bool:
        return any(run["status"] == "running" for run in self.runs)


class OverviewReader:
    """Reads the overview. The rates (slow on a large database) change only when a judge or a
    person labels, so they are read again only then, not at every refresh during a run."""

    def __init__(self) -> None:
        self._rates: tuple[tuple[Any, ...], list[Row], list[Row]] | None = None

    def __call__(self, con: duckdb.DuckDBPyConnection) -> Overview:
        stamp = fingerprint(con)[:LABEL_STAMP]
        if self._rates is None or self._rates[0] != stamp:
            labelled_by_people = stamp[2] > 0
            self._rates = (stamp, fetch(con, sql("view_rates")),
                           fetch(con, sql("view_rates_corrected")) if labelled_by_people else [])
        return Overview(runs=fetch(con, sql("view_runs"), {"limit": RUNS_SHOWN}), cells=fetch(con, sql("view_cells")),
                        rates=self._rates[1], corrected=self._rates[2], judges=judges(con))


def judges(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [name for (name,) in con.execute(sql("view_judges")).fetchall()]


def fingerprint(con: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """Changes whenever the report's figures could: they are redrawn only then. Its first
    LABEL_STAMP values change only with judgments and human labels."""
    row = con.execute(sql("view_fingerprint")).fetchone()
    return tuple(row or ())


# ---------------------------------------------------------------- one cell

def cell_params(cell: CellFilter) -> dict[str, str | None]:
    return {"scenario": cell.scenario, "variant": cell.variant, "branch": cell.branch, "model": cell.model}


@dataclass
class Page:
    rows: list[Row]
    total: int
    labels: dict[str, list[Row]]           # job_id -> its current labels (judges and the human one)
    phrasings: list[int]
    judges: list[str]
    has_next: bool
    has_previous: bool


def cell_page(con: duckdb.DuckDBPyConnection, cell: CellFilter, filters: SampleFilter, cursor: Cursor | None,
              size: int) -> Page:
    """One keyset page (`size` rows, one more fetched to know whether another page follows)."""
    backward = cursor is not None and cursor.backward
    statement = page_statement(filters)
    values: dict[str, Any] = {**cell_params(cell), **filters.params(), "limit": size + 1, "backward": backward,
                              "after_seed": cursor.seed if cursor else None,
                              "after_job": cursor.job_id if cursor else None}
    rows = fetch(con, statement, {name: values[name] for name in set(PARAMETER.findall(statement))})
    more = len(rows) > size
    if more:
        rows = rows[:-1] if not backward else rows[1:]   # the extra row is the one farthest from the cursor
    ids = [row["job_id"] for row in rows]
    labels: dict[str, list[Row]] = {}
    for label in fetch(con, sql("view_labels_of"), {"job_ids": ids}) if ids else []:
        labels.setdefault(label["job_id"], []).append(label)
    phrasings = [p for (p,) in con.execute(sql("view_cell_phrasings"), cell_params(cell)).fetchall()]
    return Page(rows=rows, total=rows[0]["total"] if rows else 0, labels=labels, phrasings=phrasings,
                judges=judges(con), has_next=more if not backward else cursor is not None,
                has_previous=cursor is not None if not backward else more)


def page_statement(filters: SampleFilter) -> str:
    """view_cell_page with the fragments of the filters in use: a filter left empty costs nothing."""
    used = {"finish": filters.finish, "judge": filters.judge, "human": filters.human is not None,
            "disagree": filters.disagree, "search": filters.q}
    fragments = [sql(f"view_filter_{name}") for name, on in used.items() if on]
    statement = sql("view_cell_page").replace("/* filters */", "\n".join(fragments))
    return COMMENT.sub("", statement)   # so that only the parameters the statement uses are found


# ---------------------------------------------------------------- one job

def labels_by(con: duckdb.DuckDBPyConnection, job_id: str, labeller: str) -> list[Row]:
    """A person's labels of one job, newest first."""
    return [row for row in fetch(con, sql("view_job_human_labels"), {"job_id": job_id}) if row["labeller"] == labeller]


@dataclass
class Transcript:
    """One job as the model saw it, its replies, and everything said about it."""

    job: Row
    calls: list[Row]
    judgments: list[Row]
    human_labels: list[Row]
    system: str = ""
    history: list[tuple[str, str]] = field(default_factory=list)
    primer: str = ""
    initial: str | None = None     # the initial reply: sampled, or the fixed refusal/rebuttal
    trigger: str | None = None
    final: Row | None = None
    split: Split | None = None

    @property
    def initial_is_fixed(self) -> bool:
        return bool(self.job["branch"] != "sampled")


def transcript(con: duckdb.DuckDBPyConnection, job_id: str) -> Transcript | None:
    jobs = fetch(con, sql("view_job"), {"job_id": job_id})
    if not jobs:
        return None
    found = Transcript(job=jobs[0], calls=fetch(con, sql("view_job_calls"), {"job_id": job_id}),
                       judgments=fetch(con, sql("view_job_judgments"), {"job_id": job_id}),
                       human_labels=fetch(con, sql("view_job_human_labels"), {"job_id": job_id}))
    for call in found.calls:
        for name in ("request_messages", "request_params"):
            call[name] = orjson.loads(call[name]) if call[name] else None
    for judgment in found.judgments:
        judgment["detail"] = orjson.loads(judgment["detail"]) if judgment["detail"] else None
    _conversation(found)
    return found


def _conversation(found: Transcript) -> None:
    """Name the request's messages: system, history, primer, initial reply, trigger (the
    final request is opening + initial reply + trigger; a job that failed early has only the
    initial request)."""
    by_call = {call["call"]: call for call in found.calls}
    found.final = by_call.get("final")
    source = found.final or by_call.get("initial")
    messages = [m for m in (source or {}).get("request_messages") or [] if isinstance(m, dict)]
    if messages and messages[0].get("role") == "system":
        found.system = str(messages[0].get("content") or "")
        messages = messages[1:]
    if found.final is not None and len(messages) >= 3:
        found.initial = str(messages[-2].get("content") or "")
        found.trigger = str(messages[-1].get("content") or "")
        messages = messages[:-2]
    elif "initial" in by_call:
        found.initial = by_call["initial"]["response_text"]
    if messages:
        found.primer = str(messages[-1].get("content") or "")
        found.history = [(str(m.get("role")), str(m.get("content") or "")) for m in messages[:-1]]
    if found.final is not None and found.final["response_text"] is not None:
        found.split = split_response(found.final["response_text"])
