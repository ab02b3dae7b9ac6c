"""What every judge is: a name, a version, and a label for one final response.

A judge reads a `FinalResponse` and returns a `Judgment` (or None when it could not answer,
e.g. an LLM endpoint gave up: the response stays ungraded and the next `pipeline grade` tries
again). Rule, LLM and human labels all end up as rows of the same shape (`judgment_row`), so
the views compare them without knowing where they came from. To add a judge: implement this
protocol and name it in `grading/judges.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.experiment.scenarios import Scenario
from pipeline.store.writer import utc_now

UNETHICAL, ACCEPTABLE, UNCLEAR, NO_COT = "unethical", "acceptable", "unclear", "no_cot"
COT_UNAVAILABLE = "unavailable"   # the model reasoned but the server kept the trace (cot_source hidden)
OUTPUT_LABELS = (UNETHICAL, ACCEPTABLE, UNCLEAR)
COT_LABELS = (UNETHICAL, ACCEPTABLE, NO_COT, UNCLEAR)


@dataclass(frozen=True)
class FinalResponse:
    """The reply to the trigger, as a judge sees it. `finish_reason` = 'length' means the
    reply was cut off at max_tokens: whatever it did not get to say cannot be judged.
    `reasoning_text`/`reasoning_tokens` are the model's native reasoning, if it returned any."""

    job_id: str
    scenario: Scenario
    text: str
    finish_reason: str | None = None
    reasoning_text: str | None = None
    reasoning_tokens: int | None = None


@dataclass(frozen=True)
class PromptedCot:
    """The reply's own `Reasoning:` section when a native trace is the CoT: labelled apart."""

    cot_present: bool
    cot_text: str | None
    cot_label: str


@dataclass(frozen=True)
class Judgment:
    cot_present: bool | None   # None: hidden (the model reasoned, the trace was kept from us)
    cot_text: str | None
    output_text: str
    output_label: str  # unethical | acceptable | unclear
    cot_label: str     # predicted from the CoT alone: unethical | acceptable | no_cot | unclear | unavailable
    detail: dict[str, Any]  # JSON-able: why (matched rules, the LLM judge's answers, ...)
    cot_source: str | None = None   # native | prompted | none | hidden (grading/cot_source.py); None:
    # a judge that does not say reads as prompted or none, by cot_present (views.sql judgment_cots)
    prompted: PromptedCot | None = None


class Judge(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str:
        """Changes whenever the labels could change: new labels are stored beside old ones."""
        ...

    @property
    def concurrency(self) -> int:
        """How many responses it may judge at once."""
        ...

    async def judge(self, response: FinalResponse) -> Judgment | None: ...

    async def aclose(self) -> None: ...


def judgment_row(job_id: str, judge: str, version: str, judgment: Judgment) -> dict[str, Any]:
    """The one shape of a `judgments` row."""
    return {"job_id": job_id, "judge": judge, "judge_version": version,
            "cot_present": judgment.cot_present, "cot_text": judgment.cot_text,
            "output_text": judgment.output_text, "output_label": judgment.output_label,
            "cot_label": judgment.cot_label, "detail": judgment.detail, "graded_at": utc_now(),
            "cot_source": judgment.cot_source,
            "prompted_cot_present": judgment.prompted.cot_present if judgment.prompted else None,
            "prompted_cot_text": judgment.prompted.cot_text if judgment.prompted else None,
            "prompted_cot_label": judgment.prompted.cot_label if judgment.prompted else None}
