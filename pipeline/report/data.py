"""What the report shows, read once from the views (rates, rates_by_phrasing, branch_comparison,
judge_agreement, judge_accuracy, rates_corrected, cell_status), so report and ad-hoc SQL agree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from pipeline.store.queries import sql

Row = dict[str, Any]
BRANCHES = ("sampled", "refusal", "rebuttal")
MIN_COT_ACCURACY = 0.90   # below this (against people) the report warns about a judge's CoT labels


@dataclass
class ReportData:
    judge: str
    rates: list[Row]
    by_phrasing: list[Row]
    comparison: list[Row]
    agreement: list[Row]
    planned: list[Row]        # cell_status rows: planned / done / pending per cell
    judges: list[Row]         # every judge in the database with its newest version
    done_jobs: int
    accuracy: list[Row] = field(default_factory=list)   # judge_accuracy rows of this judge
    corrected: list[Row] = field(default_factory=list)  # rates_corrected rows of this judge
    embedded_models: list[str] = field(default_factory=list)
    truncated: list[Row] = field(default_factory=list)  # per cell: final replies cut at max_tokens
    by_source: list[Row] = field(default_factory=list)  # rates rows of every CoT source (`rates` = main one)

    def sampled(self) -> list[Row]:
        return [r for r in self.rates if r["branch"] == "sampled"]

    def cot_accuracy(self) -> Row | None:
        """The judge's overall cot_label agreement with people, if anyone labelled."""
        return next((r for r in self.accuracy if r["scope"] == "all" and r["metric"] == "cot_label"), None)

    def versions(self) -> list[str]:
        return sorted({str(r["judge_version"]) for r in self.rates})


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Row]:
    """Rows as dicts; `params` positional (`?`) or named (`$name`)."""
    cursor = con.execute(sql, dict(params) if isinstance(params, Mapping) else list(params))
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def load(con: duckdb.DuckDBPyConnection, judge: str, corrected: bool = False) -> ReportData:
    by_judge = [judge]
    return ReportData(
        judge=judge,
        rates=fetch(con, "SELECT * FROM rates WHERE judge = ? AND cot_primary", by_judge),
        by_phrasing=fetch(con, "SELECT * FROM rates_by_phrasing WHERE judge = ? AND cot_primary", by_judge),
        by_source=fetch(con, "SELECT * FROM rates WHERE judge = ?", by_judge),
        comparison=fetch(con, "SELECT * FROM branch_comparison WHERE judge = ?", by_judge),
        agreement=fetch(con, "SELECT * FROM judge_agreement"),
        planned=fetch(con, "SELECT * FROM cell_status"),
        judges=fetch(con, "SELECT DISTINCT judge, judge_version FROM current_judgments ORDER BY judge"),
        done_jobs=con.execute("SELECT count(*) FROM jobs WHERE status = 'done'").fetchall()[0][0],
        accuracy=fetch(con, "SELECT * FROM judge_accuracy WHERE judge = ?", by_judge),
        corrected=fetch(con, "SELECT * FROM rates_corrected WHERE judge = ?", by_judge) if corrected else [],
        embedded_models=[name for (name,) in con.execute(sql("embedded_models")).fetchall()],
        truncated=fetch(con, sql("truncation_by_cell")),
    )
