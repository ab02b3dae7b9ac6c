"""`pipeline grade`: label final responses that a judge has not labelled yet.

Grading never resamples and never touches another judge's (or version's) labels: rows
are keyed by (job_id, judge, judge_version). Work goes in chunks, each read and written
in its own short transaction, so a run that is sampling at the same time keeps going.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import anyio
import structlog

from pipeline.sampling.engine import EngineResult, Stream, recover_journal, run_engine
from pipeline.grading.evaluate import Labelled
from pipeline.sampling.journal import Journal
from pipeline.grading.llm_judge import LlmJudge, Ungraded, count_ungraded, judge_one, ungraded
from pipeline.progress import Progress
from pipeline.grading.judge import Judgment
from pipeline.grading.rule_judge import RULE_JUDGE_NAME, judge_response, rule_judge_version
from pipeline.sampling.runner import make_lanes
from pipeline.experiment.scenarios import Scenario
from pipeline.store.writer import Store, utc_now

log = structlog.get_logger()
CHUNK = 5000
UNGRADED_SQL = """
    SELECT f.job_id, f.scenario, f.response_text
    FROM final_responses f
    ANTI JOIN judgments j ON j.job_id = f.job_id AND j.judge = $judge AND j.judge_version = $version
    WHERE list_contains($scenarios, f.scenario)
    ORDER BY f.job_id LIMIT $limit"""
UNKNOWN_SQL = "SELECT DISTINCT scenario FROM final_responses WHERE NOT list_contains($scenarios, scenario)"


@dataclass
class GradeResult:
    version: str = ""
    graded: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    unknown_scenarios: list[str] = field(default_factory=list)


def judgment_row(job_id: str, judge: str, version: str, judgment: Judgment) -> dict[str, Any]:
    return {"job_id": job_id, "judge": judge, "judge_version": version,
            "cot_present": judgment.cot_present, "cot_text": judgment.cot_text,
            "output_text": judgment.output_text, "output_label": judgment.output_label,
            "cot_label": judgment.cot_label, "detail": judgment.detail, "graded_at": utc_now()}


def grade_with_rules(store: Store, scenarios: dict[str, Scenario],
                     on_progress: Callable[[int], None] | None = None) -> GradeResult:
    """Rule-judge every ungraded final response (offline, deterministic)."""
    result = GradeResult()
    result.version = rule_judge_version(scenarios.values())
    params = {"judge": RULE_JUDGE_NAME, "version": result.version, "scenarios": list(scenarios),
              "limit": CHUNK}
    with store.connect() as con:
        result.unknown_scenarios = [s for (s,) in con.execute(UNKNOWN_SQL, {"scenarios": list(scenarios)}).fetchall()]
    for scenario_id in result.unknown_scenarios:
        log.warning("not graded: no scenario file for these responses", scenario=scenario_id)
    while True:
        with store.connect() as con:
            rows = con.execute(UNGRADED_SQL, params).fetchall()
        if not rows:
            return result
        batch = []
        for job_id, scenario_id, text in rows:
            judgment = judge_response(scenarios[scenario_id], text or "")
            batch.append(judgment_row(job_id, RULE_JUDGE_NAME, result.version, judgment))
            result.labels[judgment.output_label] += 1
        with store.connect() as con:
            store.insert_rows(con, "judgments", batch)
        result.graded += len(batch)
        if on_progress:
            on_progress(result.graded)


async def grade_with_llm(store: Store, judge: LlmJudge, scenarios: dict[str, Scenario]) -> EngineResult:
    """LLM-judge every response this judge version has not labelled, through the engine."""
    journal = Journal(store.path)
    await anyio.to_thread.run_sync(recover_journal, journal, store)
    total = await anyio.to_thread.run_sync(count_ungraded, store, judge, scenarios)
    progress = Progress(total=total)
    log.info("grading started", judge=judge.name, version=judge.version, ungraded=total)
    lanes = make_lanes(judge.model, progress)
    try:
        stream = Stream(lanes, ungraded(store, judge, scenarios), partial(judge_one, judge=judge))
        return await run_engine([stream], store, journal, progress)
    finally:
        for lane in lanes:
            await lane.aclose()


def predict_with_rules(items: list[Labelled]) -> list[dict[str, Any]]:
    return [asdict(judge_response(item.scenario, item.text, item.finish_reason)) for item in items]


async def predict_with_llm(judge: LlmJudge, items: list[Labelled]) -> list[dict[str, Any]]:
    """Label the fixtures directly (no database); a failed call counts as 'unclear'."""
    progress = Progress(total=len(items))
    (lane, *_) = lanes = make_lanes(judge.model, progress)
    predictions: list[dict[str, Any]] = [{}] * len(items)
    limiter = anyio.Semaphore(judge.model.concurrency)

    async def one(index: int, item: Labelled) -> None:
        async with limiter:
            outcome = await judge_one(Ungraded(item.id, item.scenario, item.text), lane, judge)
        rows = outcome.rows.get("judgments")
        predictions[index] = rows[0] if rows else {"output_label": "unclear", "cot_present": "?", "cot_label": "unclear"}

    try:
        async with anyio.create_task_group() as tg:
            for index, item in enumerate(items):
                tg.start_soon(one, index, item)
    finally:
        for each in lanes:
            await each.aclose()
    return predictions
