"""Rate limits as gateways enforce them (issue 15): a fixed window aligned to the clock that
counts rejected requests too, 429s without standard timing (LiteLLM), and no advertised limit.

The fake server's `fixed_window` knob shortens LiteLLM's calendar minute to 10 s so the
test takes seconds; the experiment tells the client the same (`limit_window_s = 10`).
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import Workspace, query
from tests.fakeserver import FakeServer

WINDOW_S = 10
JOBS = 12   # branches refusal + rebuttal: 6 cells x n=2, one call each


def run_against_window(workspace: Workspace, **knobs: object) -> tuple[dict[str, object], float, str]:
    with FakeServer(rpm=6, fixed_window=WINDOW_S, latency=0.05, **knobs) as server:
        workspace.write_experiment(server.base_url, n=2, concurrency=8,
                                   extra='branches = ["refusal", "rebuttal"]',
                                   model_extra=f"limit_window_s = {WINDOW_S}")
        started = time.monotonic()
        proc = workspace.sample("--log-level", "debug")
        wall = time.monotonic() - started
        return server.stats(), wall, proc.stdout + proc.stderr


def assert_every_job_once_and_at_most_one_429_per_window(workspace: Workspace, stats: dict) -> None:
    assert query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs WHERE status = 'done'") == \
        [(JOBS, JOBS)]
    ok_per_call = [counts.get("200", 0) for counts in stats["calls"].values()]
    assert len(ok_per_call) == JOBS and set(ok_per_call) == {1}
    later = {int(index): n for index, n in stats["rejected_by_window"].items()
             if int(index) > stats["first_window"]}
    assert all(n <= 1 for n in later.values()), f"429s per window after the first: {later}"


@pytest.mark.parametrize("knobs", [
    pytest.param({"litellm_429": True}, id="litellm-headers"),
    pytest.param({"litellm_429": True, "limit_headers": False}, id="only-llm_provider-retry-after"),
    pytest.param({"limit_headers": False}, id="no-headers-at-all"),
])
def test_fixed_window_gateway_every_job_once_and_at_most_one_429_per_window(
        workspace: Workspace, knobs: dict[str, object]) -> None:
    stats, wall, output = run_against_window(workspace, **knobs)
    assert_every_job_once_and_at_most_one_429_per_window(workspace, stats)
    # 12 calls at 6 per window: the run ends in the third window at the latest (+ slack).
    assert wall < 3 * WINDOW_S + 10, f"took {wall:.1f} s"
    rejected = sum(stats["rejected_by_window"].values())
    assert f"rate limits: {rejected} 429s" in output
    assert "limits: http" in output
    if rejected:
        assert "429 rate limited" in output   # each one logged at debug, with its headers
