"""Replies cut off at max_tokens are said where a cap is chosen or judged; the default
experiment gives real models a cap that fits a Reasoning + Output reply."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO, Workspace, query
from tests.fakeserver import FakeServer

DEFAULT_EXPERIMENT = REPO / "scenarios" / "experiments" / "default.toml"


def test_cut_off_replies_are_reported_and_a_low_cap_is_warned_about(workspace: Workspace) -> None:
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=1, model_extra="params = { max_tokens = 2 }")
        run = workspace.sample()
        (cut, total), = query(workspace.db, "SELECT count(*) FILTER (WHERE finish_reason = 'length'), count(*) "
                                            "FROM final_responses")
        assert cut == total > 0
        assert f"cut off at max_tokens: fake-model: {cut} of {total} final replies (100%)" in run.stdout
        status = workspace.cli("status", "--db", str(workspace.db))
        assert f"fake-model: {cut} of {total} final replies (100%)  <- raise max_tokens" in status.stdout
        plan = workspace.sample("--dry-run", "--n", "2")
        assert re.search(r"warning: fake-model: max_tokens 2, but (\d+) of \1 earlier replies were cut off "
                         r"at max_tokens 2", plan.stdout)


def test_complete_replies_give_no_warning(workspace: Workspace) -> None:
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=1)
        run = workspace.sample()
        assert re.search(r"fake-model: 0 of \d+ final replies \(0%\)\n", run.stdout)
        assert "warning" not in workspace.sample("--dry-run", "--n", "2").stdout


def test_uncommented_gpt4_block_asks_for_a_sensible_max_tokens(workspace: Workspace, tmp_path: Path) -> None:
    """As a user would do it: uncomment the GPT-4 block of the shipped default experiment
    (pointed at the fake server, the embedded entry left out to keep the test offline-fast)."""
    text = DEFAULT_EXPERIMENT.read_text(encoding="utf-8")
    block = text[text.index("# [[models]]"):]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    head = text[:text.index("\n[[models]]")]
    with FakeServer() as server:
        uncommented = re.sub(r'base_url = "[^"]*"', f'base_url = "{server.base_url}"', uncommented)
        uncommented = re.sub(r'api_key_env = "[^"]*"\n', "", uncommented)
        experiment = tmp_path / "experiments" / "gpt4.toml"
        experiment.parent.mkdir()
        experiment.write_text(head.replace('scenarios_dir = ".."', f'scenarios_dir = "{REPO / "scenarios"}"')
                              + uncommented, encoding="utf-8")
        workspace.cli("sample", "--experiment", str(experiment), "--db", str(workspace.db), "--n", "1",
                      "--rpm", "0", "--tpm", "0")  # the block's OpenAI limits would only slow the test
    params = {row[0] for row in query(workspace.db, "SELECT DISTINCT request_params ->> 'max_tokens' FROM responses")}
    assert params == {"512"}
    models = {row[0] for row in query(workspace.db, "SELECT DISTINCT model FROM jobs")}
    assert models == {"gpt-4-0613"}
    grammar = query(workspace.db, "SELECT count(*) FROM responses WHERE request_params ->> 'grammar' IS NOT NULL")
    assert grammar == [(0,)]  # the embedded model's grammar stays on its own entry
