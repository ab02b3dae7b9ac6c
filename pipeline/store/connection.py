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
# A memory limit of its own: DuckDB's default (80% of RAM) lets its buffer manager keep every
# block a batch touched (the key columns the writer joins against grow with the tables), so a
# run's memory grew with its database (100,000 jobs: 1 GB).
WRITER_MEMORY_BYTES = 96 << 20
WRITER_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "threads": 1, "memory_limit": f"{WRITER_MEMORY_BYTES >> 20}MB"}


def is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


_DISK_ERROR = re.compile(r"permission denied|operation not permitted|read-only file system|no space left"
                         r"|disk quota|input/output error", re.IGNORECASE)


def is_disk_error(exc: BaseException) -> bool:
    """The file or its directory cannot be written now (permissions, read-only, full disk)."""
    return isinstance(exc, (duckdb.Error, OSError)) and bool(_DISK_ERROR.search(str(exc)))


class DatabaseBusy(PipelineError):
    """Another process held the database for longer than the caller was willing to wait."""


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
                    raise DatabaseBusy(f"{what}: the database is locked by another process "
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
    return retry_on_lock(lambda: _attach(path), timeout_s=timeout_s, what=f"writing {path}", on_wait=on_wait)


# Row groups of 8,192 rows instead of DuckDB's 122,880: each close checkpoints, which rewrites the
# last, partly filled row group of every table, and compresses a row group as it fills, so its
# size bounds the writer's peak memory (200,000 jobs: 213 -> 162 MB at 16,384; at a million jobs
# 16,384 -> 8,192 took the checkpoints' spikes from +75 to +45 MB) for ~10% more bytes per job.
WRITER_ROW_GROUP_SIZE = 8192


def _attach(path: Path) -> duckdb.DuckDBPyConnection:
    """The file attached to an in-memory instance: the row group size is an ATTACH option."""
    con = duckdb.connect(config=WRITER_CONFIG)
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS results (ROW_GROUP_SIZE {WRITER_ROW_GROUP_SIZE})")
        con.execute("USE results")
    except BaseException:
        con.close()
        raise
    return con


SQLITE_MAGIC = b"SQLite format 3\x00"
DUCKDB_MAGIC = b"DUCK"   # bytes 8-11 of every DuckDB file


def check_database_file(path: Path, *, writing: bool) -> None:
    """Refuse a `--db` that cannot be a results database, in one line and before DuckDB
    touches it (DuckDB would overwrite nothing, but it would try to download its SQLite
    extension for a SQLite file, and a directory or text file gives a traceback)."""
    if path.is_dir():
        raise PipelineError(f"{path}: is a directory, not a database file (give a file, e.g. {path / 'results.duckdb'})")
    if path.exists():
        if not path.is_file():
            raise PipelineError(f"{path}: is not a regular file")
        try:
            with open(path, "rb") as handle:
                head = handle.read(16)
        except OSError as exc:
            raise PipelineError(f"{path}: cannot be read ({exc.strerror})") from None
        if head.startswith(SQLITE_MAGIC):
            raise PipelineError(f"{path}: is a SQLite database, not a DuckDB database (give another --db)")
        if not head:
            raise PipelineError(f"{path}: is an empty file, not a DuckDB database (delete it to start a new one)")
        if head[8:12] != DUCKDB_MAGIC:
            raise PipelineError(f"{path}: is not a DuckDB database (give another --db)")
        if writing and not os.access(path, os.W_OK):
            raise PipelineError(f"{path}: is read-only (not writable), and this command writes to it")
    elif not writing:
        raise PipelineError(f"{path}: no such database (run `pipeline sample` first)")
    if writing:
        folder = path.absolute().parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise PipelineError(f"{path}: {folder} is not a directory")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PipelineError(f"{path}: its folder {folder} is not writable (DuckDB writes its log next to "
                                "the database)")


def check_schema(path: Path, timeout_s: float) -> bool:
    """Whether an existing database needs an upgrade, looked at read-only: a foreign (tables
    but no `meta`), newer or damaged database is refused without being opened for writing."""
    try:
        con = retry_on_lock(lambda: duckdb.connect(str(path), read_only=True), timeout_s=timeout_s,
                            what=f"reading {path}")
    except duckdb.Error as exc:
        raise PipelineError(f"{path}: cannot be opened as a DuckDB database ({str(exc).splitlines()[0]})") from None
    return _needs_upgrade(path, con)


def refuse_foreign_database(path: Path) -> None:
    """`check_schema` without waiting, for a command about to make its lock and batch files
    next to `path`: a database another process holds right now is checked by `open_database`."""
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        if is_lock_error(exc):
            return
        raise PipelineError(f"{path}: cannot be opened as a DuckDB database ({str(exc).splitlines()[0]})") from None
    _needs_upgrade(path, con)


def _needs_upgrade(path: Path, con: duckdb.DuckDBPyConnection) -> bool:
    try:
        return schema.needs_upgrade(con)
    except PipelineError as exc:
        raise PipelineError(f"{path}: {exc}") from None
    finally:
        con.close()


def open_database(path: Path, timeout_s: float = 3600.0) -> None:
    """Create the database, or bring one written by an earlier release to today's schema.
    An existing file is looked at read-only first: a foreign or newer database is refused
    without ever being opened for writing, and an up-to-date one is not touched."""
    check_database_file(path, writing=True)
    if path.exists() and not check_schema(path, timeout_s):
        return
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


def open_reader(path: Path, timeout_s: float = 10.0,
                config: dict[str, str | bool | int | float | list[str]] | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection that waits (briefly) for a running writer's batch to end.
    A database from an earlier release is upgraded first (a short write). `config`: DuckDB
    settings for the connection (`pipeline sql` locks it down)."""
    check_database_file(path, writing=False)
    settings = config or {}
    con = retry_on_lock(lambda: duckdb.connect(str(path), read_only=True, config=settings), timeout_s=timeout_s,
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
    return retry_on_lock(lambda: duckdb.connect(str(path), read_only=True, config=settings), timeout_s=timeout_s,
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
