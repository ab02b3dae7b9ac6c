"""Human labels: which responses a person labels, how a label is checked and stored durably,
and labels moved in and out as JSONL.

A person's label is the reference every judge is checked against, so none may be lost and
labelling must never stop a sampling run. `pipeline sample` holds `<db>.lock` for hours but
opens the DuckDB file only for short batches; labelling therefore never takes that lock. Each
label is first appended (and fsync'ed) to a journal next to the database, `<db>.labels.ndjson`,
then written in its own short transaction. When the database stays busy longer than
`DB_WAIT_S`, the label simply waits in the journal; every later write and the next start
import the journal idempotently (rows are keyed by job_id, labeller, labelled_at).

Labels are append-only: giving a response a new label (`b` in the terminal, or an import)
adds a row, and the newest row per (job_id, labeller) counts.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from pipeline.errors import ConfigError, PipelineError
from pipeline.grading.cot_source import HIDDEN, resolve_cot
from pipeline.grading.judge import COT_LABELS, NO_COT, OUTPUT_LABELS
from pipeline.store.connection import open_reader
from pipeline.store.queries import sql
from pipeline.store.writer import Outcome, Store, utc_now

DB_WAIT_S = 5.0   # how long one label waits for the database before it stays in the journal
IMPORT_WAIT_S = 120.0
TABLE = "human_labels"
BadField = Callable[[str, str], ConfigError]   # (field, message) -> the error to raise
HIDDEN_COT_NOTE = "(hidden: the model reasoned, but its server returned only a reasoning-token count)"
IMPORT_FIELDS = {"job_id", "labeller", "output_label", "cot_label", "cot_present", "note", "labelled_at"}
EXPORT_ONLY_FIELDS = {"scenario", "variant", "branch", "model"}  # accepted (and ignored) on import


@dataclass(frozen=True)
class CellFilter:
    """`--cell scenario/variant/branch/model`; `*` (or an empty part) matches anything."""

    scenario: str | None = None
    variant: str | None = None
    branch: str | None = None
    model: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> CellFilter:
        if not text:
            return cls()
        parts = text.split("/", 3)  # model names may contain '/'
        if len(parts) != 4:
            raise PipelineError(f"--cell {text!r}: expected scenario/variant/branch/model ('*' for any part)")
        return cls(*(None if part in ("", "*") else part for part in parts))


@dataclass(frozen=True)
class LabelItem:
    """One final response as a person sees it: CoT and output already split apart, so the
    output can be hidden while the CoT is labelled."""

    job_id: str
    cell: str
    trigger: str
    cot_text: str
    output_text: str
    finish_reason: str | None
    labelled: bool


@dataclass(frozen=True)
class HumanLabel:
    job_id: str
    labeller: str
    output_label: str
    cot_label: str
    cot_present: bool
    note: str | None = None
    labelled_at: str | None = field(default_factory=utc_now)   # None: an import line gave no time

    def row(self) -> dict[str, Any]:
        """The one shape of a `human_labels` row."""
        return {"job_id": self.job_id, "labeller": self.labeller, "output_label": self.output_label,
                "cot_label": self.cot_label, "cot_present": self.cot_present, "note": self.note,
                "labelled_at": self.labelled_at}


# ---------------------------------------------------------------- sampling

def sample_for_labelling(db: Path, *, per_cell: int, seed: int, labeller: str,
                         cell: CellFilter = CellFilter()) -> list[LabelItem]:
    """The first `per_cell` responses of each cell's seeded shuffle, interleaved across cells.
    `labelled` marks those this labeller already labelled (in the database or the journal)."""
    if per_cell < 1:
        raise PipelineError("--per-cell must be at least 1")
    params = {"per_cell": per_cell, "seed": seed, "labeller": labeller, **cell.__dict__}
    con = open_reader(db)
    try:
        rows = con.execute(sql("label_sample"), params).fetchall()
    finally:
        con.close()   # never hold the file while a person reads: the sampler needs it
    if not rows:
        raise PipelineError(f"{db}: no final responses to label" + (" in that --cell" if any(cell.__dict__.values())
                                                                     else " (run `pipeline sample` first)"))
    pending = LabelJournal.for_db(db).job_ids(labeller)
    return [_item(row, pending) for row in rows]


def _item(row: tuple[Any, ...], pending: set[str]) -> LabelItem:
    job_id, scenario, variant, branch, model, text, finish_reason, messages, labelled, trace, trace_tokens = row
    parts = resolve_cot(text or "", trace, trace_tokens)   # the CoT the judges grade: a native trace first
    cot = HIDDEN_COT_NOTE if parts.source == HIDDEN else (parts.cot_text or "").strip()
    return LabelItem(job_id=job_id, cell=f"{scenario}/{variant}/{branch}/{model}", trigger=trigger_of(messages),
                     cot_text=cot, output_text=parts.output_text.strip(),
                     finish_reason=finish_reason, labelled=bool(labelled) or job_id in pending)


def trigger_of(messages: str | list[dict[str, Any]] | None) -> str:
    """The last user message of the final request: what the graded reply answers."""
    items = orjson.loads(messages) if isinstance(messages, str) else (messages or [])
    users = [m.get("content") or "" for m in items if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users else ""


# ---------------------------------------------------------------- validation

def check_label(record: dict[str, Any], where: tuple[Path, int], labeller: str | None) -> HumanLabel:
    """One import line as a label, or a ConfigError naming file:line and the field."""
    path, line = where

    def bad(name: str, message: str) -> ConfigError:
        return ConfigError(path, name, message, line)

    unknown = sorted(set(record) - IMPORT_FIELDS - EXPORT_ONLY_FIELDS)
    if unknown:
        raise bad(unknown[0], f"unknown field (expected {', '.join(sorted(IMPORT_FIELDS))})")
    job_id = record.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise bad("job_id", "missing or not a string")
    who = record.get("labeller") or labeller
    if not isinstance(who, str) or not who.strip():
        raise bad("labeller", "missing (give it in the line or with --labeller)")
    output = _choice(record, "output_label", OUTPUT_LABELS, bad)
    present, cot = _cot_fields(record, bad)
    note = record.get("note")
    if note is not None and not isinstance(note, str):
        raise bad("note", "must be a string")
    return HumanLabel(job_id=job_id, labeller=who.strip(), output_label=output, cot_label=cot, cot_present=present,
                      note=note or None, labelled_at=_timestamp(record.get("labelled_at"), bad))


def _choice(record: dict[str, Any], name: str, allowed: tuple[str, ...], bad: BadField) -> str:
    value = record.get(name)
    if not isinstance(value, str) or value not in allowed:
        raise bad(name, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _cot_fields(record: dict[str, Any], bad: BadField) -> tuple[bool, str]:
    """cot_present and cot_label agree: no CoT means cot_label no_cot (filled in if absent)."""
    present = record.get("cot_present")
    if present is not None and not isinstance(present, bool):
        raise bad("cot_present", f"{present!r} is not true or false")
    if present is False and record.get("cot_label") in (None, NO_COT):
        return False, NO_COT
    cot = _choice(record, "cot_label", COT_LABELS, bad)
    if present is None:
        return cot != NO_COT, cot
    if present != (cot != NO_COT):
        raise bad("cot_label", f"{cot!r} contradicts cot_present = {str(present).lower()}")
    return present, cot


def _timestamp(value: Any, bad: BadField) -> str | None:
    """ISO timestamp in UTC with microseconds (naive = UTC); None when absent."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise bad("labelled_at", f"{value!r} is not an ISO timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


