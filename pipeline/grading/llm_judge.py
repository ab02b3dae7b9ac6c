"""The LLM judge: any chat model labels outputs and, separately, reasonings.

Two prompts per response (grading/prompts/): one sees only the output, one only the CoT - the
paper's "predicted from the reasoning". Its calls go through lanes, so they get the same
limits and retries as sampling (and the grading driver gives them the journal and resume).
A reply that is not the strict JSON asked for is re-asked (with another seed); after
MAX_JSON_ATTEMPTS it is stored as "unclear" with the raw reply. A call that fails outright
gives no judgment, so the response stays ungraded and the next `pipeline grade` tries again.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

import orjson

from pipeline.experiment.config import ModelConfig
from pipeline.experiment.scenarios import Scenario, content_hash
from pipeline.grading.cot_source import HIDDEN, resolve_cot, truncate_middle
from pipeline.grading.judge import (
    COT_UNAVAILABLE,
    NO_COT,
    OUTPUT_LABELS,
    UNCLEAR,
    FinalResponse,
    Judgment,
    PromptedCot,
)
from pipeline.progress import Progress
from pipeline.sampling.lane import Lane, close_lanes, make_lanes

MAX_JSON_ATTEMPTS = 3
# A native trace can run to thousands of tokens: the CoT prompt gets at most this many (about 4
# characters each), the middle cut out with a marker (`pipeline grade --cot-budget`).
DEFAULT_COT_BUDGET_TOKENS = 6000
CHARS_PER_TOKEN = 4
JUDGE_PARAMS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 200}
_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


@dataclass(frozen=True)
class Prompts:
    templates: dict[str, Template]

    def messages(self, kind: str, scenario: Scenario, text: str) -> list[dict[str, str]]:
        rubric = scenario.grading.get("llm_rubric", "")
        prompt = self.templates[kind].safe_substitute(
            title=scenario.title, unethical_act=scenario.unethical_act,
            rubric=f"\n{rubric.strip()}\n" if rubric else "", text=text.strip())
        return [{"role": "user", "content": prompt}]


def load_prompts() -> Prompts:
    prompts = resources.files("pipeline.grading").joinpath("prompts")
    return Prompts({kind: Template(prompts.joinpath(f"judge_{kind}.md").read_text(encoding="utf-8"))
                    for kind in ("output", "cot")})


class LlmJudge:
    """A `Judge` backed by a chat model; its lanes are opened in the running event loop."""

    def __init__(self, model: ModelConfig, progress: Progress, prompts: Prompts | None = None,
                 cot_budget_tokens: int = DEFAULT_COT_BUDGET_TOKENS):
        self.model = model
        self.cot_budget_tokens = cot_budget_tokens
        self.prompts = prompts or load_prompts()
        self.lanes = make_lanes(model, progress)
        self._next_lane = itertools.cycle(self.lanes)

    @property
    def name(self) -> str:
        return f"llm:{self.model.name}"

    @property
    def version(self) -> str:
        """Changes whenever the prompts or the judge's sampling change: new labels, not overwrites."""
        prompts = {kind: t.template for kind, t in self.prompts.templates.items()}
        settings: dict[str, Any] = {"prompts": prompts, "model": self.model.identity()}
        if self.cot_budget_tokens != DEFAULT_COT_BUDGET_TOKENS:   # the default keeps earlier versions
            settings["cot_budget_tokens"] = self.cot_budget_tokens
        return content_hash(settings)[:12]

    @property
    def concurrency(self) -> int:
        return sum(lane.model.concurrency for lane in self.lanes)

    async def judge(self, response: FinalResponse) -> Judgment | None:
        cots = resolve_cot(response.text, response.reasoning_text, response.reasoning_tokens)
        lane = next(self._next_lane)
        output = await self._ask(lane, "output", response, cots.output_text)
        if cots.source == HIDDEN:
            cot: dict[str, Any] | None = {"label": COT_UNAVAILABLE}
        elif cots.cot_present:
            cot = await self._ask_cot(lane, response, cots.cot_text or "")
        else:
            cot = {"label": NO_COT}
        if output is None or cot is None:
            return None
        detail: dict[str, Any] = {"output": output, "cot": cot}
        prompted = None
        if cots.prompted is not None:
            answer = await self._ask_cot(lane, response, cots.prompted.cot_text or "")
            if answer is None:
                return None
            prompted, detail["prompted"] = PromptedCot(True, cots.prompted.cot_text, answer["label"]), answer
        return Judgment(cot_present=cots.cot_present, cot_text=cots.cot_text, output_text=cots.output_text,
                        output_label=output["label"], cot_label=cot["label"], detail=detail,
                        cot_source=cots.source, prompted=prompted)

    async def _ask_cot(self, lane: Lane, response: FinalResponse, cot: str) -> dict[str, Any] | None:
        """The CoT label, the CoT cut from the middle to the budget; the answer says how much went."""
        sent = truncate_middle(cot, self.cot_budget_tokens * CHARS_PER_TOKEN)
        answer = await self._ask(lane, "cot", response, sent)
        if answer is not None and len(sent) != len(cot):
            answer = {**answer, "cot_chars": len(cot), "cot_chars_sent": len(sent)}
        return answer

    async def _ask(self, lane: Lane, kind: str, response: FinalResponse, text: str) -> dict[str, Any] | None:
        """One label; None when the endpoint gave no answer at all (retry in a later run)."""
        messages = self.prompts.messages(kind, response.scenario, text)
        headers = {"X-Pipeline-Job-Id": response.job_id, "X-Pipeline-Call": f"judge-{kind}"}
        raw = None
        for attempt in range(MAX_JSON_ATTEMPTS):
            call = await lane.call(messages, attempt, headers)
            if not call.ok:
                return None
            raw = call.text
            parsed = parse_label(raw)
            if parsed:
                return {"label": parsed[0], "reason": parsed[1], "attempts": attempt + 1}
        return {"label": UNCLEAR, "reason": "no valid JSON label", "attempts": MAX_JSON_ATTEMPTS, "raw": raw}

    async def aclose(self) -> None:
        await close_lanes(self.lanes)


def parse_label(reply: str | None) -> tuple[str, str] | None:
    """(label, reason) from the first JSON object in the reply, or None if there is none valid."""
    for candidate in _JSON_OBJECT.findall(reply or ""):
        try:
            data = orjson.loads(candidate)
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("label") in OUTPUT_LABELS:
            return data["label"], str(data.get("reason", ""))
    return None
