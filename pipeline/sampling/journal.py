"""An append-only spill file of finished jobs that are not in DuckDB yet.

The writer batches outcomes for up to half a second before one DuckDB transaction, so
a `kill -9` would lose every answered call of the open batch (~1,500 jobs at full
speed) and the rerun would pay for them again. Each outcome is therefore also appended
to a journal segment as one line, in one `write` (the kernel keeps it even if the
process dies). A segment is deleted once its batch is committed; segments left behind
by a killed run are imported at the next start. Import is idempotent, so a crash
between commit and delete duplicates nothing. Lines that cannot be imported (torn, of the
wrong shape, refused by DuckDB) go to `<db>.quarantine.ndjson`, never block a run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import orjson

from pipeline.store.writer import TABLES, Outcome


class Segment:
    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, outcome: Outcome) -> None:
        os.write(self._fd, orjson.dumps({"rows": outcome.rows, "failed": outcome.failed}) + b"\n")

    def discard(self) -> None:
        """The batch is committed: the spill copy is no longer needed."""
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop appending; the file stays (its batch was not committed: the next start imports it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Journal:
    def __init__(self, db_path: Path):
        self.directory = db_path.with_name(db_path.name + ".journal")
        self.quarantine_path = db_path.with_name(db_path.name + ".quarantine.ndjson")
        self._numbers = count()

    def leftovers(self) -> list[Path]:
        """Segments of a run that died before committing them."""
        return sorted(self.directory.glob("*.ndjson")) if self.directory.is_dir() else []

    def new_segment(self) -> Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        return Segment(self.directory / f"{os.getpid()}-{next(self._numbers):08d}.ndjson")


    def quarantine(self, lines: list[bytes]) -> None:
        """Keep lines that cannot be imported, for a person to look at (appended, one per line)."""
        with open(self.quarantine_path, "ab") as handle:
            handle.write(b"".join(line.rstrip(b"\n") + b"\n" for line in lines))


@dataclass
class SegmentContents:
    outcomes: list[Outcome] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)      # the line of each outcome
    damaged: list[int] = field(default_factory=list)      # 1-based numbers of unreadable lines
    damaged_lines: list[bytes] = field(default_factory=list)


def read_segment(path: Path) -> SegmentContents:
    """Outcomes of a leftover segment, and the lines that are not outcomes (a torn last
    line, a line of the wrong shape)."""
    contents = SegmentContents()
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        outcome = _outcome(line)
        if outcome is None:
            contents.damaged.append(number)
            contents.damaged_lines.append(line)
        else:
            contents.outcomes.append(outcome)
            contents.lines.append(line)
    return contents


def _outcome(line: bytes) -> Outcome | None:
    try:
        record: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("failed"), bool):
        return None
    rows = record.get("rows")
    if not isinstance(rows, dict) or not rows or not all(
            table in TABLES and isinstance(table_rows, list) and all(isinstance(r, dict) for r in table_rows)
            for table, table_rows in rows.items()):
        return None
    return Outcome(rows, record["failed"])
