"""`pipeline grade --eval-fixtures`: a judge's agreement with hand labels.

The labelled set (tests/fixtures/labelled/: tune.jsonl and the held-out heldout.jsonl) holds final responses a person labelled:
output unethical/acceptable, CoT present or not, and what the CoT alone predicts.
Accuracy says how often the judge agrees; Cohen's kappa discounts chance agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import ConfigError
from pipeline.experiment.scenarios import Scenario
from pipeline.grading.stats import cohen_kappa

FIELDS = ("output_label", "cot_present", "cot_label")


@dataclass(frozen=True)
class Labelled:
    id: str
    scenario: Scenario
    text: str
    expected: dict[str, str]
    finish_reason: str = "stop"
    variant: str = "default"


def load_fixtures(path: Path, scenarios: dict[str, Scenario]) -> list[Labelled]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            scenario = scenarios[record["scenario"]]
            expected = {name: str(record[name]).lower() for name in FIELDS}
            items.append(Labelled(record["id"], scenario, record["text"], expected,
                                  str(record.get("finish_reason") or "stop"), str(record.get("variant", "default"))))
        except orjson.JSONDecodeError as exc:
            raise ConfigError(path, None, f"invalid JSON: {exc}", line=number) from None
        except KeyError as exc:
            raise ConfigError(path, str(exc.args[0]), "missing, or names an unknown scenario", line=number) from None
    return items


Scores = dict[str, dict[str, float | int | None]]


def agreement(items: list[Labelled], predictions: list[dict[str, Any]]) -> Scores:
    """Per field: accuracy and Cohen's kappa of predictions against the hand labels, and how
    often the judge said `unclear` where the person gave a clear label (those leave every
    denominator, so they bias rates even when accuracy looks fine)."""
    result: Scores = {}
    for name in FIELDS:
        pairs = [(item.expected[name], str(prediction[name]).lower()) for item, prediction in zip(items, predictions)]
        correct = sum(a == b for a, b in pairs)
        clear = [b for a, b in pairs if a != "unclear"]
        result[name] = {"n": len(pairs), "accuracy": correct / len(pairs) if pairs else None,
                        "kappa": cohen_kappa(pairs),
                        "unclear_on_clear": sum(b == "unclear" for b in clear) / len(clear) if clear else None}
    return result


def agreement_by_scenario(items: list[Labelled], predictions: list[dict[str, Any]]) -> dict[str, Scores]:
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(f"{item.scenario.id}/{item.variant}", []).append(index)
    return {group: agreement([items[i] for i in indices], [predictions[i] for i in indices])
            for group, indices in sorted(groups.items())}


def format_agreement(judge: str, items: list[Labelled], predictions: list[dict[str, Any]],
                     as_json: bool = False) -> str:
    overall, by_scenario = agreement(items, predictions), agreement_by_scenario(items, predictions)
    if as_json:
        return orjson.dumps({"judge": judge, "overall": overall, "by_scenario": by_scenario},
                            option=orjson.OPT_INDENT_2).decode()
    lines = [f"judge {judge} vs hand labels", *_rows("field", overall)]
    for group, scores in by_scenario.items():
        lines += ["", *_rows(group, scores)]
    return "\n".join(lines)


def _rows(title: str, scores: Scores) -> list[str]:
    lines = [f"{title:<24} {'n':>4} {'accuracy':>9} {'kappa':>7} {'unclear_on_clear':>17}"]
    for name, score in scores.items():
        cells = ["-" if score[key] is None else f"{score[key]:.3f}" for key in ("accuracy", "kappa", "unclear_on_clear")]
        lines.append(f"{name:<24} {score['n']:>4} {cells[0]:>9} {cells[1]:>7} {cells[2]:>17}")
    return lines
