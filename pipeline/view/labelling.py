"""Labelling in the browser: the same seeded per-cell sample, checks and durable writes as
`pipeline label` (grading/human.py), so labels from both land in one `human_labels` table and
the corrected rates keep their random sample."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.grading.human import CellFilter, HumanLabel, LabelItem, LabelWriter, check_label, sample_for_labelling
from pipeline.store.connection import DatabaseBusy, open_reader
from pipeline.store.queries import sql
from pipeline.store.writer import utc_now
from pipeline.view.filters import BadParameter

LABEL_FIELDS = {"job_id", "output_label", "cot_label", "cot_present", "note"}


@dataclass(frozen=True)
class Queue:
    """The sample to label and where the labeller is in it."""

    items: list[LabelItem]
    index: int
    per_cell: int

    @property
    def item(self) -> LabelItem:
        return self.items[self.index]

    def neighbour(self, step: int) -> LabelItem | None:
        index = self.index + step
        return self.items[index] if 0 <= index < len(self.items) else None

    def progress(self, cell: str | None = None) -> tuple[int, int]:
        """(labelled, in the sample) overall or for one cell; the sample is the per-cell target."""
        items = [item for item in self.items if cell is None or item.cell == cell]
        return sum(item.labelled for item in items), len(items)


def queue(db: Path, cell: CellFilter, *, per_cell: int, seed: int, labeller: str, job_id: str | None) -> Queue:
    """The sample; the current item is `job_id` when it is in it, else the first not yet labelled."""
    items = sample_for_labelling(db, per_cell=per_cell, seed=seed, labeller=labeller, cell=cell)
    ids = [item.job_id for item in items]
    if job_id in ids:
        index = ids.index(job_id)
    else:
        index = next((i for i, item in enumerate(items) if not item.labelled), 0)
    return Queue(items=items, index=index, per_cell=per_cell)


def save(writer: LabelWriter, db: Path, record: dict[str, Any], labeller: str, wait_s: float) -> bool:
    """Check one label from the page and save it (journal first): True when it is in the
    database, False when it waits in the journal because a run holds the database."""
    unknown = sorted(set(record) - LABEL_FIELDS)
    if unknown:
        raise BadParameter(f"field '{unknown[0]}': unknown (expected {', '.join(sorted(LABEL_FIELDS))})")
    try:
        checked = check_label({**record, "labeller": labeller}, (Path("label"), 1), None)
    except ConfigError as exc:
        raise BadParameter(f"field '{exc.field}': {exc.message}") from None
    label = replace(checked, labelled_at=utc_now())   # given now (check_label leaves an import's missing time empty)
    _check_job(db, label, wait_s)
    return writer.save(label)


def _check_job(db: Path, label: HumanLabel, wait_s: float) -> None:
    """The job must be a done job with a final reply. A database held by a run is not waited
    for: the label is kept (journal) rather than lost, as `pipeline label` keeps it."""
    try:
        con = open_reader(db, timeout_s=wait_s)
    except DatabaseBusy:
        return
    try:
        known = con.execute(sql("known_final_jobs"), {"job_ids": [label.job_id]}).fetchall()
    finally:
        con.close()
    if not known:
        raise BadParameter(f"field 'job_id': {label.job_id!r} is not a done job of this database")
