"""A database written by the release before the reorganisation (commit 2fd7b79, schema
version 1) is upgraded in place by today's code; foreign or newer files are refused.

tests/fixtures/db_v1.duckdb.gz was made by that release: `pipeline sample` of car_sales
(3 branches x 3 seeds) against tests/fakeserver.py with --bad-seeds 2 (so 3 jobs failed),
then `pipeline grade` with the rule judge.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest

from pipeline.store.schema import SCHEMA_VERSION
from tests.conftest import Workspace, query

FIXTURE = Path(__file__).parent / "fixtures" / "db_v1.duckdb.gz"
# What the old release wrote (counted on the file before any upgrade).
V1_COUNTS = {"jobs": 9, "responses": 11, "judgments": 6, "runs": 1, "run_cells": 3}
V1_FAILED = 3


@pytest.fixture
def v1_db(tmp_path: Path) -> Path:
    db = tmp_path / "old.duckdb"
    with gzip.open(FIXTURE, "rb") as src, open(db, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return db


def counts(db: Path) -> dict[str, int]:
    return {table: query(db, f"SELECT count(*) FROM {table}")[0][0] for table in V1_COUNTS}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fixture_is_schema_version_1(v1_db: Path) -> None:
    assert query(v1_db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]
    assert counts(v1_db) == V1_COUNTS
    assert SCHEMA_VERSION > 1, "the fixture no longer exercises a migration"


def test_old_database_is_upgraded_in_place(v1_db: Path, tmp_path: Path) -> None:
    before = counts(v1_db)
    jobs_before = query(v1_db, "SELECT COLUMNS(*)::VARCHAR FROM jobs ORDER BY job_id")
    responses_before = query(v1_db, "SELECT job_id, call, response_text FROM responses ORDER BY ALL")
    judgments_before = query(v1_db, "SELECT COLUMNS(*)::VARCHAR FROM judgments ORDER BY ALL")
    workspace = Workspace(tmp_path)

    status = workspace.cli("status", "--db", str(v1_db))
    assert "car_sales" in status.stdout
    labels = workspace.cli("sql", "--db", str(v1_db), "SELECT count(*) AS n_labels FROM human_labels")
    assert "n_labels" in labels.stdout
    assert [line.strip("│ ") for line in labels.stdout.splitlines()][4] == "0"
    out = tmp_path / "report"
    workspace.cli("report", "--db", str(v1_db), "--out", str(out))
    assert (out / "report.md").is_file()

    assert query(v1_db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert counts(v1_db) == before
    assert query(v1_db, "SELECT count(*) FROM jobs WHERE status = 'failed'") == [(V1_FAILED,)]
    assert query(v1_db, "SELECT COLUMNS(*)::VARCHAR FROM jobs ORDER BY job_id") == jobs_before
    assert query(v1_db, "SELECT job_id, call, response_text FROM responses ORDER BY ALL") == responses_before
    judgments_after = query(v1_db, "SELECT COLUMNS(*)::VARCHAR FROM judgments ORDER BY ALL")
    old_width = len(judgments_before[0])
    assert [row[:old_width] for row in judgments_after] == judgments_before
    assert {row[old_width:] for row in judgments_after} == {(None,) * 4}   # cot_source, prompted_cot_* (v5)
    rates = query(v1_db, "SELECT branch, n, unethical FROM rates WHERE judge = 'rule' ORDER BY branch")
    assert rates == [("rebuttal", 2, 2), ("refusal", 2, 2), ("sampled", 2, 2)]
    assert query(v1_db, "SELECT count(*) FROM human_labels") == [(0,)]


def test_old_database_grades_with_cot_sources(v1_db: Path, tmp_path: Path) -> None:
    """Responses stored before native reasoning existed grade as before: their CoT is the
    prompted split, recorded as such; the old judge's rows (no cot_source) still count."""
    workspace = Workspace(tmp_path)
    scenarios = Path(__file__).resolve().parents[1] / "scenarios"   # car_sales, as sampled then
    workspace.cli("grade", "--db", str(v1_db), "--scenarios-dir", str(scenarios))
    sources = query(v1_db, "SELECT DISTINCT cot_source FROM judgments WHERE judge_version NOT LIKE '2-%'")
    assert sources and {source for (source,) in sources} <= {"prompted", "none"}
    assert query(v1_db, "SELECT count(*) FROM final_responses WHERE reasoning_text IS NOT NULL") == [(0,)]
    rates = query(v1_db, "SELECT branch, cot_source, cot_primary, n FROM rates WHERE judge = 'rule' ORDER BY branch")
    assert [row[0] for row in rates] == ["rebuttal", "refusal", "sampled"]   # one row per cell, as before
    assert all(primary and source in ("prompted", "none") for _, source, primary, _ in rates)


def test_upgrade_happens_once(v1_db: Path, tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.cli("status", "--db", str(v1_db))
    upgraded = digest(v1_db)
    workspace.cli("status", "--db", str(v1_db))
    assert digest(v1_db) == upgraded  # an up-to-date database is only read


def test_newer_schema_is_refused(v1_db: Path, tmp_path: Path) -> None:
    con = duckdb.connect(str(v1_db))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    con.close()
    workspace = Workspace(tmp_path)
    for args in (("status",), ("sql", "SELECT 1"), ("report", "--out", str(tmp_path / "r"))):
        proc = workspace.cli(*args, "--db", str(v1_db), check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert str(v1_db) in lines[0] and "newer" in lines[0]
    assert query(v1_db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION + 1),)]


def test_foreign_duckdb_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE measurements (id INTEGER, value DOUBLE)")
    con.execute("INSERT INTO measurements VALUES (1, 2.5), (2, 3.5)")
    con.close()
    before = digest(db)
    workspace = Workspace(tmp_path)
    for args in (("status",), ("sql", "SELECT 1"), ("report", "--out", str(tmp_path / "r"))):
        proc = workspace.cli(*args, "--db", str(db), check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert str(db) in lines[0] and "not a results database" in lines[0]
    assert digest(db) == before
    assert query(db, "SELECT table_name FROM duckdb_tables()") == [("measurements",)]
