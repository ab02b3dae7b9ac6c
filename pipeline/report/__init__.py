"""`pipeline report`: the paper's figures and tables, regenerated from the database.

`data` reads the views once, `figures` draws the PNGs, `markdown` writes report.md. The
database is opened read-only (a run may be writing); one from an earlier release is first
upgraded to today's schema and views. Partial data is normal (a run still going, a branch not
sampled, no unethical output): every figure is drawn from what exists and report.md lists
what is missing. Imports the store, `experiment` (the default variant's name) and common modules only.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.report.data import load
from pipeline.report.figures import CORRECTED_FIGURES, FIGURES, save
from pipeline.report.markdown import render_markdown
from pipeline.store.connection import open_reader


def write_report(db_path: Path, out_dir: Path, judge: str = "rule", corrected: bool = False) -> list[Path]:
    """Write the figures (PNG) and report.md into out_dir; return their paths. `corrected`
    adds the rates corrected for judge error with human labels (figure and table)."""
    con = open_reader(db_path)
    try:
        data = load(con, judge, corrected)
    finally:
        con.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {**FIGURES, **(CORRECTED_FIGURES if corrected else {})}
    paths = [save(make(data), out_dir / name) for name, (make, _) in figures.items()]
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(data, db_path), encoding="utf-8")
    return [*paths, markdown]
