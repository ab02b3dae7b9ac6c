"""The paper's figures (PNG), drawn from `ReportData` with matplotlib (Agg backend)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from pipeline.experiment.scenarios import DEFAULT_VARIANT  # noqa: E402
from pipeline.report.data import BRANCHES, ReportData, Row  # noqa: E402

Target = TypeVar("Target", Path, IO[bytes])
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
        # Clipped at 0: a bound a rounding error past its rate (or a corrected rate outside
        # its interval) must not stop the report (matplotlib rejects negative yerr).
        below, above = max(0.0, bar.rate - bar.lo), max(0.0, bar.hi - bar.rate)
        ax.errorbar(x, bar.rate, yerr=[[below], [above]], fmt="none", ecolor="black", elinewidth=1, capsize=2)
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


def finish(fig: Figure, title: str, data: ReportData, colors: dict[str, Any],
           intervals: str = "Wilson 95% intervals") -> Figure:
    fig.suptitle(f"{title}\njudge {data.judge} {', '.join(data.versions())} · error bars: {intervals}",
                 fontsize=10)
    fig.legend(handles=[Patch(color=color, label=name) for name, color in colors.items()],
               loc="outside lower center", ncols=min(len(colors), 6), fontsize=9, frameon=False,
               title="'missing': no such cell · 'n=0': rate undefined (empty denominator)",
               title_fontsize=8)
    return fig


def save(fig: Figure, target: Target) -> Target:
    """Write the PNG to a path or a binary stream (`pipeline view` serves it from memory)."""
    fig.savefig(target, format="png", dpi=120)
    plt.close(fig)
    return target


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


CORRECTED_COLORS = {"judge only": "#bdbdbd", "corrected (PPI)": "#1f77b4"}
CORRECTED_METRICS = (("unethical", "unethical outputs"), ("consistency", "CoT predicts the unethical output"),
                     ("deception", "reason-based deception"))


def fig_corrected(data: ReportData) -> Figure:
    """Judge-only rates next to the rates corrected for judge error with human labels."""
    title = "Rates corrected for judge error with human labels (prediction-powered inference)"
    rows = [r for r in data.corrected if r["n_human"]]
    if not rows:
        return placeholder(title, f"no human labels on responses judged by {data.judge!r} "
                                  "(label some with `pipeline label`)")
    several = len({r["model"] for r in rows}) > 1
    groups = [cell_label(r, several) for r in rows]
    fig, axes = new_figure(len(CORRECTED_METRICS), 2 * len(groups))
    judge_rows = {(r["scenario"], r["variant"], r["branch"], r["model"]): r for r in data.rates}
    for ax, (metric, label) in zip(axes, CORRECTED_METRICS):
        bars: dict[tuple[str, str], Bar] = {}
        for group, r in zip(groups, rows):
            judge = judge_rows.get((r["scenario"], r["variant"], r["branch"], r["model"]))
            if judge:
                bars[(group, "judge only")] = bar_from(judge, f"{metric}_rate", int(r["n_judge"]))
            bars[(group, "corrected (PPI)")] = Bar(r[f"{metric}_rate"], r[f"{metric}_lo"], r[f"{metric}_hi"],
                                                   int(r["n_human"]))
        draw_grouped(ax, groups, list(CORRECTED_COLORS), bars, CORRECTED_COLORS)
        ax.set_title(label, fontsize=10)
    axes[0].set_ylabel("rate (n = judged / human-labelled)")
    return finish(fig, title, data, CORRECTED_COLORS, intervals="Wilson (judge only), PPI 95% (corrected)")


def cell_label(row: Row, with_model: bool) -> str:
    label = f"{group_label(row['scenario'], row['variant'])}\n{row['branch']}"
    return f"{label}\n{row['model']}" if with_model else label


CORRECTED_FIGURES: dict[str, tuple[Callable[[ReportData], Figure], str]] = {
    "corrected_rates.png": (fig_corrected, "Judge-only vs corrected rates (prediction-powered inference)"),
}
