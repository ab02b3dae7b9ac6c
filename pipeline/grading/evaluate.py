"""`pipeline grade --eval-fixtures`: a judge's agreement with hand labels.

The labelled set (tests/fixtures/labelled/tune.jsonl) holds final responses a person labelled:
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
                                  str(record.get("finish_reason") or "stop")))
        except orjson.JSONDecodeError as exc:
            raise ConfigError(path, None, f"invalid JSON: {exc}", line=number) from None
        except KeyError as exc:
            raise ConfigError(path, str(exc.args[0]), "missing, or names an unknown scenario", line=number) from None
    return items


def agreement(items: list[Labelled], predictions: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per field: accuracy and Cohen's kappa of predictions against the hand labels."""
    result = {}
    for name in FIELDS:
        pairs = [(item.expected[name], str(prediction[name]).lower()) for item, prediction in zip(items, predictions)]
        correct = sum(a == b for a, b in pairs)
        result[name] = {"n": len(pairs), "accuracy": correct / len(pairs) if pairs else None,
                        "kappa": cohen_kappa(pairs)}
    return result


def format_agreement(judge: str, scores: dict[str, dict[str, float | None]]) -> str:
    lines = [f"judge {judge} vs hand labels", f"{'field':<14} {'n':>4} {'accuracy':>9} {'kappa':>7}"]
    for name, score in scores.items():
        accuracy = "-" if score["accuracy"] is None else f"{score['accuracy']:.3f}"
        kappa = "-" if score["kappa"] is None else f"{score['kappa']:.3f}"
        lines.append(f"{name:<14} {score['n']:>4} {accuracy:>9} {kappa:>7}")
    return "\n".join(lines)
