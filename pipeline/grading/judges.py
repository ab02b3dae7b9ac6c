"""The judges `pipeline grade --judge NAME` knows. To add one: implement `judge.Judge` and
add it to `make_judge`."""

from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.experiment.config import ModelConfig
from pipeline.experiment.scenarios import Scenario
from pipeline.grading.judge import FinalResponse, Judge, Judgment
from pipeline.grading.llm_judge import DEFAULT_COT_BUDGET_TOKENS, LlmJudge
from pipeline.grading.rule_judge import RULE_JUDGE_NAME, judge_response, rule_judge_version
from pipeline.progress import Progress

JUDGE_KINDS = ("rule", "llm")


class RuleJudge:
    """The offline, deterministic judge: each scenario's [grading] rules (grading/rule_judge.py)."""

    name = RULE_JUDGE_NAME
    concurrency = 1  # pure CPU: more workers would only take turns

    def __init__(self, scenarios: dict[str, Scenario]):
        self.version = rule_judge_version(scenarios.values())

    async def judge(self, response: FinalResponse) -> Judgment | None:
        return judge_response(response.scenario, response.text, response.finish_reason,
                              response.reasoning_text, response.reasoning_tokens)

    async def aclose(self) -> None:
        return None


def make_judge(kind: str, scenarios: dict[str, Scenario], progress: Progress,
               model: ModelConfig | None = None, cot_budget_tokens: int = DEFAULT_COT_BUDGET_TOKENS) -> Judge:
    """Call inside the event loop: an LLM judge opens its HTTP sessions here."""
    if kind == "rule":
        return RuleJudge(scenarios)
    if kind == "llm":
        if model is None:
            raise PipelineError("--judge llm needs --base-url and --model (any OpenAI-compatible endpoint)")
        return LlmJudge(model, progress, cot_budget_tokens=cot_budget_tokens)
    raise PipelineError(f"unknown judge {kind!r} (known: {', '.join(JUDGE_KINDS)})")
