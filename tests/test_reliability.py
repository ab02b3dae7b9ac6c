"""Issue 9's hardening, end to end against the fake server: keys never leak on any path, a
Retry-After beyond the horizon stops the endpoint, the run lock follows the file, journal
segments that cannot be imported never block a run, unwritable disks and Ctrl-C while the
database is held end cleanly, no temporary batch directories are left behind."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from pipeline.errors import PipelineError
from pipeline.store.connection import run_lock
from tests.conftest import REPO, Workspace, query
from tests.fakeserver import FakeServer

SECRET = "sk-live-ECHOED-0123456789abcdef"


def start_sample(workspace: Workspace) -> subprocess.Popen[str]:
    """`pipeline sample` on the workspace's experiment, as a background process to signal or race."""
    return subprocess.Popen([sys.executable, "-m", "pipeline", "sample", "--experiment", str(workspace.experiment),
                             "--db", str(workspace.db)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- 4: the key never leaks
@pytest.mark.parametrize("mode", ["429", "500", "400", "401", "200", "http"])
def test_a_key_echoed_back_never_reaches_the_database_or_logs(workspace: Workspace, mode: str) -> None:
    with FakeServer(echo_key=mode) as server:
        workspace.write_experiment(server.base_url, n=1, concurrency=2,
                                   model_extra="api_key_env = 'ECHO_KEY'\nmax_attempts = 1")
        proc = workspace.sample("--log-json", env={"ECHO_KEY": SECRET}, check=False, timeout=60)
        assert server.stats()["requests"] > 0
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    stored = query(workspace.db, "SELECT coalesce(string_agg(error, '|'), '') FROM jobs")[0][0] + \
        query(workspace.db, "SELECT coalesce(string_agg(error, '|'), '') FROM responses")[0][0]
    if mode in ("500", "400", "200", "http"):  # the job fails with the server's words, redacted
        assert stored, output
        assert "[REDACTED]" in stored or mode == "http", stored
    else:                                     # the endpoint stops with the message
        assert "[REDACTED]" in output, output
    for text in (output, stored):
        assert SECRET[:12] not in text, text
    assert SECRET[:12].encode() not in workspace.db.read_bytes()


# ---------------------------------------------------------------- 6: Retry-After beyond the horizon
def test_retry_after_beyond_the_horizon_stops_the_endpoint_and_keeps_jobs_pending(workspace: Workspace) -> None:
    with FakeServer() as server:
        server.configure(all_429_for_s=3600)
        workspace.write_experiment(server.base_url, n=3, concurrency=4)
        started = time.monotonic()
        proc = workspace.sample(check=False, timeout=60)
        elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert elapsed < 30
    assert re.search(r"wait 3[56]\d\d s", proc.stdout) and "horizon" in proc.stdout, proc.stdout
    assert query(workspace.db, "SELECT count(*) FROM jobs") == [(0,)]   # none failed: all pending
    assert query(workspace.db, "SELECT status FROM runs") == [("failed",)]


# ---------------------------------------------------------------- 5 and 12: the run lock
def test_the_run_lock_follows_the_file_not_its_spelling(workspace: Workspace) -> None:
    with FakeServer(latency=0.05) as server:
        workspace.write_experiment(server.base_url, n=40, concurrency=2)
        proc = start_sample(workspace)
        try:
            deadline = time.monotonic() + 60
            while server.stats()["requests"] < 5:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            (workspace.root / "link.duckdb").symlink_to(workspace.db)
            os.link(workspace.db, workspace.root / "hard.duckdb")
            (workspace.root / "sub").mkdir()
            for other in (workspace.root / "link.duckdb", workspace.root / "hard.duckdb",
                          workspace.root / "sub" / ".." / workspace.db.name):
                second = workspace.cli("sample", "--experiment", str(workspace.experiment), "--db", str(other),
                                       check=False)
                assert second.returncode == 2, (other, second.stderr)
                assert "already running" in second.stderr and f"pid {proc.pid}" in second.stderr, second.stderr
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


def test_lock_message_names_the_pid_of_a_holder_that_has_just_started(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with open(tmp_path / "r.duckdb.lock", "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)   # locked, pid not written yet

        def write_pid() -> None:
            time.sleep(0.3)
            holder.write("4242")
            holder.flush()
        threading.Thread(target=write_pid).start()
        with pytest.raises(PipelineError, match=r"pid 4242"), run_lock(db):
            pass


def test_no_batch_directories_are_left_in_tmp(workspace: Workspace) -> None:
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    before = set(tmp.glob("pipeline-batch-*"))
    with FakeServer(latency=0.02) as server:
        workspace.write_experiment(server.base_url, n=40, concurrency=4)
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "sample", "--experiment", str(workspace.experiment),
                                 "--db", str(workspace.db)], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "TMPDIR": str(tmp)})
        while server.stats()["requests"] < 100:
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        assert set(tmp.glob("pipeline-batch-*")) == before
        workspace.sample()
    assert not list(workspace.root.glob(".*.batch-*")), list(workspace.root.iterdir())


# ---------------------------------------------------------------- 3: journal segments never block a run
def test_unimportable_journal_lines_are_quarantined_and_the_run_goes_on(workspace: Workspace) -> None:
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=1)
        workspace.sample()
        (job,) = query(workspace.db, "SELECT to_json(j) FROM jobs j LIMIT 1")[0]
        good = orjson.loads(job)
        good["job_id"] = "recovered-job"
        journal = workspace.root / "results.duckdb.journal"
        journal.mkdir(exist_ok=True)
        lines = [orjson.dumps({"rows": {"jobs": [good]}, "failed": False}),
                 orjson.dumps({"rows": {"jobs": [{**good, "job_id": "bad-seed", "seed": "not a number"}]},
                               "failed": False}),                            # DuckDB refuses it
                 orjson.dumps({"something": "else"}),                        # valid JSON, wrong shape
                 orjson.dumps({"rows": {"jobs": [{**good, "job_id": "huge", "error": "x" * 17_000_000}]},
                               "failed": False}),                            # over DuckDB's 16 MB default
                 b'{"rows": {"jobs": [{"job_']                               # torn by a kill
        (journal / "999-00000000.ndjson").write_bytes(b"\n".join(lines))
        server.reset()
        proc = workspace.sample("--n", "2", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    ids = {job_id for (job_id,) in query(workspace.db, "SELECT job_id FROM jobs")}
    assert {"recovered-job", "huge"} <= ids and "bad-seed" not in ids
    quarantine = workspace.root / "results.duckdb.quarantine.ndjson"
    kept = quarantine.read_bytes().splitlines()
    assert len(kept) == 3 and b"bad-seed" in kept[-1]
    assert str(quarantine) in proc.stderr and "damaged" in proc.stderr and "lines=[3, 5]" in proc.stderr
    assert not list(journal.glob("*.ndjson"))
    assert query(workspace.db, "SELECT count(*) FROM jobs WHERE run_id = "
                               "(SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1)") == [(9,)]


def test_a_reply_over_the_cap_is_stored_cut_and_flagged(workspace: Workspace) -> None:
    with FakeServer() as server:
        server.configure(reply="A" * 2_500_000)   # one word: max_tokens does not cut it
        workspace.write_experiment(server.base_url, n=1, extra='branches = ["refusal"]')
        workspace.sample()
    rows = query(workspace.db, "SELECT length(response_text), truncated FROM responses")
    assert rows and all(row == (1_000_000, True) for row in rows), rows


# ---------------------------------------------------------------- 10: disk trouble mid-run
def chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True)


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/chattr").exists(), reason="needs chattr (root)")
def test_database_and_journal_unwritable_mid_run_are_waited_out(workspace: Workspace) -> None:
    # 0.2 s per call: the run lasts ~20 s, so it is still mid-run when the flags go on even on a
    # loaded machine (at 0.05 s it could finish first and never need a new journal segment)
    with FakeServer(latency=0.2) as server:
        workspace.write_experiment(server.base_url, n=30, concurrency=4)
        proc = start_sample(workspace)
        journal = workspace.root / "results.duckdb.journal"
        lines: list[str] = []
        assert proc.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        reader.start()
        try:
            while server.stats()["requests"] < 40:
                time.sleep(0.05)
            chattr("+i", journal)        # no new segment can be made
            chattr("+i", workspace.root)  # no WAL: the database cannot be written
            # held until the run has met both (a loaded machine may need more than a few seconds
            # before the journal wants its next segment), at most 60 s
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(
                    any(marker in line for line in list(lines))
                    for marker in ("database not writable; retrying", "journal not writable")):
                time.sleep(0.1)
        finally:
            chattr("-i", workspace.root)
            chattr("-i", journal)
        out, _ = proc.communicate(timeout=120)
        reader.join(timeout=10)
        err = "".join(lines)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "database not writable; retrying" in err and "journal not writable" in err
    assert query(workspace.db, "SELECT status FROM runs") == [("completed",)]
    assert query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs") == [(270, 270)]


