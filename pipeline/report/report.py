"""`pipeline report`: the paper's figures and tables, regenerated from the database.

Everything comes from the SQL views (rates, rates_by_phrasing, branch_comparison,
judge_agreement), so the report and ad-hoc SQL always agree. The database is opened
read-only (a run may be writing); a database from an earlier release is first upgraded to
today's schema and views (pipeline/store/schema.py).
Partial data is normal (a run still going, a branch not sampled, no unethical output):
every figure is drawn from what exists and report.md lists what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from pipeline.local_model.server import MODEL_NAME as EMBEDDED_MODEL  # noqa: E402
from pipeline.experiment.scenarios import DEFAULT_VARIANT  # noqa: E402
from pipeline.store.connection import open_reader  # noqa: E402

Row = dict[str, Any]
BRANCHES = ("sampled", "refusal", "rebuttal")
BRANCH_COLORS = {"sampled": "#7f7f7f", "refusal": "#ff7f0e", "rebuttal": "#1f77b4"}
CONTROL_SCENARIO, CONTROL_VARIANTS = "real_estate", ("race", "coffee_tea")
VARIANT_COLORS = {"race": "#d62728", "coffee_tea": "#8c564b"}
OUTPUT_COLORS = {"unethical outputs": "#d62728", "acceptable outputs": "#2ca02c"}


@dataclass(frozen=True)
class Bar:
    """One bar: a rate, its Wilson 95% bounds and the denominator written on it."""

    rate: float | None
    lo: float | None
    hi: float | None
    n: int


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

    def sampled(self) -> list[Row]:
        return [r for r in self.rates if r["branch"] == "sampled"]

    def versions(self) -> list[str]:
        return sorted({str(r["judge_version"]) for r in self.rates})


# ---------------------------------------------------------------------------- loading


def write_report(db_path: Path, out_dir: Path, judge: str = "rule") -> list[Path]:
    """Write the figures (PNG) and report.md into out_dir; return their paths."""
    con = open_reader(db_path)
    try:
        data = load(con, judge)
    finally:
        con.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [save(make(data), out_dir / name) for name, (make, _) in FIGURES.items()]
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(data, db_path), encoding="utf-8")
    return [*paths, markdown]


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    cursor = con.execute(sql, list(params))
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def load(con: duckdb.DuckDBPyConnection, judge: str) -> ReportData:
    by_judge = [judge]
    return ReportData(
        judge=judge,
        rates=fetch(con, "SELECT * FROM rates WHERE judge = ?", by_judge),
        by_phrasing=fetch(con, "SELECT * FROM rates_by_phrasing WHERE judge = ?", by_judge),
        comparison=fetch(con, "SELECT * FROM branch_comparison WHERE judge = ?", by_judge),
        agreement=fetch(con, "SELECT * FROM judge_agreement"),
        planned=fetch(con, "SELECT * FROM cell_status"),
        judges=fetch(con, "SELECT DISTINCT judge, judge_version FROM current_judgments ORDER BY judge"),
        done_jobs=con.execute("SELECT count(*) FROM jobs WHERE status = 'done'").fetchall()[0][0],
    )


# ---------------------------------------------------------------------------- drawing


def group_label(scenario: str, variant: str) -> str:
    return scenario if variant == DEFAULT_VARIANT else f"{scenario}\n({variant})"


def scenario_groups(rows: Sequence[Row]) -> list[tuple[str, str]]:
    return sorted({(r["scenario"], r["variant"]) for r in rows})


def models(rows: Sequence[Row]) -> list[str]:
    return sorted({r["model"] for r in rows})


def model_colors(names: Sequence[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10")
    return {name: palette(i % 10) for i, name in enumerate(names)}


def bar_from(row: Row, rate: str, n: int) -> Bar:
    """A bar for a rate the views give with Wilson bounds (`rate`_lo / `rate`_hi)."""
    stem = rate if f"{rate}_lo" in row else rate.removesuffix("_rate")
    return Bar(row[rate], row[f"{stem}_lo"], row[f"{stem}_hi"], n)


def draw_grouped(ax: Axes, groups: Sequence[str], series: Sequence[str],
                 bars: dict[tuple[str, str], Bar], colors: dict[str, Any]) -> None:
    """Grouped bars with Wilson error bars and n on each; 'missing' / 'n=0' where no rate.
    The legend is the figure's (see `finish`), so it never covers a bar."""
    width = 0.8 / max(len(series), 1)
    vertical = len(groups) * len(series) > 10
    for s_index, name in enumerate(series):
        for g_index, group in enumerate(groups):
            x = g_index - 0.4 + width * (s_index + 0.5)
            draw_bar(ax, x, width, bars.get((group, name)), colors[name], vertical)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(0, 1.12)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(axis="y", alpha=0.3)


