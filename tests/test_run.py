"""The engine against a real HTTP server on 127.0.0.1 (tests/fakeserver.py)."""

from __future__ import annotations

import json

from tests.conftest import Workspace, query
from tests.fakeserver import FakeServer

JOBS = 9 * 4            # fixture grid: 9 cells x n=4
CALLS = JOBS + 3 * 4    # sampled jobs (3 cells) make two calls


def chat_requests(server: FakeServer) -> int:
    stats = server.stats()
    return sum(sum(v.values()) for v in stats["calls"].values())


def test_full_run_stores_every_job_once_and_rerun_sends_nothing(workspace: Workspace) -> None:
    with FakeServer(latency=0.01) as server:
        workspace.write_experiment(server.base_url, n=4)
        out = workspace.sample()
        assert "36 done now, 0 failed, 0 still pending" in out.stdout
        assert chat_requests(server) == CALLS
        rows = query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs WHERE status = 'done'")
        assert rows == [(JOBS, JOBS)]
        per_call = dict(query(workspace.db, "SELECT call, count(*) FROM responses GROUP BY call"))
        assert per_call == {"initial": 12, "final": 36}
        empty = query(workspace.db, "SELECT count(*) FROM responses WHERE response_text IS NULL OR response_text = '' "
                                    "OR prompt_tokens IS NULL OR completion_tokens IS NULL")
        assert empty == [(0,)]
        # The final request of a sampled job carries the initial response, then the trigger.
        (messages,) = query(workspace.db, "SELECT p.request_messages FROM responses r JOIN jobs j USING (job_id) "
                                          "JOIN prompt_messages p USING (prompt_id) "
                                          "WHERE j.branch = 'sampled' AND r.call = 'final' LIMIT 1")[0]
        turns = json.loads(messages)
        initials = {text for (text,) in query(workspace.db, "SELECT response_text FROM responses WHERE call = 'initial'")}
        assert turns[-2]["role"] == "assistant" and turns[-2]["content"] in initials
        assert turns[-1]["role"] == "user" and turns[-1]["content"].startswith(("Customer:", "Portfolio manager:"))
        # each distinct conversation is stored once; every call's request resolves
        assert query(workspace.db, "SELECT count(*) - count(DISTINCT prompt_id) FROM prompts") == [(0,)]
        # one opening per conversation (demo x 2 variants, plain), shared by all of its jobs and branches
        assert query(workspace.db, "SELECT count(*) FROM prompts WHERE parent_id IS NULL") == [(3,)]
        assert query(workspace.db, "SELECT count(DISTINCT prompt_id) FROM responses WHERE call = 'initial'") == [(3,)]
        assert query(workspace.db, "SELECT count(*) FROM responses LEFT JOIN prompt_messages p USING (prompt_id) "
                                   "WHERE p.request_messages IS NULL") == [(0,)]

        server.reset()
        again = workspace.sample()
        assert chat_requests(server) == 0
        assert "0 done now" in again.stdout and "36 already done" in again.stdout
        assert query(workspace.db, "SELECT count(*) FROM jobs") == [(JOBS,)]


def test_more_samples_later_only_samples_the_new_seeds(workspace: Workspace) -> None:
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=2)
        workspace.sample()
        server.reset()
        workspace.sample("--n", "3")
        assert chat_requests(server) == 9 + 3  # one new seed per cell; sampled cells make 2 calls
        assert query(workspace.db, "SELECT count(*), max(seed) FROM jobs") == [(27, 2)]


def test_rate_limits_are_waited_out(workspace: Workspace) -> None:
    # The server allows 300 requests/min with a 5-request burst and does not advertise it, so
    # the client's slow start widens into it (each 429 says precisely when to come back).
    with FakeServer(rpm=300, limit_headers=False) as server:
        workspace.write_experiment(server.base_url, n=4, concurrency=8)
        workspace.sample()
        stats = server.stats()
        assert stats["by_status"].get("429", 0) > 0, "the test must actually provoke 429s"
        assert query(workspace.db, "SELECT count(*) FROM jobs WHERE status = 'done'") == [(JOBS,)]
        assert query(workspace.db, "SELECT max(attempts) FROM responses")[0][0] > 1


def test_configured_rpm_paces_requests_without_429s(workspace: Workspace) -> None:
    with FakeServer(rpm=600) as server:
        workspace.write_experiment(server.base_url, n=2, concurrency=8, model_extra="rpm = 600")
        workspace.sample()
        stats = server.stats()
        assert stats["by_status"].get("429", 0) == 0
        assert stats["by_status"]["200"] == 24


def test_server_errors_and_malformed_bodies_are_retried(workspace: Workspace) -> None:
    with FakeServer(error_rate=0.3, malformed_rate=0.1, seed=7) as server:
        workspace.write_experiment(server.base_url, n=4, model_extra="max_attempts = 12")
        workspace.sample()
        stats = server.stats()["by_status"]
        assert stats.get("500", 0) + stats.get("503", 0) > 0
        assert query(workspace.db, "SELECT count(*) FROM jobs WHERE status = 'done'") == [(JOBS,)]


def test_timeouts_are_retried(workspace: Workspace) -> None:
    with FakeServer(hang_rate=0.1, seed=3) as server:
        workspace.write_experiment(server.base_url, n=2, model_extra="timeout_s = 1\nmax_attempts = 8")
        workspace.sample()
        assert query(workspace.db, "SELECT count(*) FROM jobs WHERE status = 'done'") == [(18,)]
        assert query(workspace.db, "SELECT max(attempts) FROM responses")[0][0] > 1


