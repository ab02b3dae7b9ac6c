"""Prices, cost per call, the `costs` view, the dry-run estimate and the budget cap (issue 11),
against the fake server on 127.0.0.1."""

from __future__ import annotations

import pytest

from pipeline.experiment.pricing import Price, cached_prompt_tokens, price_list
from pipeline.progress import Progress, format_usd
from tests.conftest import Workspace, query
from tests.fakeserver import FakeServer
from tests.test_run import CALLS, JOBS, chat_requests

# $ per million tokens: a fixture job costs ~$0.002, the grid at n=4 ~$0.08.
PRICE = 'price = { input = 30.0, cached_input = 15.0, output = 60.0 }'


def test_shipped_price_list_has_a_date_and_the_papers_model() -> None:
    prices = price_list()
    assert prices.as_of[:4].isdigit()
    gpt4 = prices.find("gpt-4-0613")
    assert gpt4 is not None and (gpt4.input, gpt4.output, gpt4.batch_discount) == (30.0, 60.0, 0.5)
    assert prices.find("openai/gpt-4o") == prices.find("gpt-4o")
    assert prices.find("my-local-llama") is None


def test_cost_counts_cached_tokens_at_their_rate_and_the_batch_discount() -> None:
    price = Price(input=30.0, output=60.0, cached_input=15.0, batch_discount=0.5)
    assert price.cost(1_000_000, 0, 0) == pytest.approx(30.0)
    assert price.cost(1_000_000, 400_000, 1_000_000) == pytest.approx(0.6 * 30 + 0.4 * 15 + 60)
    assert price.cost(1_000_000, 0, 1_000_000, batch=True) == pytest.approx(45.0)
    assert price.cost(100, 500, 0) == pytest.approx(100 * 15 / 1e6)   # cached never above prompt


@pytest.mark.parametrize(("usage", "cached"), [
    ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 4}}, 4),   # OpenAI, vLLM
    ({"input_tokens_details": {"cached_tokens": 3}}, 3),                        # Responses API
    ({"prompt_cache_hit_tokens": 7, "prompt_cache_miss_tokens": 2}, 7),        # DeepSeek
    ({"cache_read_input_tokens": 5}, 5),                                        # Anthropic-style
    ({"prompt_tokens": 9}, None),
])
def test_cached_tokens_are_read_from_each_servers_usage(usage: dict[str, object], cached: int | None) -> None:
    assert cached_prompt_tokens(usage) == cached


def test_each_call_stores_its_cost_and_the_costs_view_sums_them(workspace: Workspace) -> None:
    with FakeServer(cached_share=0.5) as server:
        workspace.write_experiment(server.base_url, n=4, model_extra=PRICE)
        out = workspace.sample()
        assert chat_requests(server) == CALLS
    rows = query(workspace.db, "SELECT prompt_tokens, cached_tokens, completion_tokens, cost_usd FROM responses")
    assert len(rows) == CALLS
    for prompt, cached, completion, cost in rows:
        assert cached == int(prompt * 0.5)
        assert cost == pytest.approx(((prompt - cached) * 30 + cached * 15 + completion * 60) / 1e6)
    total = sum(row[3] for row in rows)
    (view_total, calls, unpriced), = query(workspace.db, "SELECT sum(cost_usd), sum(calls), sum(unpriced_calls) FROM costs")
    assert view_total == pytest.approx(total) and calls == CALLS and unpriced == 0
    cells = query(workspace.db, "SELECT count(*) FROM costs")[0][0]
    assert cells == 9   # one row per run and cell
    assert f"cost {format_usd(total)}" in out.stdout
    status = workspace.cli("status", "--db", str(workspace.db)).stdout
    assert "cost per model" in status and f"fake-model: {format_usd(total)} for {CALLS} calls" in status


