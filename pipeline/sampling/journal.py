"""An append-only spill file of finished jobs that are not in DuckDB yet.

The writer batches outcomes for up to half a second before one DuckDB transaction, so
a `kill -9` would lose every answered call of the open batch (~1,500 jobs at full
speed) and the rerun would pay for them again. Each outcome is therefore also appended
to a journal segment as one line, in one `write` (the kernel keeps it even if the
process dies). A segment is deleted once its batch is committed; segments left behind
by a killed run are imported at the next start. Import is idempotent, so a crash
between commit and delete duplicates nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import orjson

from pipeline.store.writer import Outcome


class Segment:
    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, outcome: Outcome) -> None:
        os.write(self._fd, orjson.dumps({"rows": outcome.rows, "failed": outcome.failed}) + b"\n")

    def discard(self) -> None:
        """The batch is committed: the spill copy is no longer needed."""
        os.close(self._fd)
        self.path.unlink()


class Journal:
    def __init__(self, db_path: Path):
        self.directory = db_path.with_name(db_path.name + ".journal")
        self._numbers = count()

    def leftovers(self) -> list[Path]:
        """Segments of a run that died before committing them."""
        return sorted(self.directory.glob("*.ndjson")) if self.directory.is_dir() else []

    def new_segment(self) -> Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        return Segment(self.directory / f"{os.getpid()}-{next(self._numbers):08d}.ndjson")


def read_segment(path: Path) -> Iterator[Outcome]:
    """Outcomes of a leftover segment; a torn last line (if any) is skipped."""
    for line in path.read_bytes().splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        yield Outcome(record["rows"], record["failed"])