def test_bad_request_fails_only_that_job_with_the_server_message(workspace: Workspace) -> None:
    with FakeServer(bad_seeds=[1]) as server:
        workspace.write_experiment(server.base_url, n=3)
        proc = workspace.sample(check=False)
        assert proc.returncode == 0, proc.stderr
        assert "18 done now, 9 failed" in proc.stdout
        failed = query(workspace.db, "SELECT seed, error FROM jobs WHERE status = 'failed'")
        assert {seed for seed, _ in failed} == {1}
        assert all("HTTP 400" in error and "seed 1 is not allowed" in error for _, error in failed)
        assert query(workspace.db, "SELECT count(*) FROM responses WHERE http_status = 400 AND attempts = 1") == [(9,)]
        # A failed job is retried by the next run (here it fails again, the same way).
        server.reset()
        workspace.sample(check=False)
        assert chat_requests(server) == 9
        # The retried jobs replace their rows: still one row per job.
        assert query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs") == [(27, 27)]
        assert query(workspace.db, "SELECT count(DISTINCT run_id) FROM jobs WHERE seed = 1") == [(1,)]


def test_endpoint_errors_stop_the_run_with_the_message_and_keep_jobs_pending(workspace: Workspace) -> None:
    secret = "sk-test-SECRET-123"
    with FakeServer(require_key="right-key") as server:
        workspace.write_experiment(server.base_url, n=2, model_extra="api_key_env = 'TEST_API_KEY'")
        proc = workspace.sample(env={"TEST_API_KEY": secret}, check=False)
        assert proc.returncode == 1
        assert "HTTP 401" in proc.stdout + proc.stderr
        assert query(workspace.db, "SELECT count(*) FROM jobs") == [(0,)]
        assert query(workspace.db, "SELECT status FROM runs") == [("failed",)]
        assert secret not in proc.stdout + proc.stderr
        assert secret.encode() not in workspace.db.read_bytes()


def test_api_key_is_sent_but_never_stored_or_logged(workspace: Workspace) -> None:
    secret = "right-key-SECRET-456"
    with FakeServer(require_key=secret) as server:
        workspace.write_experiment(server.base_url, n=1)
        proc = workspace.cli("sample", "--experiment", str(workspace.experiment), "--db", str(workspace.db),
                             "--base-url", server.base_url, "--model", "m", "--api-key-env", "MY_KEY",
                             "--log-json", env={"MY_KEY": secret})
        assert query(workspace.db, "SELECT count(*) FROM jobs WHERE status = 'done'") == [(9,)]
        assert query(workspace.db, "SELECT DISTINCT model FROM jobs") == [("m",)]
        assert secret not in proc.stdout + proc.stderr
        assert secret.encode() not in workspace.db.read_bytes()
        missing = workspace.cli("sample", "--experiment", str(workspace.experiment), "--db", str(workspace.db),
                                "--base-url", server.base_url, "--model", "m", "--api-key-env", "UNSET_KEY_VAR",
                                check=False)
        assert missing.returncode == 2 and "UNSET_KEY_VAR is not set" in missing.stderr


def test_quota_exhaustion_is_fatal_for_the_endpoint(workspace: Workspace) -> None:
    with FakeServer(quota_exceeded=True) as server:
        workspace.write_experiment(server.base_url, n=2)
        proc = workspace.sample(check=False)
        assert proc.returncode == 1 and "quota" in proc.stdout
        assert server.stats()["requests"] <= 4 + 1  # one per worker at most, no retry storm


def test_bad_scenario_file_is_a_one_line_error_and_keeps_the_database(workspace: Workspace) -> None:
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=1)
        workspace.sample()
        before = workspace.db.read_bytes()
        demo = workspace.scenarios / "demo.toml"
        demo.write_text(demo.read_text().replace('category = "dishonesty"', 'category = 5'))
        proc = workspace.sample(check=False)
        assert proc.returncode == 2
        (line,) = proc.stderr.strip().splitlines()
        assert str(demo) in line and "field 'category'" in line
        assert workspace.db.read_bytes() == before


def test_dry_run_prints_the_plan_and_sends_nothing(workspace: Workspace) -> None:
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=4, model_extra="rpm = 60")
        workspace.sample("--n", "2", "--rpm", "0")
        server.reset()
        out = workspace.sample("--dry-run").stdout
        assert server.stats()["requests"] == 0
        assert ["demo", "car", "sampled", "fake-model", "4", "2"] in [line.split() for line in out.splitlines()]
        # 18 pending jobs, 6 of them sampled (2 calls): 24 requests at 60 rpm = 0.4 min.
        assert "fake-model: 18 pending jobs, 24 requests" in out and "at least 0.4 min" in out
        # without limits, the time comes from the speed the last run reached
        (speed,) = query(workspace.db, "SELECT count(*) / (epoch(max(created_at)) - epoch(min(u.started_at))) "
                                       "FROM responses JOIN runs u USING (run_id)")[0]
        unlimited = workspace.sample("--dry-run", "--rpm", "0").stdout
        assert f"about {24 / speed / 60:.1f} min at the {speed:.2f} requests/s its last run reached" in unlimited
        fresh = workspace.sample("--dry-run", "--rpm", "0", "--db", str(workspace.root / "new.duckdb")).stdout
        assert "no earlier run to time it by" in fresh


def test_limits_advertised_in_headers_are_adopted(workspace: Workspace) -> None:
    """No rpm configured: after the first answers the client paces by x-ratelimit-limit-requests."""
    with FakeServer(rpm=600) as server:
        workspace.write_experiment(server.base_url, n=8, concurrency=4)
        proc = workspace.sample()
        assert "pacing by the server's advertised request limit" in proc.stderr
        stats = server.stats()
        assert stats["by_status"]["200"] == 9 * 8 + 3 * 8
        # Only the first burst, before any header was seen, can run into the limit.
        assert stats["by_status"].get("429", 0) <= 4
