"""Interop with the real LiteLLM proxy (issue 15): `rpm: 6` with `enforce_model_rate_limits`
in front of the fake server. LiteLLM counts per calendar minute, counts rejected requests,
answers 429 with only `llm_provider-retry-after: 60`, and its successes carry
`x-ratelimit-limit/remaining-requests` without a reset.

Needs the optional extra (`pip install -e '.[gateway]'`) or LITELLM_BIN pointing at a
`litellm` executable installed elsewhere; skipped otherwise. Takes one to two minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import Workspace, query
from tests.fakeserver import FakeServer

KEY = "sk-test-gateway-key-0123456789"
JOBS = 12   # branches refusal + rebuttal: 6 cells x n=2, one call each


def litellm_bin() -> str | None:
    candidate = os.environ.get("LITELLM_BIN") or str(Path(sys.executable).parent / "litellm")
    return candidate if Path(candidate).exists() else shutil.which("litellm")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_proxy(binary: str, upstream: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: fake-model\n    litellm_params:\n      model: openai/fake-model\n"
        f"      api_base: {upstream}\n      api_key: dummy\n      rpm: 6\n"
        'router_settings:\n  optional_pre_call_checks: ["enforce_model_rate_limits"]\n'
        "litellm_settings:\n  telemetry: false\n")
    port = free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log = (tmp / "litellm.log").open("wb")
    proc = subprocess.Popen([binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"LiteLLM proxy did not start; see {tmp / 'litellm.log'}")


def minute(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() // 60)


@pytest.mark.slow
def test_litellm_rpm_6_every_job_once_and_at_most_one_429_per_window(workspace: Workspace, tmp_path: Path) -> None:
    binary = litellm_bin()
    if binary is None:
        pytest.skip("litellm[proxy] not installed (pip install -e '.[gateway]' or set LITELLM_BIN)")
    with FakeServer(latency=0.05) as server:
        proxy, base_url = start_proxy(binary, server.base_url, tmp_path)
        try:
            workspace.write_experiment(base_url, n=2, concurrency=8, extra='branches = ["refusal", "rebuttal"]',
                                       model_extra='api_key_env = "GATEWAY_KEY"')
            proc = workspace.sample("--log-level", "debug", "--log-json", env={"GATEWAY_KEY": KEY}, timeout=240)
        finally:
            proxy.terminate()
            proxy.wait(timeout=20)
        assert server.stats()["by_status"] == {"200": JOBS}   # what got past the gateway: each job once
    assert query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs WHERE status = 'done'") == \
        [(JOBS, JOBS)]
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    first = minute(next(e["timestamp"] for e in events if e["event"] == "run started"))
    per_minute = Counter(minute(e["timestamp"]) for e in events if e["event"] == "429 rate limited")
    later = {m - first: n for m, n in per_minute.items() if m > first}
    assert all(n <= 1 for n in later.values()), f"429s per calendar minute after the first: {later}"
    print(f"\nLiteLLM rpm 6: {proc.stdout.splitlines()[0]}; 429s per minute: "
          f"{ {m - first: n for m, n in sorted(per_minute.items())} }")
