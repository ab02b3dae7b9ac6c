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
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
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


_DISK_ERROR = re.compile(r"permission denied|operation not permitted|read-only file system|no space left"
                         r"|disk quota|input/output error", re.IGNORECASE)


def is_disk_error(exc: BaseException) -> bool:
    """The file or its directory cannot be written now (permissions, read-only, full disk)."""
    return isinstance(exc, (duckdb.Error, OSError)) and bool(_DISK_ERROR.search(str(exc)))


class WaitAbandoned(PipelineError):
    """A wait for the database was given up because the user asked the command to stop."""


# Set on Ctrl-C / SIGTERM: every wait for the database gives up once it has waited STOP_GRACE_S.
stop_waiting = threading.Event()
STOP_GRACE_S = 1.0


def retry_on_lock(action: Callable[[], T], *, timeout_s: float, what: str,
                  on_wait: Callable[[float], None] | None = None) -> T:
    """Run `action`, retrying while another process holds the database lock. Gives up
    (WaitAbandoned) when `stop_waiting` is set, so Ctrl-C never waits out a lock."""
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
            if stop_waiting.is_set() and waited >= STOP_GRACE_S:
                raise WaitAbandoned(f"{what}: stopped while the database was locked by another process") from None
            if on_wait:
                on_wait(waited)
            stop_waiting.wait(delay)
            delay = min(delay * 1.5, 0.25)


def retry_on_disk(action: Callable[[], T], *, timeout_s: float, what: str,
                  on_wait: Callable[[float, BaseException], None] | None = None) -> T:
    """Run `action`, retrying while the disk refuses writes (permissions, read-only, full):
    a disk that comes back loses nothing. Gives up with one line after `timeout_s`, and
    (WaitAbandoned) as soon as `stop_waiting` is set."""
    started, delay = time.monotonic(), 0.1
    while True:
        try:
            return action()
        except (duckdb.Error, OSError) as exc:
            if not is_disk_error(exc):
                raise
            waited = time.monotonic() - started
            if stop_waiting.is_set():
                raise WaitAbandoned(f"{what}: stopped while the disk refused writes ({exc})") from None
            if waited >= timeout_s:
                raise PipelineError(f"{what}: the disk refused writes for {waited:.0f} s ({exc})") from None
            if on_wait:
                on_wait(waited, exc)
            stop_waiting.wait(delay)
            delay = min(delay * 2, 2.0)


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


_held_locks: dict[Path, ExitStack] = {}   # real path of a database -> the run locks this process holds
_inode_locked: set[Path] = set()            # ... of which the device+inode lock is taken too


@contextmanager
def run_lock(db_path: Path) -> Iterator[None]:
    """One writing command per database: a second `sample` would sample the same jobs twice.

    The lock belongs to the file, not to the spelling of its path: the lock file sits next
    to the resolved real path (symlinks, `..`, relative paths), and the database is also
    locked by its device and inode (hard links, bind mounts) — at once if it exists, else
    as soon as it is created (`lock_inode`)."""
    real = Path(os.path.realpath(db_path))
    real.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        _take_lock(stack, real.with_name(real.name + ".lock"), db_path)
        _held_locks[real] = stack
        stack.callback(_held_locks.pop, real, None)
        stack.callback(_inode_locked.discard, real)
        lock_inode(db_path)
        yield


def lock_inode(db_path: Path) -> None:
    """Under a run lock, also lock the database's device+inode (once the file exists)."""
    real = Path(os.path.realpath(db_path))
    stack = _held_locks.get(real)
    try:
        info = real.stat()
    except OSError:
        return
    if stack is None or real in _inode_locked or not real.is_file():
        return
    _take_lock(stack, real.with_name(f".pipeline-{info.st_dev}-{info.st_ino}.lock"), db_path)
    _inode_locked.add(real)


def _take_lock(stack: ExitStack, lock_path: Path, db_path: Path) -> None:
    handle = stack.enter_context(open(lock_path, "a+"))
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise PipelineError(f"{db_path}: another `pipeline sample` is already running on it "
                            f"(pid {_lock_owner(lock_path)}); wait for it or use --db") from None
    stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()


def _lock_owner(lock_path: Path, wait_s: float = 2.0) -> str:
    """The pid the holder wrote; a holder that has just taken the lock writes it a moment later."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            owner = lock_path.read_text().strip()
        except OSError:
            owner = ""
        if owner.isdigit() or time.monotonic() > deadline:
            return owner or "unknown"
        time.sleep(0.02)
