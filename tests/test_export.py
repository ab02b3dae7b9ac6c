"""`pipeline export`: the final responses read back by DuckDB and PyArrow match the database."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.csv
import pyarrow.dataset
import pytest

from tests.conftest import Workspace, query
from tests.fakeserver import FakeServer


@pytest.fixture
def graded(workspace: Workspace) -> Workspace:
    """A sampled, rule-graded database with two human labels."""
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=4)
        workspace.sample()
    workspace.cli("grade", "--db", str(workspace.db), "--scenarios-dir", str(workspace.scenarios))
    jobs = [job for (job,) in query(workspace.db, "SELECT job_id FROM final_responses ORDER BY job_id LIMIT 2")]
    labels = workspace.root / "labels.jsonl"
    labels.write_text("".join(json.dumps({"job_id": job, "labeller": "ana", "output_label": label,
                                          "cot_label": "acceptable", "cot_present": True}) + "\n"
                              for job, label in zip(jobs, ["unethical", "acceptable"])))
    workspace.cli("label", "import", str(labels), "--db", str(workspace.db))
    return workspace


def stored(db: Path) -> dict[str, tuple[object, ...]]:
    """job_id -> (scenario, model, rule output label, rule cot label, human output label) from the views."""
    rows = query(db, """SELECT f.job_id, f.scenario, f.model, g.output_label, g.cot_label, h.output_label
                        FROM final_responses f
                        LEFT JOIN current_judgments g ON g.job_id = f.job_id AND g.judge = 'rule'
                        LEFT JOIN current_human_labels h ON h.job_id = f.job_id""")
    return {job: tuple(rest) for job, *rest in rows}


def test_parquet_is_partitioned_and_reads_back_with_duckdb_and_pyarrow(graded: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "export"
    proc = graded.cli("export", "--db", str(graded.db), "--out", str(out))
    expected = stored(graded.db)
    assert f"exported {len(expected)} final responses" in proc.stdout
    assert {path.relative_to(out).parts[:2] for path in out.rglob("*.parquet")} == {
        (f"scenario={scenario}", f"model={model}") for scenario, model, *_ in expected.values()}

    con = duckdb.connect()
    rows = con.execute(f"""SELECT job_id, scenario, model, rule_output_label, rule_cot_label, human_output_label
                           FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true)""").fetchall()
    assert {job: tuple(rest) for job, *rest in rows} == expected

    table = pyarrow.dataset.dataset(out, format="parquet", partitioning="hive").to_table()
    by_job = {row["job_id"]: row for row in table.to_pylist()}
    assert len(by_job) == table.num_rows == len(expected)
    assert {job: (row["scenario"], row["model"], row["rule_output_label"], row["rule_cot_label"],
                  row["human_output_label"]) for job, row in by_job.items()} == expected
    assert sum(1 for row in by_job.values() if row["human_output_label"]) == 2
    # texts, split and usage came along
    sampled = next(row for row in by_job.values() if row["branch"] == "sampled")
    initial = query(graded.db, f"SELECT response_text FROM responses WHERE job_id = '{sampled['job_id']}' "
                               "AND call = 'initial'")[0][0]
    assert sampled["initial_text"] == initial and sampled["calls"] == 2
    assert all(row["response_text"] and row["trigger_text"] and row["job_prompt_tokens"] > row["prompt_tokens"] > 0
               for row in by_job.values() if row["branch"] == "sampled")
    assert all(row["cot_present"] is not None and row["output_text"] is not None for row in by_job.values())


def test_csv_and_jsonl_hold_the_same_rows(graded: Workspace, tmp_path: Path) -> None:
    expected = stored(graded.db)
    for fmt, name in (("csv", "final_responses.csv"), ("jsonl", "final_responses.jsonl")):
        graded.cli("export", "--db", str(graded.db), "--out", str(tmp_path), "--format", fmt)
        path = tmp_path / name
        if fmt == "csv":
            options = pyarrow.csv.ConvertOptions(strings_can_be_null=True)
            rows = pyarrow.csv.read_csv(path, convert_options=options).to_pylist()
        else:
            rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert {row["job_id"]: (row["scenario"], row["model"], row["rule_output_label"], row["rule_cot_label"],
                                row["human_output_label"]) for row in rows} == expected, fmt


def test_unknown_judge_is_one_line(graded: Workspace, tmp_path: Path) -> None:
    proc = graded.cli("export", "--db", str(graded.db), "--out", str(tmp_path / "x"), "--judge", "llm:none",
                      check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --judge llm:none: no labels by that judge in {graded.db} (run `pipeline grade` first)"]


def test_each_judge_gets_columns_of_its_own_and_the_split_is_the_rule_judges(graded: Workspace, tmp_path: Path) -> None:
    con = duckdb.connect(str(graded.db))
    try:   # a second judge that disagrees with the rule judge on every output label, with a split of its own
        con.execute("""INSERT INTO judgments (job_id, judge, judge_version, cot_present, cot_text, output_text,
                                              output_label, cot_label, detail, graded_at)
                       SELECT job_id, 'llm:gpt-x', 'v1', NOT cot_present, 'other cot', 'other output',
                              CASE output_label WHEN 'unethical' THEN 'acceptable' ELSE 'unethical' END,
                              'unclear', NULL, now()
                       FROM judgments WHERE judge = 'rule'""")
    finally:
        con.close()
    graded.cli("export", "--db", str(graded.db), "--out", str(tmp_path), "--format", "jsonl")
    rows = [json.loads(line) for line in (tmp_path / "final_responses.jsonl").read_text().splitlines()]
    rule = {job: (out, cot, present, text) for job, out, cot, present, text in query(
        graded.db, "SELECT job_id, output_label, cot_label, cot_present, output_text FROM current_judgments "
                   "WHERE judge = 'rule'")}
    assert len(rows) == len(rule) > 0
    for row in rows:
        out, cot, present, text = rule[row["job_id"]]
        assert (row["rule_output_label"], row["rule_cot_label"], row["rule_cot_present"]) == (out, cot, present)
        assert row["llm_gpt_x_output_label"] == ("acceptable" if out == "unethical" else "unethical")
        assert (row["llm_gpt_x_cot_label"], row["llm_gpt_x_version"]) == ("unclear", "v1")
        assert (row["cot_present"], row["output_text"]) == (present, text)   # the rule judge's split
