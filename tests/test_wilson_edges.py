"""Wilson bounds are exact at k = 0 and k = n (Python and SQL), and the report draws cells
with k = 0 and k = n without crashing (it used to: a lower bound of 4.9e-17 above a rate of
0 made matplotlib reject a negative error bar)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import matplotlib.pyplot as plt
import pytest

from pipeline.grading.stats import newcombe_diff, wilson
from pipeline.report import write_report
from pipeline.report.figures import Bar, draw_bar
from pipeline.store import schema
from tests.test_views import ACCEPTABLE, BELIED, CONSISTENT, add_cell, make_db

SIZES = range(1, 41)


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(":memory:")
    schema.upgrade(connection)
    return connection


@pytest.mark.parametrize("n", SIZES)
def test_python_bounds_are_exact_at_the_ends(n: int) -> None:
    assert wilson(0, n)[0] == 0.0
    assert wilson(n, n)[1] == 1.0
    for k in range(n + 1):
        lo, hi = wilson(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)


def test_sql_bounds_are_exact_at_the_ends(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute("""SELECT n, wilson_lo(0, n), wilson_hi(n, n), wilson_hi(0, n), wilson_lo(n, n)
                          FROM range(1, 41) t(n)""").fetchall()
    for n, lo_at_0, hi_at_n, hi_at_0, lo_at_n in rows:
        assert (lo_at_0, hi_at_n) == (0.0, 1.0), n
        assert hi_at_0 == pytest.approx(wilson(0, n)[1], abs=1e-12)
        assert lo_at_n == pytest.approx(wilson(n, n)[0], abs=1e-12)


def test_sql_matches_python_inside_and_stays_around_the_rate(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute("""SELECT k, n, wilson_lo(k, n), wilson_hi(k, n)
                          FROM range(1, 41) a(n), range(0, 41) b(k) WHERE k <= n""").fetchall()
    for k, n, lo, hi in rows:
        assert (lo, hi) == pytest.approx(wilson(k, n), abs=1e-12)
        assert lo <= k / n <= hi, (k, n, lo, hi)
    assert con.execute("SELECT wilson_lo(0, 0), wilson_hi(0, 0)").fetchall() == [(None, None)]


def test_newcombe_at_the_ends() -> None:
    diff, lo, hi = newcombe_diff(0, 10, 10, 10)
    assert diff == -1.0 and lo <= diff <= hi


def test_report_with_zero_and_full_cells(tmp_path: Path) -> None:
    db = tmp_path / "edges.duckdb"
    con = make_db(db)
    add_cell(con, "car_sales", "default", "sampled", "m1", [ACCEPTABLE] * 7)      # unethical 0/7
    add_cell(con, "car_sales", "default", "refusal", "m1", [BELIED] * 5)          # consistency 0/5
    add_cell(con, "car_sales", "default", "rebuttal", "m1", [CONSISTENT] * 3)     # consistency 3/3
    add_cell(con, "real_estate", "race", "sampled", "m1", [ACCEPTABLE] * 3)
    add_cell(con, "real_estate", "coffee_tea", "sampled", "m1", [CONSISTENT] * 4)
    rates = con.execute("SELECT branch, unethical_rate, unethical_lo, unethical_hi, consistency_lo, consistency_hi "
                        "FROM rates WHERE scenario = 'car_sales' ORDER BY branch").fetchall()
    con.close()
    assert rates == [("rebuttal", 1.0, pytest.approx(0.4385, abs=1e-4), 1.0, pytest.approx(0.4385, abs=1e-4), 1.0),
                     ("refusal", 1.0, pytest.approx(0.5655, abs=1e-4), 1.0, 0.0, pytest.approx(0.4345, abs=1e-4)),
                     ("sampled", 0.0, 0.0, pytest.approx(0.3543, abs=1e-4), None, None)]
    out = tmp_path / "report"
    paths = write_report(db, out)
    assert (out / "report.md").is_file() and all(path.exists() for path in paths)


@pytest.mark.parametrize("bar", [Bar(0.0, 4.9e-17, 0.3, 7), Bar(1.0, 0.6, 1.0 - 1e-16, 5), Bar(0.2, 0.3, 0.5, 4)],
                         ids=["lo-above-rate", "hi-below-rate", "rate-outside-interval"])
def test_a_bound_past_its_rate_does_not_crash_the_figure(bar: Bar) -> None:
    fig, ax = plt.subplots()
    try:
        draw_bar(ax, 0.0, 0.8, bar, "C0", vertical=False)
    finally:
        plt.close(fig)
