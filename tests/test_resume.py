"""Resumability: hard kills, Ctrl-C, and reading the database while a run writes to it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from tests.conftest import REPO, Workspace, query
from tests.fakeserver import FakeServer

N = 40
PLANNED = 9 * N


def start_sample(workspace: Workspace) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "sample", "--experiment", str(workspace.experiment),
                             "--db", str(workspace.db)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_requests(server: FakeServer, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while server.stats()["requests"] < count:
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.05)


def requested_jobs(server: FakeServer) -> set[str]:
    return {key.split("/")[0] for key in server.stats()["calls"]}


def assert_every_job_once(workspace: Workspace) -> None:
    assert query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs WHERE status = 'done'") == [(PLANNED, PLANNED)]
    # Every done job has exactly its calls stored in the run that finished it: one final,
    # plus one initial for sampled jobs. No half job, no duplicate.
    bad = query(workspace.db, """
        SELECT j.job_id FROM jobs j LEFT JOIN responses r ON r.job_id = j.job_id AND r.run_id = j.run_id
        GROUP BY j.job_id, j.branch
        HAVING count(*) FILTER (WHERE r.call = 'final') != 1
            OR count(*) FILTER (WHERE r.call = 'initial') != (CASE WHEN j.branch = 'sampled' THEN 1 ELSE 0 END)""")
    assert bad == []


def test_hard_kill_then_rerun_gives_every_job_exactly_once(workspace: Workspace) -> None:
    with FakeServer(latency=0.05) as server:
        workspace.write_experiment(server.base_url, n=N, concurrency=8)
        proc = start_sample(workspace)
        wait_for_requests(server, 150)
        proc.kill()  # SIGKILL: no cleanup at all
        proc.wait()
        answered_before = requested_jobs(server)
        first_run_answers = server.stats()["by_status"]["200"]
        server.reset()

        # What the kill left in the journal: finished jobs not committed yet. While jobs finish
        # every few ms there is always an open batch, so the kill leaves at least one segment.
        leftovers = sorted(workspace.root.glob("*.journal/*.ndjson"))
        journaled = sum(1 for path in leftovers for line in path.read_bytes().splitlines()
                        if line.endswith(b"}"))  # a torn last line is skipped on import
        assert leftovers and journaled > 0, "the kill left no journal to recover"

        rerun = workspace.sample()
        recovered = [int(n) for n in re.findall(r"recovered finished work from a killed run's journal.*?items=(\d+)",
                                                 rerun.stderr)]
        assert len(recovered) == len(leftovers) and sum(recovered) == journaled, (recovered, journaled, rerun.stderr)
        done_before_rerun = {job_id for (job_id,) in query(
            workspace.db, "SELECT job_id FROM jobs WHERE run_id = (SELECT run_id FROM runs WHERE status = 'killed')")}
        assert 0 < len(done_before_rerun) < PLANNED
        assert not requested_jobs(server) & done_before_rerun, "a finished job was requested again"
        assert_every_job_once(workspace)
        # Answered calls are journaled the moment they finish: only calls in flight at the
        # kill (<= 8 workers, + the initial calls of unfinished sampled jobs) are paid twice.
        wasted = first_run_answers + server.stats()["by_status"]["200"] - (PLANNED + 3 * N)
        assert 0 <= wasted <= 16, (wasted, len(answered_before))
        assert not list(workspace.root.glob("*.journal/*.ndjson"))
        statuses = dict(query(workspace.db, "SELECT status, count(*) FROM runs GROUP BY status"))
        assert statuses == {"killed": 1, "completed": 1}


def test_ctrl_c_stores_finished_jobs_and_exits_130(workspace: Workspace) -> None:
    with FakeServer(latency=0.05) as server:
        workspace.write_experiment(server.base_url, n=N, concurrency=8)
        proc = start_sample(workspace)
        wait_for_requests(server, 100)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in out and "still pending" in out
        (stored,) = query(workspace.db, "SELECT count(*) FROM jobs")[0]
        assert query(workspace.db, "SELECT status, done FROM runs") == [("interrupted", stored)]
        answered = server.stats()["by_status"]["200"]
        server.reset()
        workspace.sample()
        assert_every_job_once(workspace)
        wasted = answered + server.stats()["by_status"]["200"] - (PLANNED + 3 * N)
        assert 0 <= wasted <= 8 * 2  # at most what was in flight when interrupted


def test_status_and_sql_work_while_a_run_is_writing(workspace: Workspace) -> None:
    with FakeServer(latency=0.08) as server:  # ~10 s run: several reads overlap it even on a busy CPU
        workspace.write_experiment(server.base_url, n=N, concurrency=4)
        proc = start_sample(workspace)
        wait_for_requests(server, 20)
        reads, worst = 0, 0.0
        counts = []
        while proc.poll() is None and reads < 12:
            started = time.monotonic()
            status = workspace.cli("status", "--db", str(workspace.db))
            sql = workspace.cli("sql", "SELECT count(*) AS n FROM responses", "--db", str(workspace.db))
            worst = max(worst, time.monotonic() - started)
            assert "sampled" in status.stdout
            counts.append(int(sql.stdout.split("│")[-2].strip()))
            reads += 1
        proc.wait(timeout=120)
        assert proc.returncode == 0
        assert reads >= 3, "the run ended before the readers could overlap it"
        assert counts == sorted(counts) and counts[-1] > 0
        assert_every_job_once(workspace)


def test_second_sample_on_the_same_database_is_refused(workspace: Workspace) -> None:
    with FakeServer(latency=0.05) as server:
        workspace.write_experiment(server.base_url, n=N, concurrency=2)
        proc = start_sample(workspace)
        try:
            wait_for_requests(server, 5)
            second = workspace.sample(check=False)
            assert second.returncode == 2
            assert "another `pipeline sample` is already running" in second.stderr
            assert f"pid {proc.pid}" in second.stderr
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
