"""Replies cut off at max_tokens: said in the run summary, `pipeline status` and `--dry-run`.

A cut-off reply is graded `unclear` where it stopped before deciding, so a cap set too low
silently empties the rates; these lines make it visible wherever a cap is chosen or judged.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from pipeline.experiment.config import DEFAULT_MAX_TOKENS, ModelConfig
from pipeline.store.queries import sql


def truncation_lines(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> list[str]:
    """One line per model: final replies cut at max_tokens, of all its final replies."""
    rows = con.execute(sql("truncation_by_model"), {"run_id": run_id}).fetchall()
    return [f"  cut off at max_tokens: {model}: {cut} of {total} final replies ({100 * cut / total:.0f}%)"
            + ("  <- raise max_tokens (cut replies are graded unclear)" if cut else "")
            for model, cut, total in rows if total]


def cap_warnings(con: duckdb.DuckDBPyConnection, models: Sequence[ModelConfig]) -> list[str]:
    """Warn when a model's max_tokens is no higher than a cap its earlier replies overran, or
    below the longest reply it finished on its own."""
    history: dict[str, list[tuple[int | None, int, int, int | None]]] = {}
    for model, cap, cut, total, longest in con.execute(sql("reply_lengths_by_model")).fetchall():
        history.setdefault(model, []).append((cap, cut, total, longest))
    warnings = []
    for model in models:
        cap = int(model.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        for old_cap, cut, total, longest in history.get(model.name, []):
            if cut and old_cap is not None and cap <= old_cap:
                warnings.append(f"warning: {model.name}: max_tokens {cap}, but {cut} of {total} earlier replies "
                                f"were cut off at max_tokens {old_cap}")
            if longest is not None and longest > cap:
                warnings.append(f"warning: {model.name}: max_tokens {cap}, but earlier replies needed up to "
                                f"{longest} tokens")
    return warnings