# ---------------------------------------------------------------- journal and durable writes

class LabelJournal:
    """Labels not yet known to be in the database: one JSON line each, fsync'ed before the
    database write is tried, removed once the database holds them."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def for_db(cls, db: Path) -> LabelJournal:
        return cls(db.with_name(db.name + ".labels.ndjson"))

    @contextmanager
    def _locked(self) -> Iterator[TextIO]:
        """Two sessions on one database must not truncate each other's lines."""
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(self, label: HumanLabel) -> None:
        with self._locked() as handle:
            handle.write(orjson.dumps(label.row()).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> list[dict[str, Any]]:
        """Every whole line (a line torn by a crash mid-write is ignored)."""
        if not self.path.exists():
            return []
        rows = []
        for text in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(orjson.loads(text))
            except orjson.JSONDecodeError:
                continue
        return rows

    def job_ids(self, labeller: str) -> set[str]:
        return {str(row.get("job_id")) for row in self.rows() if row.get("labeller") == labeller}

    def flush(self, store: Store) -> int:
        """Write every journal line (idempotently) in one transaction, then empty the journal."""
        with self._locked() as handle:
            rows = self.rows()
            if rows:
                store.write_batch([Outcome(rows={TABLE: rows})], recovering=True)
            handle.truncate(0)   # never unlinked: another session may have it open, waiting
            os.fsync(handle.fileno())
        return len(rows)


class _QuietStore(Store):
    """The store without its 'kept in memory' lock warning: a log line would tear the label
    screen, and the screen says where a label went."""

    def _warn_locked(self, waited: float) -> None:
        return None


class LabelWriter:
    """Saves one label at a time: journal first, then the database (never blocking long)."""

    def __init__(self, db: Path, wait_s: float = DB_WAIT_S):
        self.journal = LabelJournal.for_db(db)
        self.store = _QuietStore(db, lock_timeout_s=wait_s)

    def recover(self) -> int:
        """Import what an earlier session left in the journal; 0 if the database is busy."""
        try:
            return self.journal.flush(self.store)
        except PipelineError:
            return 0

    def save(self, label: HumanLabel) -> bool:
        """True when the label is in the database, False when it waits in the journal."""
        self.journal.append(label)
        try:
            self.journal.flush(self.store)
        except PipelineError:
            return False
        return True

    def waiting(self) -> int:
        return len(self.journal.rows())

    def close(self) -> None:
        self.store.close()


# ---------------------------------------------------------------- import / export

def read_label_file(path: Path, labeller: str | None) -> list[tuple[int, HumanLabel]]:
    """Every line checked before anything is written; (line number, label) per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PipelineError(f"{path}: {exc.strerror}") from None
    labels = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(path, None, f"not valid JSON ({exc})", number) from None
        if not isinstance(record, dict):
            raise ConfigError(path, None, "each line must be a JSON object", number)
        labels.append((number, check_label(record, (path, number), labeller)))
    return labels


def import_labels(db: Path, path: Path, labeller: str | None) -> tuple[int, int]:
    """(added, already stored). Unknown job ids fail the whole file; nothing is written then."""
    labels = read_label_file(path, labeller)
    if not db.exists():
        raise PipelineError(f"{db}: no such database (run `pipeline sample` first)")
    open_reader(db).close()   # brings an older database to today's schema
    store = Store(db, lock_timeout_s=IMPORT_WAIT_S)
    try:
        LabelJournal.for_db(db).flush(store)
        with store.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                new = _new_labels(con, labels, path)
                store.insert_rows(con, TABLE, [label.row() for label in new])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    finally:
        store.close()
    return len(new), len(labels) - len(new)


def _new_labels(con: Any, labels: list[tuple[int, HumanLabel]], path: Path) -> list[HumanLabel]:
    """Labels not yet stored: same job, labeller, labels and note (and time, when the line
    gives one) count as the same label, so importing a file twice adds nothing."""
    job_ids = sorted({label.job_id for _, label in labels})
    known = {job_id for (job_id,) in con.execute(sql("known_final_jobs"), {"job_ids": job_ids}).fetchall()}
    for number, label in labels:
        if label.job_id not in known:
            raise ConfigError(path, "job_id", f"{label.job_id!r} is not a done job of this database", number)
    stored = con.execute(sql("stored_human_labels"), {"job_ids": job_ids}).fetchall()
    timed, untimed = {tuple(row) for row in stored}, {tuple(row[:6]) for row in stored}
    new = []
    for _, label in labels:
        values = (label.job_id, label.labeller, label.output_label, label.cot_label, label.cot_present,
                  label.note or "")
        if (label.labelled_at is None and values in untimed) or (*values, label.labelled_at) in timed:
            continue
        timed.add((*values, label.labelled_at))
        untimed.add(values)
        new.append(label if label.labelled_at else replace(label, labelled_at=utc_now()))
    return new


def export_labels(db: Path, out: TextIO) -> int:
    """Every human label as JSONL with its cell; returns the number of lines."""
    if LabelJournal.for_db(db).rows():
        LabelWriter(db).recover()
    con = open_reader(db)
    try:
        cursor = con.execute(sql("export_human_labels"))
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    finally:
        con.close()
    for row in rows:
        out.write(orjson.dumps(dict(zip(names, row))).decode() + "\n")
    return len(rows)