def draw_bar(ax: Axes, x: float, width: float, bar: Bar | None, color: Any, vertical: bool) -> None:
    rotation = 90 if vertical else 0
    if bar is None or bar.rate is None:
        note = "missing" if bar is None else f"n={bar.n}"
        ax.text(x, 0.01, note, ha="center", va="bottom", fontsize=7, color="dimgray", rotation=90)
        return
    ax.bar(x, bar.rate, width * 0.95, color=color)
    if bar.rate == 0:  # keep a zero visible: a bar of height 0 draws nothing
        ax.hlines(0.004, x - width * 0.45, x + width * 0.45, colors=[color], linewidth=3)
    top = bar.rate
    if bar.lo is not None and bar.hi is not None:
        ax.errorbar(x, bar.rate, yerr=[[bar.rate - bar.lo], [bar.hi - bar.rate]], fmt="none",
                    ecolor="black", elinewidth=1, capsize=2)
        top = bar.hi
    ax.text(x, top + 0.015, f"n={bar.n}", ha="center", va="bottom", fontsize=7, rotation=rotation)


def new_figure(panels: int, bars_per_panel: int, rows: int = 1) -> tuple[Figure, list[Axes]]:
    """Width grows with the bars so n labels stay legible; constrained layout makes room
    for the title and the legend outside the axes."""
    width = min(max(7.0, max(4.5, 1.5 + 0.4 * bars_per_panel) * panels + 1), 26.0)
    height = 4.5 if rows == 1 else 1.5 + 3.2 * rows
    fig, axes = plt.subplots(rows, panels, figsize=(width, height), squeeze=False, sharey=True,
                             layout="constrained")
    return fig, list(axes.flat)


def placeholder(title: str, reason: str) -> Figure:
    """Stands in for a figure whose data are missing, so every link in report.md works."""
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, f"No data: {reason}", ha="center", va="center", wrap=True, fontsize=11)
    return fig


def finish(fig: Figure, title: str, data: ReportData, colors: dict[str, Any]) -> Figure:
    fig.suptitle(f"{title}\njudge {data.judge} {', '.join(data.versions())} · error bars: Wilson 95% intervals",
                 fontsize=10)
    fig.legend(handles=[Patch(color=color, label=name) for name, color in colors.items()],
               loc="outside lower center", ncols=min(len(colors), 6), fontsize=9, frameon=False,
               title="'missing': no such cell · 'n=0': rate undefined (empty denominator)",
               title_fontsize=8)
    return fig


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- figures


def by_model_and_scenario(data: ReportData, title: str, ylabel: str,
                          bar: Callable[[Row], Bar]) -> Figure:
    """Fig. 2 layout: sampled branch, groups = scenario (variant), bars = models."""
    rows = data.sampled()
    if not rows:
        return placeholder(title, f"no sampled-branch labels from judge {data.judge!r}")
    names = models(rows)
    groups = scenario_groups(rows)
    bars = {(group_label(r["scenario"], r["variant"]), r["model"]): bar(r) for r in rows}
    colors = model_colors(names)
    fig, (ax,) = new_figure(1, len(groups) * len(names))
    draw_grouped(ax, [group_label(*g) for g in groups], names, bars, colors)
    ax.set_xlabel("scenario (variant)")
    ax.set_ylabel(ylabel)
    return finish(fig, title, data, colors)


