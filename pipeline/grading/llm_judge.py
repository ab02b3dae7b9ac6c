"""The LLM judge: any chat model labels outputs and, separately, reasonings.

Two prompts per response (pipeline/prompts/): one sees only the output, one only the
CoT - the paper's "predicted from the reasoning". Judge calls are engine items, so they
get the same limits, retries, journal and resume as sampling. A reply that is not the
strict JSON asked for is re-asked (with another seed); after MAX_JSON_ATTEMPTS it is
stored as "unclear" with the raw reply. A call that fails outright stores nothing, so
the response stays ungraded and the next `pipeline grade` tries again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

import orjson

from pipeline.experiment.config import ModelConfig
from pipeline.sampling.lane import Lane
from pipeline.experiment.scenarios import Scenario, content_hash
from pipeline.grading.split import split_response
from pipeline.store.writer import Outcome, Store, utc_now

LABELS = ("unethical", "acceptable", "unclear")
MAX_JSON_ATTEMPTS = 3
JUDGE_PARAMS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 200}
PAGE = 1000
_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_UNGRADED = """
    FROM final_responses f
    ANTI JOIN judgments j ON j.job_id = f.job_id AND j.judge = $judge AND j.judge_version = $version
    WHERE list_contains($scenarios, f.scenario)"""
UNGRADED_PAGE_SQL = f"SELECT f.job_id, f.scenario, f.response_text {_UNGRADED} AND f.job_id > $after " \
                    "ORDER BY f.job_id LIMIT $limit"
UNGRADED_COUNT_SQL = f"SELECT count(*) {_UNGRADED}"


@dataclass(frozen=True)
class Ungraded:
    job_id: str
    scenario: Scenario
    text: str


@dataclass(frozen=True)
class LlmJudge:
    model: ModelConfig
    templates: dict[str, Template]

    @property
    def name(self) -> str:
        return f"llm:{self.model.name}"

    @property
    def version(self) -> str:
        """Changes whenever the prompts or the judge's sampling change: new labels, not overwrites."""
        prompts = {kind: t.template for kind, t in self.templates.items()}
        return content_hash({"prompts": prompts, "model": self.model.identity()})[:12]

    def messages(self, kind: str, scenario: Scenario, text: str) -> list[dict[str, str]]:
        rubric = scenario.grading.get("llm_rubric", "")
        prompt = self.templates[kind].safe_substitute(
            title=scenario.title, unethical_act=scenario.unethical_act,
            rubric=f"\n{rubric.strip()}\n" if rubric else "", text=text.strip())
        return [{"role": "user", "content": prompt}]


def load_judge(model: ModelConfig) -> LlmJudge:
    prompts = resources.files("pipeline.grading").joinpath("prompts")
    templates = {kind: Template(prompts.joinpath(f"judge_{kind}.md").read_text(encoding="utf-8"))
                 for kind in ("output", "cot")}
    return LlmJudge(model, templates)


def parse_label(reply: str | None) -> tuple[str, str] | None:
    """(label, reason) from the first JSON object in the reply, or None if there is none valid."""
    for candidate in _JSON_OBJECT.findall(reply or ""):
        try:
            data = orjson.loads(candidate)
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("label") in LABELS:
            return data["label"], str(data.get("reason", ""))
    return None


async def ask(judge: LlmJudge, lane: Lane, kind: str, item: Ungraded, text: str) -> dict[str, Any] | None:
    """One label; None when the endpoint gave no answer at all (retry in a later run)."""
    messages = judge.messages(kind, item.scenario, text)
    headers = {"X-Pipeline-Job-Id": item.job_id, "X-Pipeline-Call": f"judge-{kind}"}
    raw = None
    for attempt in range(MAX_JSON_ATTEMPTS):
        call = await lane.call(messages, attempt, headers)
        if not call.ok:
            return None
        raw = call.text
        parsed = parse_label(raw)
        if parsed:
            return {"label": parsed[0], "reason": parsed[1], "attempts": attempt + 1}
    return {"label": "unclear", "reason": "no valid JSON label", "attempts": MAX_JSON_ATTEMPTS, "raw": raw}


async def judge_one(item: Ungraded, lane: Lane, judge: LlmJudge) -> Outcome:
    split = split_response(item.text)
    output = await ask(judge, lane, "output", item, split.output_text)
    cot = await ask(judge, lane, "cot", item, split.cot_text or "") if split.cot_present else {"label": "no_cot"}
    if output is None or cot is None:
        return Outcome({}, failed=True)
    row = {"job_id": item.job_id, "judge": judge.name, "judge_version": judge.version,
           "cot_present": split.cot_present, "cot_text": split.cot_text, "output_text": split.output_text,
           "output_label": output["label"], "cot_label": cot["label"],
           "detail": {"output": output, "cot": cot}, "graded_at": utc_now()}
    return Outcome({"judgments": [row]})


def ungraded(store: Store, judge: LlmJudge, scenarios: dict[str, Scenario]) -> Iterator[Ungraded]:
    """Stream responses this judge version has not labelled, a page per short connection
    (keyset pagination: in-flight items are never fetched twice)."""
    after = ""
    params: dict[str, Any] = {"judge": judge.name, "version": judge.version,
                              "scenarios": list(scenarios), "limit": PAGE}
    while True:
        with store.connect() as con:
            rows = con.execute(UNGRADED_PAGE_SQL, {**params, "after": after}).fetchall()
        if not rows:
            return
        for job_id, scenario_id, text in rows:
            yield Ungraded(job_id, scenarios[scenario_id], text or "")
        after = rows[-1][0]


def count_ungraded(store: Store, judge: LlmJudge, scenarios: dict[str, Scenario]) -> int:
    with store.connect() as con:
        params = {"judge": judge.name, "version": judge.version, "scenarios": list(scenarios)}
        return int(con.execute(UNGRADED_COUNT_SQL, params).fetchone()[0])
