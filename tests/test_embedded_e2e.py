"""End to end with the real embedded model: `pipeline sample` starts llama.cpp, samples, stops it."""

from __future__ import annotations

import socket
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO, Workspace, query

pytestmark = pytest.mark.slow


def server_processes(parent_pid: int) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"pipeline.local_model.server serve .*--parent-pid {parent_pid}"],
                           capture_output=True, text=True)
    return found.stdout.split()


def test_sample_with_the_embedded_model(workspace: Workspace) -> None:
    workspace.experiment.parent.mkdir(parents=True, exist_ok=True)
    workspace.experiment.write_text(
        'name = "e2e"\nscenarios = ["plain"]\nbranches = ["sampled", "rebuttal"]\nsamples_per_cell = 2\n'
        '[params]\nmax_tokens = 32\n'
        '[[models]]\nname = "smollm2-135m-instruct"\nembedded = true\nconcurrency = 2\n')
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "sample", "--experiment", str(workspace.experiment),
                             "--db", str(workspace.db)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "4 done now, 0 failed" in out and "tiny model" in out
    assert server_processes(proc.pid) == []  # the server went with the run
    rows = query(workspace.db, "SELECT r.call, r.response_text, r.prompt_tokens, r.completion_tokens, r.base_url "
                               "FROM responses r JOIN jobs j USING (job_id) WHERE j.status = 'done'")
    assert len(rows) == 2 * 2 + 2  # sampled jobs call twice, rebuttal jobs once
    for call, text, prompt_tokens, completion_tokens, base_url in rows:
        assert text.strip(), call
        assert prompt_tokens > 50 and 0 < completion_tokens <= 32
        assert base_url.startswith("http://127.0.0.1:")
    # Nothing listens on its port any more (SO_REUSEADDR: our own closed client sockets
    # may still sit in TIME_WAIT, which does not keep a listener from binding).
    port = urlsplit(rows[0][4]).port
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    # Everything is done: a rerun neither samples nor starts the server.
    again = workspace.sample()
    assert "0 done now" in again.stdout and "local_model.ready" not in again.stderr


def test_the_shipped_embedded_settings_make_replies_finish(workspace: Workspace) -> None:
    """The default experiment's own entry for the embedded model (max_tokens + grammar), as
    shipped: replies end by themselves, in the Reasoning:/Output: shape the judges split."""
    shipped = (REPO / "scenarios" / "experiments" / "default.toml").read_text(encoding="utf-8")
    entry = shipped[shipped.index("\n[[models]]"):shipped.index("# A real endpoint")]
    workspace.experiment.parent.mkdir(parents=True, exist_ok=True)
    workspace.experiment.write_text('name = "e2e"\nscenarios = ["plain"]\nbranches = ["refusal"]\n'
                                    f'samples_per_cell = 3\n{entry}')
    workspace.sample()
    rows = query(workspace.db, "SELECT finish_reason, response_text, request_params ->> 'max_tokens' FROM responses")
    assert len(rows) == 3
    for finish_reason, text, max_tokens in rows:
        assert finish_reason == "stop" and max_tokens == "256"
        assert text.startswith("Reasoning: ") and "\n\nOutput: " in text
