"""A cap on what an experiment may cost (`--max-cost`, `budget_usd`), never exceeded.

Like tokens under a tpm limit, money is reserved before a job's calls go out: the job's
upper bound (prompt estimate with a margin, every reply at max_tokens). When the next job
would cross the cap, the run stops sending; calls in flight finish and are paid for out of
their reservation, the rest stays pending. The cap counts everything this experiment has
already cost in the database, so a rerun with the same cap sends nothing and one with a
higher cap continues.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from pipeline.errors import PipelineError
from pipeline.experiment.config import DEFAULT_MAX_TOKENS, ModelConfig
from pipeline.experiment.scenarios import Message
from pipeline.progress import format_usd
from pipeline.sampling.engine import StopWorker
from pipeline.sampling.lane import estimate_tokens
from pipeline.sampling.plan import Job
from pipeline.store.queries import sql

# Prompt tokens are estimated at ~4 characters each; real tokenizers can need more (names,
# numbers, non-English text), so a reservation takes half as much again.
PROMPT_MARGIN = 1.5


class BudgetReached(StopWorker):
    """The next job would cross the cap: stop taking jobs (they stay pending)."""


@dataclass
class Budget:
    cap_usd: float
    spent_before: float = 0.0    # what the experiment had cost before this run
    spent: float = 0.0           # settled cost of this run's calls
    reserved: float = 0.0        # upper bounds of the jobs in flight
    reached: bool = False

    def reserve(self, amount: float) -> None:
        """Hold `amount` for a job, or raise BudgetReached (and refuse every job after it)."""
        if self.reached or self.spent_before + self.spent + self.reserved + amount > self.cap_usd:
            self.reached = True
            raise BudgetReached(f"budget {format_usd(self.cap_usd)} reached")
        self.reserved += amount

    def settle(self, reserved: float, cost: float) -> None:
        """A job ended: its reservation is replaced by what its calls really cost."""
        self.reserved -= reserved
        self.spent += cost

    @property
    def total(self) -> float:
        return self.spent_before + self.spent


def job_cost_bound(job: Job, model: ModelConfig, batch: bool = False) -> float:
    """The most a job's calls can cost: every reply at max_tokens, prompts with a margin."""
    max_tokens = int(model.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
    conversation = job.cell.conversation
    fixed = job.fixed_response()
    prompts = [estimate_tokens(conversation.closing(fixed))] if fixed is not None else [
        estimate_tokens(conversation.opening()), estimate_tokens(conversation.closing("")) + max_tokens]
    return sum(_bound(model, prompt, batch) for prompt in prompts)


def call_cost_bound(model: ModelConfig, messages: list[Message], batch: bool = False) -> float:
    """The most one call with these messages can cost."""
    return _bound(model, estimate_tokens(messages), batch)


def _bound(model: ModelConfig, prompt: int, batch: bool) -> float:
    assert model.price is not None, "check_priced() runs before any budgeted run"
    max_tokens = int(model.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
    return model.price.upper_bound(math.ceil(prompt * PROMPT_MARGIN), max_tokens, batch)


def check_priced(models: Sequence[ModelConfig], flag: str) -> None:
    """A cap needs a price for every model: an unknown cost cannot be kept under one."""
    for model in models:
        if model.price is None:
            raise PipelineError(f"{flag}: model {model.name!r} has no price (not in prices.toml); add "
                                "price = { input = ..., cached_input = ..., output = ... } ($ per million tokens) "
                                "to its [[models]] entry")


def experiment_spent(con: duckdb.DuckDBPyConnection, experiment: str) -> float:
    """$ every stored call of this experiment's runs cost (priced calls)."""
    (spent,), = con.execute(sql("experiment_spent"), [experiment]).fetchall()
    return float(spent) if spent is not None else 0.0


def cost_lines(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Per model: calls, tokens and $ (what `pipeline status` prints)."""
    lines = []
    for model, calls, batch_calls, prompt, cached, completion, cost, unpriced in con.execute(
            "SELECT * FROM costs_by_model").fetchall():
        spent = format_usd(cost) + (f" + unknown ({unpriced} unpriced calls)" if unpriced and cost is not None else "")
        lines.append(f"  {model}: {spent} for {calls} calls ({batch_calls} by batch), {prompt or 0} prompt tokens "
                     f"({cached or 0} cached), {completion or 0} completion tokens")
    return lines or ["  nothing sampled yet"]
