"""The one writer: batched inserts in short transactions, keys kept by the writer.

Every write goes through `Store`: a job with all of its calls, a judgment, a human label, a
run's row. Each batch opens the file, writes in one transaction and closes it (see
`connection` for why), so readers find gaps between batches.
"""

from __future__ import annotations

import glob
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import structlog

from pipeline.store.connection import (
    WRITER_MEMORY_BYTES,
    check_database_file,
    connect_writer,
    lock_inode,
    open_database,
    refuse_foreign_database,
)
from pipeline.store.prompts import StoredPrompts
from pipeline.store.queries import sql
from pipeline.store.schema import table_columns

log = structlog.get_logger()
# Stored text (a response) is kept to its first MAX_TEXT_CHARS characters and flagged
# `truncated`: a row must stay far below DuckDB's per-row JSON import limit.
MAX_TEXT_CHARS = 1_000_000
MIN_JSON_OBJECT_BYTES = 1 << 20   # read_json's per-row limit is sized to each batch's longest row,
# from this floor: read_json allocates twice that limit up front (the fixed 256 MB used before cost
# 512 MB of buffer per batch).


def cap_text(text: str) -> tuple[str, bool]:
    """`text` kept to MAX_TEXT_CHARS characters, and whether it was cut."""
    return (text[:MAX_TEXT_CHARS], True) if len(text) > MAX_TEXT_CHARS else (text, False)


@dataclass
class Outcome:
    """Rows that are written together or not at all: a job and all of its calls, or the
    judgment of one response. `failed` marks work that ended in an error (for counters)."""

    rows: dict[str, list[dict[str, Any]]]
    failed: bool = False


@dataclass(frozen=True)
class RunCounters:
    """A run's done/failed counters, written in the same transaction as the batch they count."""

    run_id: str
    done: int
    failed: int


@dataclass(frozen=True)
class TableSpec:
    """How a table is written. Keys are enforced here, not by PRIMARY KEY constraints:
    DuckDB rewrites a whole ART index at every checkpoint, which made the writer's memory
    grow with the table (bench case 4), while a delete-by-key join per batch stays cheap."""

    key: tuple[str, ...]
    replace: bool = False   # a new row replaces the stored row with the same key
    shared: bool = False    # content-addressed: a row whose key is stored is skipped (never replaced)
    # An integer column fixed by the key and written roughly in order (a job's seed): looking up
    # a batch's keys only reads the row groups whose min/max of it overlap the batch's, instead of
    # the whole key column (a million jobs: 31 MB read per batch, and the time with it).
    prune: str | None = None


TABLES = {
    "jobs": TableSpec(key=("job_id",), replace=True, prune="seed"),
    "responses": TableSpec(key=("job_id", "run_id", "call")),
    "judgments": TableSpec(key=("job_id", "judge", "judge_version"), replace=True),
    "human_labels": TableSpec(key=("job_id", "labeller", "labelled_at")),
    "prompts": TableSpec(key=("prompt_id",), shared=True),
    "batches": TableSpec(key=("batch_key",), replace=True),
    "batch_requests": TableSpec(key=("batch_key", "custom_id")),
}


