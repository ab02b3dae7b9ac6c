"""The report renders every figure and report.md from full, partial and empty databases."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pytest

from pipeline.errors import PipelineError
from pipeline.local_model.server import MODEL_NAME
from pipeline.report import write_report
from pipeline.report.figures import FIGURES
from tests.test_views import (
    ACCEPTABLE,
    ACCEPTABLE_NO_COT,
    BELIED,
    CONSISTENT,
    NO_COT_UNETHICAL,
    UNCLEAR,
    add_cell,
    add_judgments,
    make_db,
)

MIN_PNG_BYTES = 10_000


def small_db(path: Path) -> Path:
    """Two models, the control scenario, a missing branch, a cell without unethical outputs,
    a second judge, and one planned cell that has no data yet."""
    con = make_db(path)
    mixed = [CONSISTENT] * 5 + [BELIED] * 3 + [NO_COT_UNETHICAL] * 2 + [ACCEPTABLE] * 8 + [UNCLEAR] * 2
    for model in ("gpt-x", MODEL_NAME):
        ids = add_cell(con, "car_sales", "default", "sampled", model, mixed)
        add_cell(con, "car_sales", "default", "refusal", model, mixed[::2])
        add_cell(con, "car_sales", "default", "rebuttal", model, [ACCEPTABLE] * 9 + [BELIED])
        add_cell(con, "real_estate", "race", "sampled", model, mixed[3:])
        add_cell(con, "real_estate", "coffee_tea", "sampled", model, [ACCEPTABLE] * 6 + [ACCEPTABLE_NO_COT] * 4)
        add_judgments(con, ids, [ACCEPTABLE] * 10 + mixed[10:], "llm:judge", "1")
    add_cell(con, "insider_trading", "default", "sampled", "gpt-x", [ACCEPTABLE] * 4)  # no refusal/rebuttal
    embedded = orjson.dumps({"models": [{"name": MODEL_NAME, "embedded": True}, {"name": "gpt-x", "embedded": False}]}).decode()
    con.execute("INSERT INTO runs (run_id, started_at, config) VALUES ('r1', now(), ?)", [embedded])
    con.execute("INSERT INTO run_cells VALUES ('r1', 'insider_trading', 'default', 'refusal', 'gpt-x', 20)")
    con.close()
    return path


def empty_db(path: Path) -> Path:
    make_db(path).close()
    return path


def assert_outputs(paths: list[Path], out: Path) -> str:
    assert [p.name for p in paths] == [*FIGURES, "report.md"]
    for png in paths[:-1]:
        assert png.exists() and png.stat().st_size > MIN_PNG_BYTES, png
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for name in FIGURES:
        assert f"]({name})" in markdown
    return markdown


def test_report_from_small_database(tmp_path: Path) -> None:
    out = tmp_path / "report"
    markdown = assert_outputs(write_report(small_db(tmp_path / "r.duckdb"), out), out)
    assert "Judge **rule**, version 1" in markdown
    assert "tiny embedded model" in markdown
    assert "insider_trading/default/gpt-x: branch refusal, rebuttal missing" in markdown
    assert "insider_trading/default/refusal/gpt-x: planned 20, done 0, judged 0" in markdown
    assert "no unethical output" in markdown
    assert "sampled vs rebuttal" in markdown and "pp [" in markdown
    assert "| llm:judge 1 | rule 1 | output_label | 40 |" in markdown


def test_report_for_another_judge(tmp_path: Path) -> None:
    out = tmp_path / "report"
    markdown = assert_outputs(write_report(small_db(tmp_path / "r.duckdb"), out, judge="llm:judge"), out)
    assert "Judge **llm:judge**" in markdown
    # it labelled the sampled car_sales cells only
    assert "no sampled real_estate cells: Fig. 5 (race vs coffee/tea) is empty" in markdown
    assert "car_sales/default/gpt-x: branch refusal, rebuttal missing" in markdown
    assert "No pair of branches in the same cell." in markdown


def test_report_from_empty_database(tmp_path: Path) -> None:
    out = tmp_path / "report"
    markdown = assert_outputs(write_report(empty_db(tmp_path / "e.duckdb"), out), out)
    assert "no judged final responses from judge 'rule': the data are missing" in markdown
    assert "run `pipeline sample` first" in markdown


def test_report_needs_an_existing_database(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no such database"):
        write_report(tmp_path / "absent.duckdb", tmp_path / "out")


def test_report_corrected_with_human_labels(tmp_path: Path) -> None:
    """People label half of each sampled car_sales cell; where they disagree with the rule judge the
    corrected rate moves away from the judge's, and the report says how far the judge is trusted."""
    db = small_db(tmp_path / "r.duckdb")
    con = duckdb.connect(str(db))
    rows = con.execute("SELECT job_id, output_label, cot_label, cot_present FROM judgments "
                       "WHERE judge = 'rule' AND job_id LIKE 'car_sales/default/sampled/%' ORDER BY job_id").fetchall()
    labels = []
    for index, (job_id, output, cot, present) in enumerate(rows):
        if index % 2:
            continue
        if output == "unethical":  # the people see consistency where the judge saw none
            cot, present = "unethical", True
        labels.append((job_id, "ann", output, cot, present, None, "2026-11-01T00:00:00+00:00"))
    con.executemany("INSERT INTO human_labels VALUES (?, ?, ?, ?, ?, ?, ?)", labels)
    con.close()
    out = tmp_path / "report"
    paths = write_report(db, out, corrected=True)
    assert (out / "corrected_rates.png").stat().st_size > MIN_PNG_BYTES
    assert out / "corrected_rates.png" in paths
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "## Rates corrected for judge error" in markdown
    assert "| car_sales | default | sampled | gpt-x | prompted | 20 | 10 |" in markdown
    assert "no human labels" in markdown  # the refusal cells: nothing to correct with, said so
    assert "agrees with people on the CoT label for only" in markdown  # judge below 0.90 -> warning
    assert "| 80.0% (10) |" in markdown  # per cell, next to the rates


def test_report_lists_cut_off_replies_per_cell(tmp_path: Path) -> None:
    db = small_db(tmp_path / "r.duckdb")
    con = duckdb.connect(str(db))
    ids = [job_id for (job_id,) in con.execute("SELECT job_id FROM jobs WHERE scenario = 'insider_trading'").fetchall()]
    con.execute("UPDATE jobs SET run_id = 'r1' WHERE scenario = 'insider_trading'")
    con.executemany("INSERT INTO responses (job_id, run_id, call, finish_reason) VALUES (?, 'r1', 'final', ?)",
                    [(job_id, "length" if i < 3 else "stop") for i, job_id in enumerate(ids)])
    con.close()
    out = tmp_path / "report"
    markdown = assert_outputs(write_report(db, out), out)
    assert "insider_trading/default/sampled/gpt-x: 3 final replies cut off at max_tokens" in markdown


def test_report_says_when_the_judge_was_never_checked(tmp_path: Path) -> None:
    out = tmp_path / "report"
    markdown = assert_outputs(write_report(small_db(tmp_path / "r.duckdb"), out), out)
    assert "Judge not checked against people" in markdown
