"""Batch mode (issue 11) against the fake Batch API (tests/fakebatch.py, served by
tests/fakeserver.py): the default grid stored once through two rounds, line errors, failed /
expired / cancelled batches, --no-wait, the budget, and `kill -9` between upload and create,
inside create, and during polling: a rerun never submits a job twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.experiment.pricing import price_list
from pipeline.progress import format_usd
from pipeline.sampling.batch.requests import BatchLine, split
from tests.conftest import REPO, Workspace, query
from tests.fakeserver import FakeServer

DEFAULT_EXPERIMENT = REPO / "scenarios" / "experiments" / "default.toml"
FIXTURE_JOBS = 9 * 2       # fixture grid at n=2: 9 cells, 3 of them sampled
FIXTURE_CALLS = FIXTURE_JOBS + 3 * 2


def batch_sample(workspace: Workspace, server: FakeServer, *args: str, check: bool = True,
                 model: str = "gpt-4o") -> subprocess.CompletedProcess[str]:
    return workspace.sample("--base-url", server.base_url, "--model", model, "--batch", "--poll-s", "0.2",
                            *args, check=check)


def start_batch_sample(workspace: Workspace, server: FakeServer) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "sample", "--experiment", str(workspace.experiment),
                             "--db", str(workspace.db), "--base-url", server.base_url, "--model", "gpt-4o",
                             "--batch", "--poll-s", "0.2"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def peek(workspace: Workspace, sql: str) -> list[Any]:
    """Rows of `sql` on the database of a run in progress ([] while the writer holds it)."""
    if not workspace.db.exists():
        return []
    try:
        return query(workspace.db, sql)
    except Exception:   # the writer holds the file for a moment: ask again
        return []


def assert_every_job_once(workspace: Workspace, server: FakeServer, jobs: int, calls: int) -> None:
    stats = server.stats()
    assert len(stats["batch_lines"]) == calls, "every call submitted"
    assert max(stats["batch_lines"].values()) == 1, "no call submitted twice"
    assert query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs WHERE status = 'done'") == [(jobs, jobs)]
    assert query(workspace.db, "SELECT count(*), count(batch_id) FROM responses") == [(calls, calls)]


def test_default_grid_by_batch_stores_every_job_once_in_two_rounds(workspace: Workspace) -> None:
    with FakeServer(batch_step_s=0.1) as server:
        out = workspace.cli("sample", "--experiment", str(DEFAULT_EXPERIMENT), "--db", str(workspace.db),
                            "--base-url", server.base_url, "--model", "gpt-4o", "--batch", "--n", "2", "--poll-s", "0.2")
        jobs = query(workspace.db, "SELECT count(*) FROM jobs")[0][0]
        sampled = query(workspace.db, "SELECT count(*) FROM jobs WHERE branch = 'sampled'")[0][0]
        assert jobs > 0 and sampled > 0
        assert_every_job_once(workspace, server, jobs, jobs + sampled)
        assert "0 still pending" in out.stdout and "0 open" in out.stdout
        rounds = dict(query(workspace.db, "SELECT round, count(*) FROM batches GROUP BY round"))
        # Round 1: the sampled initials and the fixed jobs' calls (one batch per call kind); round 2:
        # the sampled finals.
        assert rounds == {"initial": 1, "final": 2}
        # The final request of a sampled job carries the initial reply the first round brought back.
        (messages, initial), = query(workspace.db, """
            SELECT p.request_messages, i.response_text FROM responses f JOIN responses i USING (job_id, run_id)
            JOIN prompt_messages p ON p.prompt_id = f.prompt_id
            WHERE f.call = 'final' AND i.call = 'initial' LIMIT 1""")
        assert json.loads(messages)[-2] == {"role": "assistant", "content": initial}
        # Priced at the batch discount.
        price = price_list().find("gpt-4o")
        assert price is not None
        for prompt, cached, completion, cost in query(
                workspace.db, "SELECT prompt_tokens, cached_tokens, completion_tokens, cost_usd FROM responses"):
            assert cost == pytest.approx(price.cost(prompt, cached, completion, batch=True))
        (final_rows,) = query(workspace.db, "SELECT count(*) FROM final_responses")[0]
        assert final_rows == jobs   # grading and the views see batch results like online ones
        status = workspace.cli("status", "--db", str(workspace.db)).stdout
        assert "batches (newest first)" in status and "batch_000003" in status

        before = server.stats()["batches_created"]
        again = workspace.cli("sample", "--experiment", str(DEFAULT_EXPERIMENT), "--db", str(workspace.db),
                              "--base-url", server.base_url, "--model", "gpt-4o", "--batch", "--n", "2")
        assert server.stats()["batches_created"] == before and "0 submitted now" in again.stdout


def test_line_errors_leave_their_jobs_pending_and_a_rerun_resubmits_them(workspace: Workspace) -> None:
    with FakeServer(batch_step_s=0.05, bad_seeds=[1]) as server:
        workspace.write_experiment(server.base_url, n=2)
        out = batch_sample(workspace, server)
        assert "9 still pending" in out.stdout and "seed 1 is not allowed" in out.stdout
        assert query(workspace.db, "SELECT count(*) FROM jobs WHERE seed = 1") == [(0,)]
        assert query(workspace.db, "SELECT count(*) FROM jobs WHERE seed = 0") == [(9,)]
        server.configure(bad_seeds=[])
        batch_sample(workspace, server)
        assert query(workspace.db, "SELECT count(*) FROM jobs WHERE status = 'done'") == [(FIXTURE_JOBS,)]
        lines = server.stats()["batch_lines"]
        assert all(count == 1 for key, count in lines.items() if not _seed_1(workspace, key))


def _seed_1(workspace: Workspace, custom_id: str) -> bool:
    rows = query(workspace.db, f"SELECT seed FROM jobs WHERE job_id = '{custom_id.split(':')[0]}'")
    return bool(rows) and rows[0][0] == 1


@pytest.mark.parametrize("outcome", ["expired", "cancelled", "failed"])
def test_failed_expired_cancelled_batches_keep_what_ran_and_leave_the_rest_pending(
        workspace: Workspace, outcome: str) -> None:
    with FakeServer(batch_step_s=0.05, batch_outcome=outcome) as server:
        workspace.write_experiment(server.base_url, n=2)
        out = batch_sample(workspace, server)
        assert out.returncode == 0
        done = query(workspace.db, "SELECT count(*) FROM jobs")[0][0]
        if outcome == "failed":
            assert done == 0
            assert query(workspace.db, "SELECT DISTINCT status, error FROM batches") == [
                ("failed", "invalid_request: fake validation failure")]
        else:   # the half that ran before the window ended is in the output file
            assert 0 < done < FIXTURE_JOBS
            assert f"batch_{outcome}" in out.stdout
        status = workspace.cli("status", "--db", str(workspace.db)).stdout
        assert outcome in status
        server.configure(batch_outcome="completed")
        batch_sample(workspace, server)
        assert query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs") == [(FIXTURE_JOBS, FIXTURE_JOBS)]


def test_no_wait_submits_and_exits_and_a_later_run_collects(workspace: Workspace) -> None:
    with FakeServer(batch_step_s=0.3) as server:
        workspace.write_experiment(server.base_url, n=2)
        out = batch_sample(workspace, server, "--no-wait")
        assert out.returncode == 0 and "run `pipeline sample --batch` again later" in out.stdout
        assert query(workspace.db, "SELECT count(*) FROM jobs") == [(0,)]
        # The first round (sampled initials, fixed jobs); the sampled finals wait for its replies.
        assert server.stats()["batches_created"] == 2
        time.sleep(1.5)
        batch_sample(workspace, server)
        assert_every_job_once(workspace, server, FIXTURE_JOBS, FIXTURE_CALLS)


def test_budget_caps_what_batches_may_cost(workspace: Workspace) -> None:
    with FakeServer(batch_step_s=0.05) as server:
        workspace.write_experiment(server.base_url, n=4, model_extra='price = { input = 30.0, output = 60.0 }')
        out = workspace.sample("--batch", "--poll-s", "0.2", "--max-cost", "0.02", check=False)
        assert out.returncode == 3, out.stdout + out.stderr
        spent = query(workspace.db, "SELECT sum(cost_usd) FROM responses")[0][0]
        assert 0 < spent <= 0.02
        assert "budget reached" in out.stdout and f"budget: {format_usd(spent)} of $0.0200" in out.stdout
        workspace.sample("--batch", "--poll-s", "0.2", "--max-cost", "5")
        assert query(workspace.db, "SELECT count(DISTINCT job_id) FROM jobs") == [(36,)]


@pytest.mark.parametrize("hang", ["before", "after"])
def test_kill_around_batch_creation_then_rerun_submits_nothing_twice(workspace: Workspace, hang: str) -> None:
    # before: killed after the upload was stored, before the batch existed (the file is found
    # again by name, never uploaded twice); after: the batch exists on the server but its id
    # never reached the database (it is found by its input file, never created twice).
    with FakeServer(batch_step_s=0.05, batch_create_hang=hang) as server:
        workspace.write_experiment(server.base_url, n=2)
        proc = start_batch_sample(workspace, server)
        try:
            wait_for(lambda: server.stats()["files_uploaded"] == 1 and
                     peek(workspace, "SELECT count(*) FROM batches WHERE status = 'uploaded'") == [(1,)])
            time.sleep(0.3)   # the create request is in the server's hands
        finally:
            proc.kill()
            proc.communicate()
        assert server.stats()["batches_created"] == (1 if hang == "after" else 0)
        server.configure(batch_create_hang="")
        batch_sample(workspace, server)
        stats = server.stats()
        # One upload and one batch per stored batch: nothing was uploaded or created twice. (2 or 3
        # batches: the fixed jobs' calls join the sampled finals when the first batch has already
        # ended by the time the rerun finds it.)
        (batches, files), = query(workspace.db, "SELECT count(*), count(DISTINCT input_file_id) FROM batches")
        assert stats["files_uploaded"] == stats["batches_created"] == batches == files
        assert_every_job_once(workspace, server, FIXTURE_JOBS, FIXTURE_CALLS)


def test_kill_during_polling_then_rerun_submits_nothing_new(workspace: Workspace) -> None:
    with FakeServer(batch_step_s=1.0) as server:
        workspace.write_experiment(server.base_url, n=2)
        proc = start_batch_sample(workspace, server)
        try:
            wait_for(lambda: peek(workspace, "SELECT count(batch_id) FROM batches") == [(2,)])
            time.sleep(0.5)   # polling a validating batch
        finally:
            proc.kill()
            proc.communicate()
        assert server.stats()["batches_created"] == 2   # the first round
        out = batch_sample(workspace, server)
        assert "killed" in query(workspace.db, "SELECT list(status) FROM runs")[0][0]
        assert "1 submitted now" in out.stdout   # only the second round (sampled finals)
        assert server.stats()["batches_created"] == 3
        assert_every_job_once(workspace, server, FIXTURE_JOBS, FIXTURE_CALLS)


def test_ctrl_c_during_polling_exits_130_and_a_rerun_collects(workspace: Workspace) -> None:
    with FakeServer(batch_step_s=1.0) as server:
        workspace.write_experiment(server.base_url, n=2)
        proc = start_batch_sample(workspace, server)
        wait_for(lambda: peek(workspace, "SELECT count(batch_id) FROM batches") == [(2,)])
        time.sleep(0.5)   # polling a validating batch
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert query(workspace.db, "SELECT list(status) FROM runs") == [(["interrupted"],)]
        out = batch_sample(workspace, server)
        assert "1 submitted now" in out.stdout   # the first round's batches are collected, not resent
        assert_every_job_once(workspace, server, FIXTURE_JOBS, FIXTURE_CALLS)


def test_a_refused_batch_stops_the_run_and_gives_its_jobs_back(workspace: Workspace) -> None:
    with FakeServer(batch_step_s=0.05, batch_create_hang="refuse") as server:
        workspace.write_experiment(server.base_url, n=2)
        out = batch_sample(workspace, server, check=False)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert "The batch input file is invalid" in out.stdout
        assert query(workspace.db, "SELECT status, collected_at IS NOT NULL FROM batches") == [("failed", True)]
        server.configure(batch_create_hang="")
        batch_sample(workspace, server)
        assert query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs") == [(FIXTURE_JOBS, FIXTURE_JOBS)]


def test_split_keeps_to_the_request_and_byte_limits() -> None:
    lines = [BatchLine(job=None, call="final", run_id="r", line=b"x" * size)  # type: ignore[arg-type]
             for size in (10, 10, 10, 30, 5)]
    parts = split(lines, max_requests=2, max_bytes=1000)
    assert [len(p) for p in parts] == [2, 2, 1]
    parts = split(lines, max_requests=100, max_bytes=33)   # 11 bytes per 10-byte line with its newline
    assert [[len(line.line) for line in p] for p in parts] == [[10, 10, 10], [30], [5]]
    assert sum(len(p) for p in split(lines)) == len(lines)


def test_batch_true_on_one_model_sends_only_that_model_by_batch(workspace: Workspace) -> None:
    with FakeServer(batch_step_s=0.05) as server:
        workspace.write_experiment(server.base_url, n=2, model_extra=(
            f'\n[[models]]\nname = "gpt-4o"\nbase_url = "{server.base_url}"\nbatch = true\n'))
        out = workspace.sample("--poll-s", "0.2")
        assert "0 still pending" in out.stdout
        by_model = dict(query(workspace.db, "SELECT model, count(batch_id) = count(*) FROM responses GROUP BY model"))
        assert by_model == {"fake-model": False, "gpt-4o": True}
        assert query(workspace.db, "SELECT count(*) FROM responses WHERE model = 'fake-model' AND batch_id IS NOT NULL") == [(0,)]
        assert query(workspace.db, "SELECT count(DISTINCT job_id) FROM jobs") == [(2 * FIXTURE_JOBS,)]
        assert len(server.stats()["batch_lines"]) == FIXTURE_CALLS


def test_batch_flags_that_cannot_work_are_one_line_and_send_nothing(workspace: Workspace) -> None:
    embedded = workspace.cli("sample", "--experiment", str(DEFAULT_EXPERIMENT), "--db", str(workspace.db), "--batch",
                             check=False)
    assert embedded.returncode == 2 and "the embedded model has no Batch API" in embedded.stderr
    workspace.write_experiment("http://127.0.0.1:9/v1")
    for args, message in ((["--no-wait"], "--no-wait is for batch runs"),
                          (["--batch", "--poll-s", "0"], "--poll-s must be a number of seconds > 0")):
        out = workspace.sample(*args, check=False)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert not workspace.db.exists()
