"""A cell page's filters and paging cursor, read from the URL and checked: a bad value is a
400 with one line naming the parameter, never a database error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import PipelineError
from pipeline.experiment.scenarios import BRANCHES
from pipeline.grading.human import CellFilter
from pipeline.grading.judge import COT_LABELS, OUTPUT_LABELS

STATUSES = ("done", "failed")
FINISH_REASONS = ("stop", "length", "none")   # none: no final reply (a failed call)
MAX_QUERY_CHARS = 200


class BadParameter(PipelineError):
    """A URL parameter the viewer cannot use (answered with 400 and this one line)."""


@dataclass(frozen=True)
class SampleFilter:
    """Which of a cell's jobs to list; None means any."""

    status: str | None = None
    phrasing: int | None = None
    finish: str | None = None
    judge: str | None = None
    output: str | None = None
    cot: str | None = None
    human: bool | None = None
    disagree: bool = False
    q: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> SampleFilter:
        judge = _text(query, "judge")
        found = cls(status=_choice(query, "status", STATUSES), phrasing=_integer(query, "phrasing"),
                    finish=_choice(query, "finish", FINISH_REASONS), judge=judge,
                    output=_choice(query, "output", OUTPUT_LABELS), cot=_choice(query, "cot", COT_LABELS),
                    human=_yes_no(query, "human"), disagree=query.get("disagree") == "1", q=_text(query, "q"))
        if (found.output or found.cot) and not judge:
            raise BadParameter("output/cot filters need a judge (judge=rule, ...)")
        return found

    def params(self) -> dict[str, Any]:
        return asdict(self)

    def query(self) -> dict[str, Any]:
        """The URL parameters that give this filter back."""
        values = {**asdict(self), "human": None if self.human is None else ("yes" if self.human else "no"),
                  "disagree": "1" if self.disagree else None}
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after (or, `backward`, before) the row (seed, job_id)."""

    seed: int
    job_id: str
    backward: bool = False

    def text(self) -> str:
        return f"{self.seed}:{self.job_id}"

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Cursor | None:
        for name, backward in (("after", False), ("before", True)):
            value = query.get(name)
            if value:
                seed, _, job_id = value.partition(":")
                if not seed.lstrip("-").isdigit() or not job_id:
                    raise BadParameter(f"{name}={value!r}: expected SEED:JOB_ID")
                return cls(int(seed), job_id, backward)
        return None


def parse_cell(query: Mapping[str, str], *, whole: bool) -> CellFilter:
    """scenario/variant/branch/model from the URL; `whole`: all but the branch are required (no
    branch: the branches side by side)."""
    parts = {name: _text(query, name) for name in ("scenario", "variant", "branch", "model")}
    missing = [name for name, value in parts.items() if value is None and name != "branch"]
    if whole and missing:
        raise BadParameter(f"a cell needs scenario, variant and model (missing: {', '.join(missing)})")
    _choice(query, "branch", BRANCHES)
    return CellFilter(**parts)


def _text(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name, "").strip()
    if len(value) > MAX_QUERY_CHARS:
        raise BadParameter(f"{name}: longer than {MAX_QUERY_CHARS} characters")
    return value or None


def _choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = _text(query, name)
    if value is not None and value not in allowed:
        raise BadParameter(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _integer(query: Mapping[str, str], name: str, low: int = 0, high: int = 1_000_000_000) -> int | None:
    value = _text(query, name)
    if value is None:
        return None
    if not value.isdigit() or not low <= int(value) <= high:
        raise BadParameter(f"{name}={value!r}: expected a whole number from {low} to {high}")
    return int(value)


def integer(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    found = _integer(query, name, low, high)
    return default if found is None else found


def _yes_no(query: Mapping[str, str], name: str) -> bool | None:
    value = _choice(query, name, ("yes", "no"))
    return None if value is None else value == "yes"
