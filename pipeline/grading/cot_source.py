"""Where a final response's chain of thought comes from, for every judge and the label screen.

A reasoning model's native trace *is* its CoT: what the model actually thought before it
answered. A prompted `Reasoning:` section is what it wrote because the scenario asked. So the
native trace wins; a response that has both keeps its prompted section, graded separately.
Without a trace the split of the reply (`split.py`) gives the CoT. A model that reasoned
(reasoning tokens billed) while the server kept the trace has its CoT *hidden*: unavailable,
which is not the same as absent.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.grading.split import Split, split_response

NATIVE, PROMPTED, NONE, HIDDEN = "native", "prompted", "none", "hidden"
COT_SOURCES = (NATIVE, PROMPTED, NONE, HIDDEN)


@dataclass(frozen=True)
class ResolvedCot:
    """The CoT to grade and the output, with where the CoT came from. `cot_present` is None
    when the CoT is hidden (unknown). `prompted` is the reply's own reasoning section when a
    native trace is the CoT and the reply also has one (graded on both)."""

    source: str
    cot_present: bool | None
    cot_text: str | None
    output_text: str
    prompted: Split | None = None


def resolve_cot(text: str, reasoning_text: str | None = None,
                reasoning_tokens: int | None = None) -> ResolvedCot:
    """The CoT source of one reply (`text`) and the native reasoning stored with it."""
    split = split_response(text)
    trace = (reasoning_text or "").strip()
    if trace:
        output = split.output_text if split.cot_present else text.strip()
        return ResolvedCot(NATIVE, True, trace, output, prompted=split if split.cot_present else None)
    if split.cot_present:
        return ResolvedCot(PROMPTED, True, split.cot_text, split.output_text)
    if reasoning_tokens:
        return ResolvedCot(HIDDEN, None, None, split.output_text)
    return ResolvedCot(NONE, False, split.cot_text, split.output_text)


def truncate_middle(text: str, budget_chars: int) -> str:
    """`text` cut to about `budget_chars` by dropping its middle, with a marker saying how much
    went: a long trace's start (the situation) and end (the decision) carry the verdict."""
    if budget_chars <= 0 or len(text) <= budget_chars:
        return text
    head = budget_chars * 2 // 3
    tail = budget_chars - head
    dropped = len(text) - head - tail
    return f"{text[:head]}\n\n[... {dropped:,} characters of the reasoning trace omitted ...]\n\n{text[-tail:]}"