def test_a_model_without_a_price_costs_unknown_never_zero(workspace: Workspace) -> None:
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=1)
        out = workspace.sample()
    assert query(workspace.db, "SELECT count(*), count(cost_usd) FROM responses") == [(CALLS // 4, 0)]
    assert query(workspace.db, "SELECT cost_usd, unpriced_calls FROM costs_by_model") == [(None, CALLS // 4)]
    assert "cost unknown" in out.stdout
    status = workspace.cli("status", "--db", str(workspace.db)).stdout
    assert "fake-model: unknown for" in status
    refused = workspace.sample("--max-cost", "5", check=False)
    assert refused.returncode == 2
    assert "model 'fake-model' has no price" in refused.stderr and "Traceback" not in refused.stderr


def test_dry_run_prints_expected_and_upper_cost_online_and_batch(workspace: Workspace) -> None:
    workspace.write_experiment("http://127.0.0.1:9/v1", n=10, model_extra=PRICE)
    out = workspace.sample("--dry-run").stdout
    line = next(text for text in out.splitlines() if text.strip().startswith("cost ("))
    # 90 jobs, 120 calls of up to 32 tokens: output alone at most 120 * 32 * $60 / 1M = $0.2304.
    online, batch = line.split(" (replies")[0].split("; ")
    expected_online = float(online.split("expected $")[1].split(",")[0])
    upper_online = float(online.split("at most $")[1].split()[0])
    expected_batch = float(batch.split("expected $")[1].split(",")[0])
    upper_batch = float(batch.split("at most $")[1].split()[0])
    assert 0 < expected_online < upper_online
    assert expected_batch == pytest.approx(expected_online / 2, rel=0.01)
    assert upper_batch == pytest.approx(upper_online / 2, rel=0.01)
    assert upper_online > 120 * 32 * 60 / 1e6
    unpriced = workspace.write_experiment("http://127.0.0.1:9/v1", n=1)
    assert unpriced.exists()
    assert "cost: unknown (fake-model is not in prices.toml" in workspace.sample("--dry-run").stdout


def test_budget_cap_stops_under_it_leaves_the_rest_pending_and_a_higher_cap_finishes(workspace: Workspace) -> None:
    with FakeServer(latency=0.02) as server:
        workspace.write_experiment(server.base_url, n=4, model_extra=PRICE)
        cap = 0.05
        out = workspace.sample("--max-cost", str(cap), check=False)
        assert out.returncode == 3, out.stdout + out.stderr
        spent = query(workspace.db, "SELECT sum(cost_usd) FROM responses")[0][0]
        done = query(workspace.db, "SELECT count(*) FROM jobs WHERE status = 'done'")[0][0]
        assert 0 < spent <= cap
        assert 0 < done < JOBS
        assert "budget reached" in out.stdout and f"{JOBS - done} jobs left pending" in out.stdout
        assert query(workspace.db, "SELECT status FROM runs") == [("budget_reached",)]

        # The same cap again: the cap counts what the experiment already cost, so at most a job
        # cheaper than the headroom goes out and the total stays under the cap.
        again = workspace.sample("--max-cost", str(cap), check=False)
        assert again.returncode == 3
        assert spent <= query(workspace.db, "SELECT sum(cost_usd) FROM responses")[0][0] <= cap

        finished = workspace.sample("--max-cost", "10")
        assert "0 still pending" in finished.stdout
        assert query(workspace.db, "SELECT count(*), count(DISTINCT job_id) FROM jobs WHERE status = 'done'") == [
            (JOBS, JOBS)]
        total = query(workspace.db, "SELECT sum(cost_usd) FROM responses")[0][0]
        assert total <= 10


def test_budget_usd_in_the_experiment_is_the_cap(workspace: Workspace) -> None:
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=4, extra="budget_usd = 0.03", model_extra=PRICE)
        out = workspace.sample(check=False)
        assert out.returncode == 3
        assert 0 < query(workspace.db, "SELECT sum(cost_usd) FROM responses")[0][0] <= 0.03


@pytest.mark.parametrize(("model_extra", "extra", "message"), [
    ('price = { input = 30.0 }', "", "field 'models[0].price.output': is required but missing"),
    ('price = { input = -1.0, output = 2.0 }', "", "field 'models[0].price.input': must be a number >= 0"),
    ('price = { input = 1.0, output = 2.0, discount = 0.5 }', "", "field 'models[0].price.discount': unknown key"),
    ('price = { input = 1.0, output = 2.0, batch_discount = 1.0 }', "", "batch_discount': must be below 1"),
    ('price = 30.0', "", "field 'models[0].price': must be a table"),
    ('batch = "yes"', "", "field 'models[0].batch': must be true or false"),
    ("", "budget_usd = 0", "field 'budget_usd': must be a number of dollars > 0"),
])
def test_bad_prices_and_budgets_are_one_line_with_file_and_field(workspace: Workspace, model_extra: str, extra: str,
                                                                 message: str) -> None:
    workspace.write_experiment("http://127.0.0.1:9/v1", extra=extra, model_extra=model_extra)
    out = workspace.sample("--dry-run", check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: {workspace.experiment}:") and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_max_cost_must_be_positive(workspace: Workspace) -> None:
    workspace.write_experiment("http://127.0.0.1:9/v1", model_extra=PRICE)
    out = workspace.sample("--max-cost", "-1", check=False)
    assert out.returncode == 2 and "--max-cost must be a number of dollars > 0" in out.stderr
    assert not workspace.db.exists()


def test_progress_line_shows_dollars_and_unknown_never_as_zero() -> None:
    progress = Progress(total=2)
    progress.count_cost(0.25)
    assert "$0.2500" in progress.line()
    progress.count_cost(None)
    assert "$0.2500 + unknown (1 unpriced calls)" in progress.line()
    unpriced = Progress(total=1)
    unpriced.count_cost(None)
    assert "| unknown |" in unpriced.line() and "$0.00" not in unpriced.line()