# ---------------------------------------------------------------- 11: Ctrl-C while the database is held
HOLD = "import duckdb, sys, time\nwhile True:\n    try:\n        c = duckdb.connect(sys.argv[1]); break\n" \
       "    except duckdb.IOException:\n        time.sleep(0.01)\nprint('held', flush=True)\ntime.sleep(120)\n"


@contextmanager
def run_meeting_a_held_database(workspace: Workspace, hold_s: float) -> Iterator[subprocess.Popen[str]]:
    """A sampling run that has sent 30 requests, then finds its database held by another
    process for `hold_s` seconds (its next batches wait); the holder is ended on exit."""
    with FakeServer(latency=0.02) as server:
        workspace.write_experiment(server.base_url, n=40, concurrency=4)
        proc = start_sample(workspace)
        while server.stats()["requests"] < 30:
            time.sleep(0.05)
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(workspace.db)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout and holder.stdout.readline().strip() == "held"
            time.sleep(hold_s)
            yield proc
        finally:
            holder.kill()
            holder.wait()


def test_ctrl_c_while_another_process_holds_the_database_exits_in_seconds(workspace: Workspace) -> None:
    with run_meeting_a_held_database(workspace, hold_s=1.5) as proc:
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 8, err
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Unclosed client session" not in err
    journaled = sum(len(path.read_bytes().splitlines()) for path in workspace.root.glob("*.journal/*.ndjson"))
    assert journaled > 0, "finished results should wait in the journal"
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=40, concurrency=4)
        rerun = workspace.sample()
    assert "recovered finished work" in rerun.stderr
    assert query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs") == [(360, 360)]


def test_second_ctrl_c_exits_at_once(workspace: Workspace) -> None:
    with run_meeting_a_held_database(workspace, hold_s=1.0) as proc:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 1.5, err
    assert proc.returncode == 130 and "Traceback" not in err


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.5, 0.8])
def test_early_ctrl_c_exits_130_without_traceback(workspace: Workspace, delay: float) -> None:
    with FakeServer(latency=0.05) as server:
        workspace.write_experiment(server.base_url, n=40, concurrency=4)
        proc = start_sample(workspace)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    # -SIGINT: the signal came while the interpreter itself was starting or shutting down
    # (no Python code of ours runs then); still no traceback.
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err and "Unclosed client session" not in err, err
    if workspace.db.exists() and query(workspace.db, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'runs'") == [(1,)]:
        assert ("running",) not in query(workspace.db, "SELECT status FROM runs")