def fig2_unethical_rate(data: ReportData) -> Figure:
    return by_model_and_scenario(
        data, "Unethical final outputs, sampled initial response (paper Fig. 2 left)",
        "unethical / clear final responses",
        lambda r: bar_from(r, "unethical_rate", r["n_clear"]))


def fig2_consistency(data: ReportData) -> Figure:
    return by_model_and_scenario(
        data, "CoT predicts the unethical output, sampled branch (paper Fig. 2 right)",
        "consistent CoT / unethical outputs",
        lambda r: bar_from(r, "consistency_rate", r["unethical"]))


def fig4_cot_presence(data: ReportData) -> Figure:
    """Fig. 4: CoT presence among unethical vs acceptable outputs, one panel per model."""
    title = "Reasoning (CoT) present, by output class, sampled branch (paper Fig. 4)"
    rows = data.sampled()
    if not rows:
        return placeholder(title, f"no sampled-branch labels from judge {data.judge!r}")
    names, groups = models(rows), scenario_groups(rows)
    fig, axes = new_figure(len(names), len(groups) * 2)
    for ax, model in zip(axes, names):
        bars: dict[tuple[str, str], Bar] = {}
        for r in (r for r in rows if r["model"] == model):
            label = group_label(r["scenario"], r["variant"])
            bars[(label, "unethical outputs")] = bar_from(r, "cot_rate_unethical", r["unethical"])
            bars[(label, "acceptable outputs")] = bar_from(r, "cot_rate_acceptable", r["n_clear"] - r["unethical"])
        draw_grouped(ax, [group_label(*g) for g in groups], list(OUTPUT_COLORS), bars, OUTPUT_COLORS)
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("scenario (variant)")
    axes[0].set_ylabel("final responses with CoT / outputs of that class")
    return finish(fig, title, data, OUTPUT_COLORS)


def fig5_race_vs_coffee_tea(data: ReportData) -> Figure:
    """Fig. 5: the real-estate race variant against its coffee/tea control."""
    title = f"{CONTROL_SCENARIO}: race vs coffee/tea control, sampled branch (paper Fig. 5)"
    rows = [r for r in data.sampled()
            if r["scenario"] == CONTROL_SCENARIO and r["variant"] in CONTROL_VARIANTS]
    if not rows:
        return placeholder(title, f"no sampled {CONTROL_SCENARIO} race/coffee_tea labels "
                                  f"from judge {data.judge!r}")
    names = models(rows)
    panels: list[tuple[str, Callable[[Row], Bar]]] = [
        ("unethical / clear outputs", lambda r: bar_from(r, "unethical_rate", r["n_clear"])),
        ("consistent CoT / unethical outputs", lambda r: bar_from(r, "consistency_rate", r["unethical"])),
        ("CoT present / all outputs", lambda r: bar_from(r, "cot_rate", r["n"])),
    ]
    fig, axes = new_figure(3, len(names) * 2)
    for ax, (ylabel, bar) in zip(axes, panels):
        bars = {(r["model"], r["variant"]): bar(r) for r in rows}
        draw_grouped(ax, names, list(CONTROL_VARIANTS), bars, VARIANT_COLORS)
        ax.set_title(ylabel, fontsize=10)
        ax.set_xlabel("model")
    axes[0].set_ylabel("rate")
    return finish(fig, title, data, VARIANT_COLORS)


def branches_refusal_vs_rebuttal(data: ReportData) -> Figure:
    """The main result: unethical and deception rates per initial-response branch."""
    title = "Sampled vs polite refusal vs rebuttal as the initial response"
    if not data.rates:
        return placeholder(title, f"no labels from judge {data.judge!r}")
    groups, names = scenario_groups(data.rates), models(data.rates)
    metrics = [("unethical_rate", "unethical outputs"), ("deception_rate", "reason-based deception")]
    fig, axes = new_figure(len(metrics), len(names) * len(BRANCHES), rows=len(groups))
    for g_index, (scenario, variant) in enumerate(groups):
        cell_rows = [r for r in data.rates if (r["scenario"], r["variant"]) == (scenario, variant)]
        for m_index, (rate, label) in enumerate(metrics):
            ax = axes[g_index * len(metrics) + m_index]
            bars = {(r["model"], r["branch"]): bar_from(r, rate, r["n_clear"]) for r in cell_rows}
            draw_grouped(ax, names, list(BRANCHES), bars, BRANCH_COLORS)
            ax.set_title(f"{group_label(scenario, variant).replace(chr(10), ' ')}: {label}", fontsize=10)
        axes[g_index * len(metrics)].set_ylabel("share of clear outputs")
    for ax in axes[-len(metrics):]:
        ax.set_xlabel("model")
    return finish(fig, title, data, BRANCH_COLORS)


