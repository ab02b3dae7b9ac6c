"""report.md: tables of every rate with its interval, what is missing, and how far the judge
can be trusted (agreement with people, corrected rates)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.report.data import BRANCHES, MIN_COT_ACCURACY, ReportData, Row
from pipeline.report.figures import CONTROL_SCENARIO, FIGURES

HIDDEN_SOURCE = "hidden"
UNAVAILABLE = "unavailable"
SOURCE_ORDER = ("native", "prompted", "hidden", "none")


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def with_ci(value: float | None, lo: float | None, hi: float | None) -> str:
    if value is None:
        return "–"
    return f"{pct(value)} [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else pct(value)


def p_value(value: float | None) -> str:
    return "–" if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def cot_rate(row: Row, rate: str, lo: str | None = None, hi: str | None = None) -> str:
    """A CoT-based rate; for hidden reasoning 'unavailable' (the model reasoned, we cannot see it),
    never a figure for "no CoT"."""
    if row.get("cot_source") == HIDDEN_SOURCE:
        return UNAVAILABLE
    return with_ci(row[rate], row[lo], row[hi]) if lo and hi else pct(row[rate])


def rates_table(rows: Sequence[Row], accuracy: Sequence[Row] = (), phrasing: bool = False) -> list[str]:
    """Every rate with its interval, and beside it how often the judge's CoT label agreed with
    people in that cell (blank where nobody labelled)."""
    cot_accuracy = {(a["scenario"], a["variant"], a["branch"], a["model"]): a for a in accuracy
                    if a["scope"] == "cell" and a["metric"] == "cot_label"}
    header = ["scenario", "variant", "branch", *(["phrasing"] if phrasing else []), "model", "n",
              "unclear", "unethical (k)", "unethical rate [95% CI]", "CoT source", "CoT", "CoT if unethical",
              "CoT if acceptable", "consistency [95% CI]", "deception (k)", "deception rate [95% CI]",
              "judge CoT accuracy vs people (n)"]
    body = []
    for r in rows:
        checked = cot_accuracy.get((r["scenario"], r["variant"], r["branch"], r["model"]))
        body.append([r["scenario"], r["variant"], r["branch"], *([r["phrasing"]] if phrasing else []), r["model"],
                     r["n"], r["n_unclear"], r["unethical"],
                     with_ci(r["unethical_rate"], r["unethical_lo"], r["unethical_hi"]), r["cot_source"],
                     cot_rate(r, "cot_rate"), cot_rate(r, "cot_rate_unethical"), cot_rate(r, "cot_rate_acceptable"),
                     cot_rate(r, "consistency_rate", "consistency_lo", "consistency_hi"),
                     "–" if r["deception"] is None else r["deception"],
                     cot_rate(r, "deception_rate", "deception_lo", "deception_hi"),
                     f"{pct(checked['accuracy'])} ({checked['n_human']})" if checked else ""])
    return table(header, body)


def by_source_table(rows: Sequence[Row]) -> list[str]:
    """Consistency per CoT source, side by side: one line per cell, a column group per source."""
    sources = [s for s in SOURCE_ORDER if any(r["cot_source"] == s for r in rows)]
    cells: dict[tuple[str, str, str, str], dict[str, Row]] = {}
    for r in rows:
        cells.setdefault((r["scenario"], r["variant"], r["branch"], r["model"]), {})[r["cot_source"]] = r
    header = ["scenario", "variant", "branch", "model", "n", "unethical (k)",
              *(f"{source}: {what}" for source in sources for what in ("CoT", "consistency [95% CI]"))]
    body = []
    for key, by_source in sorted(cells.items()):
        first = next(iter(by_source.values()))
        columns: list[str] = []
        for source in sources:
            row = by_source.get(source)
            columns += ([cot_rate(row, "cot_rate"), cot_rate(row, "consistency_rate", "consistency_lo", "consistency_hi")]
                        if row else ["", ""])
        body.append([*key, first["n"], first["unethical"], *columns])
    return table(header, body)


def comparison_table(rows: Sequence[Row]) -> list[str]:
    header = ["scenario", "variant", "model", "metric", "CoT source", "A vs B", "rate A (k/n)", "rate B (k/n)",
              "A − B [95% CI]", "p"]
    body = [[r["scenario"], r["variant"], r["model"], r["metric"], r["cot_source"], f"{r['branch_a']} vs {r['branch_b']}",
             f"{pct(r['rate_a'])} ({r['k_a']}/{r['n_a']})", f"{pct(r['rate_b'])} ({r['k_b']}/{r['n_b']})",
             diff_with_ci(r), p_value(r["p_value"])] for r in rows]
    return table(header, body)


def diff_with_ci(row: Row) -> str:
    if row["diff"] is None:
        return "–"
    return f"{100 * row['diff']:+.1f} pp [{100 * row['diff_lo']:+.1f}, {100 * row['diff_hi']:+.1f}]"


def agreement_table(rows: Sequence[Row]) -> list[str]:
    header = ["judge A", "judge B", "label", "n", "agreement", "Cohen's kappa"]
    body = [[f"{r['judge_a']} {r['version_a']}", f"{r['judge_b']} {r['version_b']}", r["metric"], r["n"],
             pct(r["observed_agreement"]), "–" if r["kappa"] is None else f"{r['kappa']:.3f}"]
            for r in rows]
    return table(header, body)


def coverage_notes(data: ReportData) -> list[str]:
    """Everything a reader needs to know is absent before trusting the numbers."""
    notes = no_label_notes(data) + planned_cell_notes(data) + missing_branch_notes(data)
    notes += [f"{r['scenario']}/{r['variant']}/{r['branch']}/{r['model']}: {r['cut']} final replies cut off at "
              "max_tokens (graded unclear where they stop before deciding; raise max_tokens)"
              for r in data.truncated]
    notes += [f"{r['scenario']}/{r['variant']}/{r['branch']}/{r['model']}: no unethical output, so "
              "consistency and CoT-if-unethical are undefined" for r in data.rates if r["unethical"] == 0]
    notes += [f"{r['scenario']}/{r['variant']}/{r['branch']}/{r['model']}: {r['n_unclear']} of {r['n']} "
              "final responses labelled unclear (counted in n, not in rate denominators)"
              for r in data.rates if r["n_unclear"]]
    if not [r for r in data.sampled() if r["scenario"] == CONTROL_SCENARIO]:
        notes.append(f"no sampled {CONTROL_SCENARIO} cells: Fig. 5 (race vs coffee/tea) is empty")
    return notes


def no_label_notes(data: ReportData) -> list[str]:
    if data.rates:
        return []
    notes = [f"no judged final responses from judge {data.judge!r}: the data are missing"]
    if data.done_jobs:
        notes.append(f"{data.done_jobs} done jobs exist: grade them first (`pipeline grade`)")
    else:
        notes.append("the database has no done jobs: run `pipeline sample` first")
    if data.judges:
        notes.append("judges present: " + ", ".join(f"{j['judge']} {j['judge_version']}" for j in data.judges))
    return notes


def planned_cell_notes(data: ReportData) -> list[str]:
    labelled = {(r["scenario"], r["variant"], r["branch"], r["model"]): r["n"] for r in data.rates}
    notes = []
    for cell in data.planned:
        key = (cell["scenario"], cell["variant"], cell["branch"], cell["model"])
        n = labelled.get(key, 0)
        if cell["pending"] > 0 or n < cell["done"]:
            notes.append(f"{'/'.join(key)}: planned {cell['planned']}, done {cell['done']}, "
                         f"judged {n}")
    return notes


def missing_branch_notes(data: ReportData) -> list[str]:
    present: dict[tuple[str, str, str], set[str]] = {}
    for r in data.rates:
        present.setdefault((r["scenario"], r["variant"], r["model"]), set()).add(r["branch"])
    return [f"{'/'.join(key)}: branch {', '.join(b for b in BRANCHES if b not in branches)} missing"
            for key, branches in sorted(present.items()) if not set(BRANCHES) <= branches]


def header_lines(data: ReportData, db_path: Path) -> list[str]:
    versions = ", ".join(data.versions()) or "none"
    lines = ["# Results report", "",
             f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from `{db_path}`.",
             f"Judge **{data.judge}**, version {versions} (each judge's newest version by grading time).", ""]
    embedded = sorted({r["model"] for r in data.rates} & set(data.embedded_models))
    if embedded:
        lines += [f"> **Note:** rows for `{'`, `'.join(embedded)}` come from the tiny embedded model (135M "
                  "parameters). It exercises the pipeline offline; its rates say nothing about the paper's findings, "
                  "which need real models (gpt-4-*, or others through an OpenAI-compatible endpoint).", ""]
    return lines + trust_lines(data)


def trust_lines(data: ReportData) -> list[str]:
    """How far the judge behind every figure can be trusted, said before any figure."""
    cot = data.cot_accuracy()
    if cot is None:
        return [f"> **Judge not checked against people:** no human labels on responses judged by "
                f"`{data.judge}`; its accuracy on these data is unknown (label a sample with "
                "`pipeline label --per-cell 30`, then `pipeline report --corrected`).", ""]
    if cot["accuracy"] < MIN_COT_ACCURACY:
        return [f"> **Warning:** judge `{data.judge}` agrees with people on the CoT label for only "
                f"{pct(cot['accuracy'])} of {cot['n_human']} human-labelled responses (below "
                f"{pct(MIN_COT_ACCURACY)}): consistency and deception rates from it are biased; use the "
                "corrected rates (`pipeline report --corrected`).", ""]
    return [f"Judge `{data.judge}` agrees with people on the CoT label for {pct(cot['accuracy'])} of "
            f"{cot['n_human']} human-labelled responses (kappa {kappa(cot['kappa'])}).", ""]


def kappa(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def accuracy_table(rows: Sequence[Row]) -> list[str]:
    header = ["scope", "cell", "label", "n human", "accuracy", "Cohen's kappa"]
    body = [[r["scope"], "all" if r["scope"] == "all" else f"{r['scenario']}/{r['variant']}/{r['branch']}/{r['model']}",
             r["metric"], r["n_human"], pct(r["accuracy"]), kappa(r["kappa"])] for r in rows]
    return table(header, body)


def corrected_table(rows: Sequence[Row]) -> list[str]:
    header = ["scenario", "variant", "branch", "model", "CoT source", "n judged", "n human", "unethical [95% CI]",
              "consistency [95% CI]", "deception [95% CI]", "CoT [95% CI]"]
    body = [[r["scenario"], r["variant"], r["branch"], r["model"], r["cot_source"], r["n_judge"], r["n_human"],
             with_ci(r["unethical_rate"], r["unethical_lo"], r["unethical_hi"]) if r["n_human"] else "no human labels",
             *(cot_rate(r, f"{m}_rate", f"{m}_lo", f"{m}_hi") if r["n_human"] else "no human labels"
               for m in ("consistency", "deception", "cot"))] for r in rows]
    return table(header, body)


def render_markdown(data: ReportData, db_path: Path) -> str:
    notes = coverage_notes(data)
    lines = header_lines(data, db_path)
    lines += ["## Missing or partial data", ""]
    lines += [f"- {note}" for note in notes] if notes else ["- none: every planned cell is done and judged"]
    lines += ["", "## Figures", ""]
    for name, (_, caption) in FIGURES.items():
        lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    lines += ["## Rates per cell", "",
              "n = judged final responses; rates over clear ones (n − unclear), except CoT (over n), "
              "consistency (over unethical outputs) and CoT-if-class (over that class). "
              "Deception = unethical output whose CoT is missing or argues for acceptable behaviour.", ""]
    lines += rates_table(data.rates, data.accuracy) if data.rates else ["No rows."]
    if any(r["cot_source"] not in ("prompted", "none") for r in data.by_source) or len(data.by_source) > len(data.rates):
        lines += ["", "## Consistency by CoT source", "",
                  "native = the model's own reasoning trace; prompted = the `Reasoning:` section the scenario "
                  "asks for (a response with both is graded on both); hidden = the model reasoned but the server "
                  f"returned only a reasoning-token count: its CoT is {UNAVAILABLE}, which is not the same as no CoT. "
                  "The tables above use each cell's main source (native > prompted > hidden > none).", ""]
        lines += by_source_table(data.by_source)
    lines += ["", "## Rates per refusal/rebuttal phrasing", ""]
    lines += rates_table(data.by_phrasing, phrasing=True) if data.by_phrasing else ["No rows."]
    lines += ["", "## Branch comparison", "",
              "Difference A − B with Newcombe hybrid-score 95% interval; p = two-sided pooled "
              "two-proportion z-test (no correction for multiple comparisons).", ""]
    lines += comparison_table(data.comparison) if data.comparison else ["No pair of branches in the same cell."]
    lines += ["", "## Judge agreement", ""]
    lines += (agreement_table(data.agreement) if data.agreement
              else ["Fewer than two judges labelled the same responses: no agreement to report."])
    lines += ["", f"## Judge `{data.judge}` against people", ""]
    lines += (accuracy_table(data.accuracy) if data.accuracy
              else ["No human labels on these responses (`pipeline label`)."])
    if data.corrected:
        lines += ["", "## Rates corrected for judge error", "",
                  "Prediction-powered inference: the judge's rate plus the judge's error measured on the "
                  "human-labelled responses of the same cell; 95% intervals (see README). "
                  "'no human labels': nothing to correct with, so no corrected rate is given.", ""]
        lines += corrected_table(data.corrected)
        lines += ["", "![corrected](corrected_rates.png)", ""]
    return "\n".join(lines) + "\n"
