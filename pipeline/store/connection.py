"""Opening the results file: the lock discipline every command follows.

DuckDB lets one process hold a file for writing, and then no other process may open it at
all. So writers never keep the file open: each batch opens it, writes in one transaction and
closes it, which leaves gaps in which `pipeline status`, `pipeline sql` or any DuckDB client
can read. Both sides retry briefly when they meet the other's lock. `run_lock` keeps a second
writing command (sample, grade) off the same database. Human labels (`pipeline label`, its
import) never take it: they are short transactions that wait out a run's batches.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb
import structlog

from pipeline.errors import PipelineError
from pipeline.store import schema

log = structlog.get_logger()
T = TypeVar("T")
# One DuckDB thread for writers: batches are small, and a thread pool per reopened instance
# made memory grow faster with the run (bench case 4 at 50,000 jobs: +43 MB -> +14 MB).
WRITER_CONFIG: dict[str, str | bool | int | float | list[str]] = {"threads": 1}


def is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def retry_on_lock(action: Callable[[], T], *, timeout_s: float, what: str,
                  on_wait: Callable[[float], None] | None = None) -> T:
    """Run `action`, retrying while another process holds the database lock."""
    started = time.monotonic()
    delay = 0.02
    while True:
        try:
            return action()
        except duckdb.Error as exc:
            waited = time.monotonic() - started
            if not is_lock_error(exc) or waited >= timeout_s:
                if is_lock_error(exc):
                    raise PipelineError(f"{what}: the database is locked by another process "
                                        f"(waited {waited:.0f} s)") from None
                raise
            if on_wait:
                on_wait(waited)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)


def connect_writer(path: Path, timeout_s: float, on_wait: Callable[[float], None] | None = None
                   ) -> duckdb.DuckDBPyConnection:
    return retry_on_lock(lambda: duckdb.connect(str(path), config=WRITER_CONFIG),
                         timeout_s=timeout_s, what=f"writing {path}", on_wait=on_wait)


def open_database(path: Path, timeout_s: float = 3600.0) -> None:
    """Create the database, or bring one written by an earlier release to today's schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = connect_writer(path, timeout_s)
    try:
        if schema.needs_upgrade(con):
            before = schema.upgrade(con)
            if before:
                log.info("database upgraded", db=str(path), from_version=before, to_version=schema.SCHEMA_VERSION)
    except PipelineError as exc:
        raise PipelineError(f"{path}: {exc}") from None
    finally:
        con.close()


def open_reader(path: Path, timeout_s: float = 10.0) -> duckdb.DuckDBPyConnection:
    """A read-only connection that waits (briefly) for a running writer's batch to end.
    A database from an earlier release is upgraded first (a short write)."""
    if not path.exists():
        raise PipelineError(f"{path}: no such database (run `pipeline sample` first)")
    con = retry_on_lock(lambda: duckdb.connect(str(path), read_only=True), timeout_s=timeout_s,
                        what=f"reading {path}")
    try:
        outdated = schema.needs_upgrade(con)
    except PipelineError as exc:
        con.close()
        raise PipelineError(f"{path}: {exc}") from None
    if not outdated:
        return con
    con.close()
    open_database(path, timeout_s)
    return retry_on_lock(lambda: duckdb.connect(str(path), read_only=True), timeout_s=timeout_s,
                         what=f"reading {path}")


@contextmanager
def run_lock(db_path: Path) -> Iterator[None]:
    """One writing command per database: a second `sample` would sample the same jobs twice."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise PipelineError(f"{db_path}: another `pipeline sample` is already running on it "
                                f"(pid {owner}); wait for it or use --db") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