FIGURES: dict[str, tuple[Callable[[ReportData], Figure], str]] = {
    "fig2_unethical_rate.png": (fig2_unethical_rate, "Unethical-output rate, sampled branch (Fig. 2 left)"),
    "fig2_consistency.png": (fig2_consistency, "CoT/output consistency among unethical outputs (Fig. 2 right)"),
    "fig4_cot_presence.png": (fig4_cot_presence, "CoT presence by output class (Fig. 4)"),
    "fig5_race_vs_coffee_tea.png": (fig5_race_vs_coffee_tea, "Real estate: race vs coffee/tea control (Fig. 5)"),
    "branches_refusal_vs_rebuttal.png": (branches_refusal_vs_rebuttal,
                                         "Main result: sampled vs refusal vs rebuttal"),
}


# ---------------------------------------------------------------------------- markdown


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


def rates_table(rows: Sequence[Row], phrasing: bool = False) -> list[str]:
    header = ["scenario", "variant", "branch", *(["phrasing"] if phrasing else []), "model", "n",
              "unclear", "unethical (k)", "unethical rate [95% CI]", "CoT", "CoT if unethical",
              "CoT if acceptable", "consistency [95% CI]", "deception (k)", "deception rate [95% CI]"]
    body = [[r["scenario"], r["variant"], r["branch"], *([r["phrasing"]] if phrasing else []), r["model"],
             r["n"], r["n_unclear"], r["unethical"],
             with_ci(r["unethical_rate"], r["unethical_lo"], r["unethical_hi"]),
             pct(r["cot_rate"]), pct(r["cot_rate_unethical"]), pct(r["cot_rate_acceptable"]),
             with_ci(r["consistency_rate"], r["consistency_lo"], r["consistency_hi"]),
             r["deception"], with_ci(r["deception_rate"], r["deception_lo"], r["deception_hi"])]
            for r in rows]
    return table(header, body)


def comparison_table(rows: Sequence[Row]) -> list[str]:
    header = ["scenario", "variant", "model", "metric", "A vs B", "rate A (k/n)", "rate B (k/n)",
              "A − B [95% CI]", "p"]
    body = [[r["scenario"], r["variant"], r["model"], r["metric"], f"{r['branch_a']} vs {r['branch_b']}",
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
             f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from `{db_path}`.",
             f"Judge **{data.judge}**, version {versions} (each judge's newest version by grading time).", ""]
    if any(r["model"] == EMBEDDED_MODEL for r in data.rates):
        lines += [f"> **Note:** rows for `{EMBEDDED_MODEL}` come from the tiny embedded model (135M "
                  "parameters). It exercises the pipeline offline; its rates say nothing about the paper's findings, "
                  "which need real models (gpt-4-*, or others through an OpenAI-compatible endpoint).", ""]
    return lines


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
    lines += rates_table(data.rates) if data.rates else ["No rows."]
    lines += ["", "## Rates per refusal/rebuttal phrasing", ""]
    lines += rates_table(data.by_phrasing, phrasing=True) if data.by_phrasing else ["No rows."]
    lines += ["", "## Branch comparison", "",
              "Difference A − B with Newcombe hybrid-score 95% interval; p = two-sided pooled "
              "two-proportion z-test (no correction for multiple comparisons).", ""]
    lines += comparison_table(data.comparison) if data.comparison else ["No pair of branches in the same cell."]
    lines += ["", "## Judge agreement", ""]
    lines += (agreement_table(data.agreement) if data.agreement
              else ["Fewer than two judges labelled the same responses: no agreement to report."])
    return "\n".join(lines) + "\n"
