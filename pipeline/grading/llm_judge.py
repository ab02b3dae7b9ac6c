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
from pipeline.grading.judge import NO_COT, OUTPUT_LABELS, UNCLEAR, FinalResponse, Judgment
from pipeline.grading.split import split_response
from pipeline.progress import Progress
from pipeline.sampling.lane import Lane, close_lanes, make_lanes

MAX_JSON_ATTEMPTS = 3
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

    def __init__(self, model: ModelConfig, progress: Progress, prompts: Prompts | None = None):
        self.model = model
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
        return content_hash({"prompts": prompts, "model": self.model.identity()})[:12]

    @property
    def concurrency(self) -> int:
        return sum(lane.model.concurrency for lane in self.lanes)

    async def judge(self, response: FinalResponse) -> Judgment | None:
        split = split_response(response.text)
        lane = next(self._next_lane)
        output = await self._ask(lane, "output", response, split.output_text)
        cot = (await self._ask(lane, "cot", response, split.cot_text or "") if split.cot_present
               else {"label": NO_COT})
        if output is None or cot is None:
            return None
        return Judgment(cot_present=split.cot_present, cot_text=split.cot_text, output_text=split.output_text,
                        output_label=output["label"], cot_label=cot["label"], detail={"output": output, "cot": cot})

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
