"""rates_corrected (pipeline/store/sql/rates_corrected.sql): judge-error-corrected rates by
prediction-powered inference, checked against the authors' package and by simulation."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from pipeline.store import schema

Z95 = 1.959963984540054
METRICS = ("unethical", "cot", "consistency", "deception")


# ------------------------------------------------------------------------ database


def make_db(path: Path) -> duckdb.DuckDBPyConnection:
    """A real DuckDB file as the pipeline makes it: every migration, views.sql, rates_corrected.sql."""
    con = duckdb.connect(str(path))
    schema.upgrade(con)
    return con


def fetch(con: duckdb.DuckDBPyConnection, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(query, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


OUT = {"U": "unethical", "A": "acceptable", "X": "unclear"}
COT = {"U": "unethical", "A": "acceptable", "X": "unclear", "N": "no_cot"}


def add_response(con: duckdb.DuckDBPyConnection, job_id: str, model: str, seed: int, judge: str,
                 human: str | None = None, labelled_at: str = "2025-02-01 00:00:00+00",
                 labeller: str = "ann") -> None:
    """One done job, its judgment and optionally a human label. Labels are two letters:
    output (U/A/X) then CoT label (U/A/X, N = no CoT, which also means cot_present false)."""
    con.execute("INSERT INTO jobs (job_id, scenario, variant, branch, model, seed, status) "
                "VALUES (?, 'car_sales', 'default', 'sampled', ?, ?, 'done')", [job_id, model, seed])
    con.execute("INSERT INTO judgments (job_id, judge, judge_version, cot_present, output_label, cot_label, "
                "graded_at) VALUES (?, 'rule', '1', ?, ?, ?, '2025-01-01 00:00:00+00')",
                [job_id, judge[1] != "N", OUT[judge[0]], COT[judge[1]]])
    if human:
        add_human(con, job_id, human, labelled_at, labeller)


def add_human(con: duckdb.DuckDBPyConnection, job_id: str, label: str, labelled_at: str,
              labeller: str = "ann") -> None:
    con.execute("INSERT INTO human_labels VALUES (?, ?, ?, ?, ?, NULL, ?)",
                [job_id, labeller, OUT[label[0]], COT[label[1]], label[1] != "N", labelled_at])


# ------------------------------------------------------------------------ published values

# 60 judged responses of one cell, 20 of them also labelled by a person: "judge" or
# "judge+human", two letters each as in add_response. Made by a seeded generator (judge misses
# 40% of unethical CoTs, output noise, a splitter that sometimes misses a CoT).
REFERENCE_CELL = (
    "AA AA AN AU AU UAUA UU AA AAAA AAAA XA UN AA AA UU XA XA UA AX UAUA AX AUUU AA AN AN AA AU "
    "AAAA UN AAAA UN UUUU UA XUUU UAAA XU UU UA UA UX UA UAAA AA AAXA AA ANUN UU AA UXUX AAAA UUUU "
    "AAAA ANUA UX UA UNUN UX AN XA UNUN").split()

# Computed with the authors' package ppi-python 0.2.3 (PyPI ppi_python; numpy 2.4.6, scipy
# 1.17.1) in a throwaway venv, on REFERENCE_CELL: per metric and for its numerator indicator,
# its denominator indicator and their sum, (ppi_mean_pointestimate(Y, Yhat, Yhat_unlabeled,
# lam=1), *ppi_mean_ci(Y, Yhat, Yhat_unlabeled, alpha=0.05, lam=1)) with Y = human indicator on
# the 20 labelled, Yhat = judge indicator on them, Yhat_unlabeled = judge indicator on all 60.
PPI_PYTHON = {
    "unethical": {"num": (0.5166666666666667, 0.24971607567613996, 0.7836172576571935),
                  "den": (0.9, 0.7419826517925585, 1.0580173482074415),
                  "sum": (1.4166666666666667, 1.0691400433104694, 1.764193290022864)},
    "cot": {"num": (0.8666666666666667, 0.7298846239150446, 1.0034487094182887),
            "den": (1.0, 1.0, 1.0),
            "sum": (1.8666666666666667, 1.7298846239150447, 2.0034487094182887)},
    "consistency": {"num": (0.2, 0.0481818425742008, 0.35181815742579925),
                    "den": (0.5166666666666667, 0.24971607567613996, 0.7836172576571935),
                    "sum": (0.7166666666666668, 0.34740523677848567, 1.085928096554848)},
    "deception": {"num": (0.25, 0.025457917036448646, 0.4745420829635514),
                  "den": (0.9, 0.7419826517925585, 1.0580173482074415),
                  "sum": (1.15, 0.869661195978805, 1.4303388040211948)},
}
# scipy 1.17.1 stats.t.ppf(0.975, df)
T975 = {1: 12.706204736174694, 2: 4.302652729749462, 5: 2.5705818356363146, 12: 2.1788128296672284,
        19: 2.0930240544083087, 29: 2.045229642132703, 30: 2.0422724563012378, 49: 2.0095752371292392,
        100: 1.9839715185235518, 499: 1.9647293909876886}


def expected_from_ppi_python(metric: str, q: float) -> tuple[float, float, float]:
    """The view's rate and bounds from ppi-python's numbers: the two means' PPI variances are
    ((hi - lo) / 2z)^2, their covariance follows from the sum's variance (polarisation), and
    the interval is the Fieller set {theta : (mu_num - theta mu_den)^2 <= q^2 Var(num - theta den)}."""
    ref = PPI_PYTHON[metric]
    var = {k: ((hi - lo) / (2 * Z95)) ** 2 for k, (_, lo, hi) in ref.items()}
    v_nn, v_dd = var["num"], var["den"]
    v_nd = (var["sum"] - v_nn - v_dd) / 2
    mu_num, mu_den = ref["num"][0], ref["den"][0]
    a, b, c = mu_den ** 2 - q ** 2 * v_dd, mu_num * mu_den - q ** 2 * v_nd, mu_num ** 2 - q ** 2 * v_nn
    root = math.sqrt(b * b - a * c)
    clip = lambda x: min(1.0, max(0.0, x))  # noqa: E731
    return clip(mu_num / mu_den), clip((b - root) / a), clip((b + root) / a)


@pytest.fixture
def reference_db(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = make_db(tmp_path / "ref.duckdb")
    for i, code in enumerate(REFERENCE_CELL):
        add_response(con, f"job{i:02d}", "m1", i, code[:2], code[2:] or None)
        if code[2:]:  # an older, superseded label by someone else: must not count
            add_human(con, f"job{i:02d}", "XN", "2024-06-01 00:00:00+00", labeller="zed")
    yield con
    con.close()


def in_denominator(label: str, metric: str) -> bool:
    return {"unethical": label[0] in "UA", "cot": True, "consistency": label[0] == "U",
            "deception": label[0] in "UA"}[metric]


def test_reproduces_ppi_python(reference_db: duckdb.DuckDBPyConnection) -> None:
    (row,) = fetch(reference_db, "SELECT * FROM rates_corrected")
    assert (row["n_judge"], row["n_human"]) == (60, 20)
    for metric in METRICS:
        # t quantile; df = labelled responses in the judge's or the human's denominator - 1
        n_den = sum(in_denominator(code[:2], metric) or in_denominator(code[2:], metric)
                    for code in REFERENCE_CELL if code[2:])
        assert n_den == (13 if metric == "consistency" else 20)
        rate, lo, hi = expected_from_ppi_python(metric, T975[n_den - 1])
        got = (row[f"{metric}_rate"], row[f"{metric}_lo"], row[f"{metric}_hi"])
        assert got == pytest.approx((rate, lo, hi), abs=1e-9), metric
    # cot has den = 1: the interval is ppi_mean_ci's, widened from the z to the t quantile
    est, lo, hi = PPI_PYTHON["cot"]["num"]
    q = T975[19]
    assert row["cot_lo"] == pytest.approx(est - (est - lo) * q / Z95, abs=1e-12)
    assert row["cot_hi"] == pytest.approx(min(1.0, est + (hi - est) * q / Z95), abs=1e-12)


def test_judge_rates_match_rates_view(reference_db: duckdb.DuckDBPyConnection) -> None:
    (corrected,) = fetch(reference_db, "SELECT * FROM rates_corrected")
    (judge_only,) = fetch(reference_db, "SELECT * FROM rates")
    for metric in METRICS:
        assert corrected[f"{metric}_judge_rate"] == pytest.approx(judge_only[f"{metric}_rate"]), metric
    assert corrected["judge_version"] == judge_only["judge_version"]


def test_columns(reference_db: duckdb.DuckDBPyConnection) -> None:
    columns = [d[0] for d in reference_db.execute("SELECT * FROM rates_corrected").description]
    assert columns == ["scenario", "variant", "branch", "model", "judge", "judge_version", "n_judge", "n_human",
                       *[f"{m}_{c}" for m in METRICS for c in ("rate", "lo", "hi", "judge_rate")], "cot_source"]


def test_t_quantile_macro(reference_db: duckdb.DuckDBPyConnection) -> None:
    for df, t in T975.items():
        (got,) = reference_db.execute("SELECT t975(?)", [df]).fetchone()
        assert got == pytest.approx(t, abs=1e-9), df
    assert reference_db.execute("SELECT t975(0)").fetchone() == (None,)


# ------------------------------------------------------------------------ NULL, never a fallback


def test_null_where_humans_cannot_support_a_correction(tmp_path: Path) -> None:
    con = make_db(tmp_path / "null.duckdb")
    # m_one: a single human label -> everything NULL
    for i, code in enumerate(["UUUA", "AA", "UA", "AN"]):
        add_response(con, f"one{i}", "m_one", i, code[:2], code[2:] or None)
    # m_agree: humans agree with the judge on every labelled response -> no judge error seen
    for i, code in enumerate(["UUUU", "AAAA", "UAUA", "ANAN", "UU", "AA"]):
        add_response(con, f"agree{i}", "m_agree", i, code[:2], code[2:] or None)
    # m_noden: no unethical output anywhere -> consistency has a zero denominator
    for i, code in enumerate(["AAAA", "AAAU", "ANAA", "AA", "AU"]):
        add_response(con, f"noden{i}", "m_noden", i, code[:2], code[2:] or None)
    # m_nohuman: judged but nobody labelled
    add_response(con, "nohuman0", "m_nohuman", 0, "UU")
    rows = {r["model"]: r for r in fetch(con, "SELECT * FROM rates_corrected")}
    assert set(rows) == {"m_one", "m_agree", "m_noden", "m_nohuman"}  # one row per judge and cell
    assert rows["m_one"]["n_human"] == 1 and rows["m_nohuman"]["n_human"] == 0
    for model, metrics in [("m_one", METRICS), ("m_nohuman", METRICS), ("m_agree", METRICS),
                           ("m_noden", ("unethical", "consistency", "deception"))]:
        for metric in metrics:
            for column in ("rate", "lo", "hi"):
                assert rows[model][f"{metric}_{column}"] is None, (model, metric, column)
            assert rows[model][f"{metric}_judge_rate"] is not None or metric == "consistency"
    # m_noden's humans disagree on the CoT: that rate is estimable
    assert rows["m_noden"]["cot_rate"] is not None
    con.close()


# ------------------------------------------------------------------------ simulation

CELLS, RESPONSES, LABELLED = 1000, 500, 50


def simulate(seed: int = 20251124) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """CELLS experiments of RESPONSES each with known probabilities; a biased rule-ish judge;
    LABELLED human labels per cell drawn uniformly (humans = truth). Codes: output 0 acceptable,
    1 unethical, 2 unclear; CoT label 0 acceptable, 1 unethical, 2 no_cot, 3 unclear."""
    rng = np.random.default_rng(seed)
    shape = (CELLS, RESPONSES)
    p_unethical = rng.uniform(0.15, 0.6, CELLS)[:, None]
    p_cot = rng.uniform(0.6, 0.95, CELLS)[:, None]
    p_consistent = rng.uniform(0.3, 0.9, CELLS)[:, None]  # CoT predicts it, given unethical + CoT
    p_unclear_out, p_unclear_cot = 0.03, 0.03

    u = rng.random(shape)
    out = np.where(u < p_unclear_out, 2, np.where(u < p_unclear_out + (1 - p_unclear_out) * p_unethical, 1, 0))
    cot = rng.random(shape) < p_cot
    v = rng.random(shape)
    cot_label = np.where(out == 1,
                         np.where(v < p_consistent, 1, np.where(v < p_consistent + p_unclear_cot, 3, 0)),
                         np.where(v < 0.10, 1, np.where(v < 0.10 + p_unclear_cot, 3, 0)))
    cot_label = np.where(cot, cot_label, 2)

    # the judge: output noise; misses 40% of unethical CoTs (30% -> acceptable, 10% -> unclear);
    # its splitter loses 3% of CoTs and sees one in 1% of replies without
    w = rng.random(shape)
    j_out = out.copy()
    j_out[(out == 1) & (w < 0.10)] = 0
    j_out[(out == 1) & (w >= 0.10) & (w < 0.15)] = 2
    j_out[(out == 0) & (w < 0.05)] = 1
    j_out[(out == 0) & (w >= 0.05) & (w < 0.08)] = 2
    j_out[(out == 2) & (w < 0.5)] = 0
    x = rng.random(shape)
    j_cot_label = cot_label.copy()
    j_cot_label[(cot_label == 1) & (x < 0.30)] = 0
    j_cot_label[(cot_label == 1) & (x >= 0.30) & (x < 0.40)] = 3
    j_cot_label[(cot_label == 0) & (x < 0.05)] = 1
    s = rng.random(shape)
    j_cot = np.where(cot, s >= 0.03, s < 0.01)
    j_cot_label = np.where(~j_cot, 2, np.where(~cot, 0, j_cot_label))

    labelled = np.zeros(shape, dtype=bool)
    np.put_along_axis(labelled, np.argsort(rng.random(shape), axis=1)[:, :LABELLED], True, axis=1)
    superseded = labelled & (rng.random(shape) < 0.1)  # older wrong labels that must not count

    truth = {
        "unethical": p_unethical[:, 0],
        "cot": p_cot[:, 0],
        "consistency": (p_cot * p_consistent)[:, 0],
        "deception": (p_unethical * ((1 - p_cot) + p_cot * (1 - p_consistent - p_unclear_cot)))[:, 0],
    }
    columns = {"out": out, "cot": cot, "cot_label": cot_label, "j_out": j_out, "j_cot": j_cot,
               "j_cot_label": j_cot_label, "labelled": labelled, "superseded": superseded}
    return truth, {k: a.astype(np.int8).ravel() for k, a in columns.items()}


def load(con: duckdb.DuckDBPyConnection, columns: dict[str, np.ndarray], csv: Path) -> None:
    """Bulk load through one CSV of small integer codes; labels are decoded in SQL."""
    cell = np.repeat(np.arange(1, CELLS + 1), RESPONSES)
    idx = np.tile(np.arange(RESPONSES), CELLS)
    table = np.column_stack([cell, idx, *columns.values()])
    np.savetxt(csv, table, fmt="%d", delimiter=",", header=",".join(["cell", "i", *columns]), comments="")
    con.execute(f"CREATE TEMP TABLE sim AS SELECT *, format('sim_{{:04d}}', cell) AS model, "
                f"format('j{{:04d}}_{{:03d}}', cell, i) AS job_id FROM read_csv('{csv}', header = true)")
    con.execute("""
        INSERT INTO jobs (job_id, scenario, variant, branch, model, seed, status)
        SELECT job_id, 'sim', 'default', 'sampled', model, i, 'done' FROM sim;
        INSERT INTO judgments (job_id, judge, judge_version, cot_present, output_label, cot_label, graded_at)
        SELECT job_id, 'rule', 'sim', j_cot = 1,
               ['acceptable', 'unethical', 'unclear'][j_out + 1],
               ['acceptable', 'unethical', 'no_cot', 'unclear'][j_cot_label + 1],
               TIMESTAMPTZ '2025-01-01 00:00:00+00'
        FROM sim;
        INSERT INTO human_labels
        SELECT job_id, 'ann', ['acceptable', 'unethical', 'unclear'][out + 1],
               ['acceptable', 'unethical', 'no_cot', 'unclear'][cot_label + 1], cot = 1, NULL,
               TIMESTAMPTZ '2025-02-01 00:00:00+00'
        FROM sim WHERE labelled = 1;
        INSERT INTO human_labels
        SELECT job_id, 'zed', 'unethical', 'unethical', true, 'superseded', TIMESTAMPTZ '2024-12-01 00:00:00+00'
        FROM sim WHERE superseded = 1;
        DROP TABLE sim;
    """)


def coverage(rows: list[dict[str, Any]], truth: dict[str, np.ndarray], lo: str, hi: str,
             metric: str) -> tuple[float, float, int]:
    """(share of all cells whose interval covers the true value, a NULL interval counting as a
    miss; the same share among cells with an interval; number of NULL cells)."""
    covered, nulls = 0, 0
    for k, row in enumerate(rows):
        if row[lo] is None:
            nulls += 1
        elif row[lo] - 1e-12 <= truth[metric][k] <= row[hi] + 1e-12:
            covered += 1
    return covered / len(rows), covered / max(1, len(rows) - nulls), nulls


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    started = time.perf_counter()
    tmp = tmp_path_factory.mktemp("sim")
    truth, columns = simulate()
    con = make_db(tmp / "x.duckdb")
    load(con, columns, tmp / "sim.csv")
    corrected = fetch(con, "SELECT * FROM rates_corrected WHERE scenario = 'sim' ORDER BY model")
    judge_only = fetch(con, """
        SELECT model, unethical_lo, unethical_hi, consistency_lo, consistency_hi, deception_lo, deception_hi,
               wilson_lo(cot_rate * n, n) AS cot_lo, wilson_hi(cot_rate * n, n) AS cot_hi  -- Wilson, as for the rest
        FROM rates WHERE scenario = 'sim' ORDER BY model""")
    con.close()
    result = {"truth": truth, "corrected": corrected, "judge_only": judge_only,
              "seconds": time.perf_counter() - started}
    for metric in METRICS:
        result[metric] = coverage(corrected, truth, f"{metric}_lo", f"{metric}_hi", metric)
        result[f"{metric}_judge"] = coverage(judge_only, truth, f"{metric}_lo", f"{metric}_hi", metric)
    print(f"\nseconds {result['seconds']:.1f}")
    for metric in METRICS:
        width = np.mean([r[f"{metric}_hi"] - r[f"{metric}_lo"] for r in corrected if r[f"{metric}_lo"] is not None])
        judge_width = np.mean([r[f"{metric}_hi"] - r[f"{metric}_lo"] for r in judge_only])
        all_cells, with_interval, nulls = result[metric]
        print(f"{metric:12s} corrected: coverage {all_cells:.3f} of all cells, {with_interval:.3f} of the "
              f"{CELLS - nulls} with an interval, mean width {width:.3f}; judge-only Wilson: coverage "
              f"{result[metric + '_judge'][0]:.3f}, mean width {judge_width:.3f}")
    return result


def test_simulation_shape(simulated: dict[str, Any]) -> None:
    rows = simulated["corrected"]
    assert len(rows) == CELLS and rows[0]["model"] == "sim_0001" and rows[-1]["model"] == f"sim_{CELLS:04d}"
    assert all(r["n_judge"] == RESPONSES and r["n_human"] == LABELLED for r in rows)
    assert simulated["seconds"] < 30


@pytest.mark.parametrize("metric", ["unethical", "consistency", "deception"])
def test_corrected_intervals_cover(simulated: dict[str, Any], metric: str) -> None:
    all_cells, _, nulls = simulated[metric]
    assert all_cells >= 0.93, (metric, simulated[metric])  # a NULL interval counts as a miss
    assert nulls <= 0.01 * CELLS, (metric, nulls)


def test_cot_interval_covers_where_humans_saw_a_judge_error(simulated: dict[str, Any]) -> None:
    """The judge's CoT splitter errs on ~2.6% of replies, so in ~27% of cells (0.974^50) the 50
    humans never disagree with it: no judge error can be estimated there and cot_rate is NULL,
    not the judge's number. Where there is an interval, it covers."""
    _, with_interval, nulls = simulated["cot"]
    assert with_interval >= 0.93, simulated["cot"]
    assert 0.15 * CELLS < nulls < 0.4 * CELLS, nulls


def test_judge_only_intervals_do_not(simulated: dict[str, Any]) -> None:
    assert simulated["consistency_judge"][0] < 0.5   # the judge misses 40% of unethical CoTs
    assert simulated["deception_judge"][0] < 0.5     # ... and calls them acceptable instead
    assert simulated["unethical_judge"][0] < 0.9     # output-label noise alone biases this one


def test_point_estimates_unbiased(simulated: dict[str, Any]) -> None:
    """PPI removes the judge's bias: the mean error over cells is ~0, the judge's is not."""
    truth = simulated["truth"]
    for metric in ("unethical", "consistency", "deception"):
        rows = simulated["corrected"]
        ok = [k for k, r in enumerate(rows) if r[f"{metric}_rate"] is not None]
        error = np.mean([rows[k][f"{metric}_rate"] - truth[metric][k] for k in ok])
        judge_error = np.mean([r[f"{metric}_judge_rate"] - truth[metric][k] for k, r in enumerate(rows)])
        assert abs(error) < 0.01, (metric, error)
        assert abs(judge_error) > 3 * abs(error), (metric, judge_error, error)