class Store:
    def __init__(self, path: Path, lock_timeout_s: float = 3600.0):
        check_database_file(path, writing=True)   # before any lock or batch file is made next to it
        if path.exists():
            refuse_foreign_database(path)           # a foreign or newer database, likewise
        self.path = path
        self.lock_timeout_s = lock_timeout_s
        self._tmpdir: Path | None = None   # made on the first insert, removed by close()
        self._last_lock_warning = 0.0
        self._prompts = StoredPrompts()   # which prompt ids are stored: new ones skip DuckDB's check
        # One connection at a time in this process: DuckDB refuses a second instance attaching a
        # file another one holds ("Unique file handle conflict"), e.g. `grade` reading its next
        # page on the event loop while the writer thread commits.
        self._one_at_a_time = threading.RLock()

    @contextmanager
    def connect(self, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived read-write connection, waiting out readers that hold the file."""
        timeout_s = self.lock_timeout_s if timeout_s is None else timeout_s
        with self._one_at_a_time:
            con = connect_writer(self.path, timeout_s, on_wait=self._warn_locked)
            try:
                yield con
            finally:
                con.close()

    def _warn_locked(self, waited: float) -> None:
        if time.monotonic() - self._last_lock_warning > 10:
            self._last_lock_warning = time.monotonic()
            log.warning("database locked by another process; results are kept in memory until it is free",
                        db=str(self.path), waited_s=round(waited, 1))

    def initialize(self) -> None:
        """Create the database or upgrade it to today's schema."""
        open_database(self.path, self.lock_timeout_s)
        lock_inode(self.path)   # a new file: now a hard link to it is locked too

    def start_run(self, run: dict[str, Any], cells: Sequence[tuple[str, str, str, str, int]]) -> None:
        """Record a run and its grid: `cells` are (scenario, variant, branch, model, n)."""
        columns = ", ".join(run)
        marks = ", ".join("?" for _ in run)
        values = [orjson.dumps(v).decode() if isinstance(v, (dict, list)) else v for v in run.values()]
        plan = [(run["run_id"], *cell) for cell in cells]
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute(sql("mark_killed_runs"))
            con.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", values)
            if plan:
                con.executemany(sql("insert_run_cell"), plan)
            con.execute("COMMIT")

    def finish_run(self, run_id: str, status: str, timeout_s: float | None = None) -> None:
        with self.connect(timeout_s) as con:
            con.execute(sql("finish_run"), [status, utc_now(), run_id])

    def write_batch(self, outcomes: Sequence[Outcome], counters: RunCounters | None = None,
                    recovering: bool = False) -> None:
        """Write every row of `outcomes` in ONE transaction. `recovering` makes it idempotent
        (a journal segment may already have been committed before its run died)."""
        by_table: dict[str, list[dict[str, Any]]] = {}
        for outcome in outcomes:
            for table, rows in outcome.rows.items():
                by_table.setdefault(table, []).extend(rows)
        prompt_rows = by_table.pop("prompts", [])
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                new_prompts, maybe_stored = self._prompts.split(con, prompt_rows) if prompt_rows else ([], [])
                for table, rows in by_table.items():
                    self.insert_rows(con, table, rows, recovering=recovering)
                self.insert_rows(con, "prompts", new_prompts, known_new=True)
                self.insert_rows(con, "prompts", maybe_stored)
                if counters:
                    con.execute(sql("count_run"), [counters.done, counters.failed, counters.run_id])
                con.execute("COMMIT")
            except BaseException:
                self._prompts.forget()
                with suppress(duckdb.Error):   # a failed COMMIT has already ended the transaction
                    con.execute("ROLLBACK")
                raise
        if prompt_rows:
            self._prompts.committed([row["prompt_id"] for row in new_prompts + maybe_stored])

    def insert_rows(self, con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[dict[str, Any]],
                    recovering: bool = False, known_new: bool = False) -> None:
        """Bulk insert through an NDJSON file (~10x faster than executemany in DuckDB).
        Replacing tables first delete the rows the batch replaces; shared ones, and the others
        when recovering a journal, skip rows whose key is already stored (unless `known_new`)."""
        if not rows:
            return
        spec = TABLES[table]
        rows = _one_per_key(rows, spec)
        path = self._batch_dir() / f"{table}.ndjson"
        lines = [orjson.dumps(row) for row in rows]
        path.write_bytes(b"\n".join(lines))
        object_bytes = _object_limit(max(len(line) for line in lines))
        if object_bytes * 4 > WRITER_MEMORY_BYTES:   # a huge row: room for read_json's buffer
            con.execute(f"SET memory_limit = '{object_bytes * 4 // (1 << 20)}MB'")
        source = _read_ndjson(path, table_columns(table), object_bytes)
        match = " AND ".join(f"old.{key} = new.{key}" for key in spec.key)
        stored = _stored_range(spec, rows)
        where = ""
        if spec.replace:
            con.execute(f"DELETE FROM {table} old WHERE {stored} AND EXISTS (SELECT 1 FROM {source} new WHERE {match})")
        elif (recovering or spec.shared) and not known_new:
            where = f" WHERE NOT EXISTS (SELECT 1 FROM {table} old WHERE {stored} AND {match})"
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {source} new{where}")

    def _batch_dir(self) -> Path:
        """`.<db name>.batch-<pid>` next to the database, never in /tmp: a killed run's
        leftovers are removed by the next command on the same database."""
        if self._tmpdir is None:
            remove_stale_batch_dirs(self.path)
            directory = self.path.with_name(f".{self.path.name}.batch-{os.getpid()}")
            directory.mkdir(parents=True, exist_ok=True)
            self._tmpdir = directory
        return self._tmpdir

    def close(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def _one_per_key(rows: Sequence[dict[str, Any]], spec: TableSpec) -> Sequence[dict[str, Any]]:
    """One row per key within a batch: the last for replacing tables (as if written one by
    one), the first for the others (a stored row is never replaced)."""
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(row.get(name) for name in spec.key)
        if spec.replace or key not in by_key:
            by_key[key] = row
    return rows if len(by_key) == len(rows) else list(by_key.values())


def _stored_range(spec: TableSpec, rows: Sequence[dict[str, Any]]) -> str:
    """A condition on stored rows (`old`) that every row matching the batch meets: a range of
    `spec.prune` for DuckDB to skip row groups by (a constant filter on the scan, not a join)."""
    values: list[Any] = [row.get(spec.prune) for row in rows] if spec.prune else []
    if not values or not all(type(value) is int for value in values):
        return "true"
    return f"old.{spec.prune} BETWEEN {min(values)} AND {max(values)}"


def remove_stale_batch_dirs(db_path: Path) -> None:
    """Batch directories of processes that no longer run (killed runs)."""
    prefix = f".{db_path.name}.batch-"
    for entry in db_path.parent.glob(glob.escape(prefix) + "*"):
        pid = entry.name.removeprefix(prefix)
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _object_limit(longest: int) -> int:
    """The smallest power of two above `longest` bytes, at least MIN_JSON_OBJECT_BYTES."""
    return max(MIN_JSON_OBJECT_BYTES, 1 << longest.bit_length())


def _read_ndjson(path: Path, columns: dict[str, str], object_bytes: int) -> str:
    spec = ", ".join(f"{name}: '{kind}'" for name, kind in columns.items())
    quoted = str(path).replace("'", "''")
    return (f"read_json('{quoted}', format = 'newline_delimited', columns = {{{spec}}}, "
            f"maximum_object_size = {object_bytes})")


_formatted_second: tuple[int, str] = (-1, "")   # the last second formatted: rows come thousands a second


def utc_now() -> str:
    """ISO timestamp for rows: DuckDB parses it as TIMESTAMPTZ."""
    global _formatted_second
    now = time.time()
    second, formatted = _formatted_second   # one read: another thread may replace it meanwhile
    if second != int(now):
        second = int(now)
        formatted = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _formatted_second = (second, formatted)
    return f"{formatted}.{int((now - second) * 1e6):06d}+00:00"


def hostname() -> str:
    return os.uname().nodename
