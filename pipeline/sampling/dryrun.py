"""`sample --dry-run`: what a run would do, how long the limits let it take and what it would
cost (expected and at most, online and by batch), sending nothing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from pipeline.experiment.config import DEFAULT_MAX_TOKENS, ModelConfig
from pipeline.progress import format_usd
from pipeline.sampling.lane import estimate_tokens
from pipeline.sampling.plan import Cell, DoneIndex


@dataclass
class ModelEstimate:
    pending_jobs: int = 0
    requests: int = 0
    tokens: int = 0
    prompt_tokens: int = 0          # estimated, with an initial reply of expected length (sampled branch)
    max_prompt_tokens: int = 0      # ... with an initial reply at max_tokens
    expected_completion: float = 0.0
    max_completion: int = 0

    def seconds_at_limits(self, model: ModelConfig) -> float | None:
        """The floor the rate limits set; None when no limit is configured (latency decides)."""
        bounds = []
        lanes = len(model.base_urls) or 1
        if model.rpm:
            bounds.append(self.requests * model.limit_window_s / (model.rpm * lanes))
        if model.tpm:
            bounds.append(self.tokens * model.limit_window_s / (model.tpm * lanes))
        return max(bounds) if bounds else None

    def cost_line(self, model: ModelConfig, reply_source: str) -> str:
        """`expected $x, at most $y online; batch: ...` (unknown without a price)."""
        price = model.price
        if price is None:
            return (f"  cost: unknown ({model.name} is not in prices.toml; add price = {{ input = ..., "
                    "output = ... } to its [[models]] entry)")
        parts = []
        for label, batch in (("online", False), ("batch", True)):
            expected = price.cost(self.prompt_tokens, 0, round(self.expected_completion), batch)
            upper = price.upper_bound(self.max_prompt_tokens, self.max_completion, batch)
            parts.append(f"{label}: expected {format_usd(expected)}, at most {format_usd(upper)}")
        return f"  cost ({price.source}): {'; '.join(parts)} (replies {reply_source}, prompts uncached)"


def describe_plan(cells: list[Cell], done: DoneIndex, mean_reply: dict[str, float] | None = None,
                  speeds: dict[str, float] | None = None) -> str:
    """The plan per cell, then per model: requests, tokens, time at the limits and cost.
    `mean_reply`: mean completion tokens of a model's earlier replies (the expected length);
    `speeds`: requests/s a model's last run reached (the time of a model without rate limits,
    e.g. the embedded one)."""
    mean_reply = mean_reply or {}
    lines = [f"{'scenario':<18} {'variant':<12} {'branch':<9} {'model':<24} {'planned':>8} {'pending':>8}"]
    per_model: dict[str, ModelEstimate] = defaultdict(ModelEstimate)
    models: dict[str, ModelConfig] = {}
    for cell in cells:
        pending = sum(1 for seed in range(cell.n) if not done.is_done(cell, seed))
        lines.append(f"{cell.scenario.id:<18} {cell.variant:<12} {cell.branch:<9} {cell.model.name:<24} "
                     f"{cell.n:>8} {pending:>8}")
        max_tokens = int(cell.model.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        reply = mean_reply.get(cell.model.name, max_tokens / 2)
        estimate = per_model[cell.model.name]
        prompts = _prompt_estimates(cell, round(reply))
        estimate.pending_jobs += pending
        estimate.requests += pending * len(prompts)
        longest = _prompt_estimates(cell, max_tokens)
        estimate.tokens += pending * sum(prompt + max_tokens for prompt in prompts)
        estimate.prompt_tokens += pending * sum(prompts)
        estimate.max_prompt_tokens += pending * sum(longest)
        estimate.expected_completion += pending * len(prompts) * reply
        estimate.max_completion += pending * len(prompts) * max_tokens
        models[cell.model.name] = cell.model
    lines.append("")
    for name, estimate in per_model.items():
        model = models[name]
        at_limits = _duration(estimate, model, (speeds or {}).get(name))
        lines.append(f"{name}: {estimate.pending_jobs} pending jobs, {estimate.requests} requests, "
                     f"<= {estimate.tokens} tokens (prompt estimate + max_tokens), {at_limits}"
                     + ("; batch = true" if model.batch else ""))
        source = (f"as long as earlier replies, {mean_reply[name]:.0f} tokens on average" if name in mean_reply
                  else "at half of max_tokens (no earlier replies)")
        lines.append(estimate.cost_line(model, source))
    return "\n".join(lines)


def _duration(estimate: ModelEstimate, model: ModelConfig, requests_per_s: float | None) -> str:
    seconds = estimate.seconds_at_limits(model)
    if seconds is not None:
        return f"at least {seconds / 60:.1f} min at its rpm/tpm limits"
    if requests_per_s:
        return (f"about {estimate.requests / requests_per_s / 60:.1f} min at the {requests_per_s:.2f} requests/s "
                "its last run reached")
    return "no rpm/tpm limit set and no earlier run to time it by (a short run, e.g. --n 1, measures it)"


def _prompt_estimates(cell: Cell, reply_tokens: int) -> list[int]:
    """Estimated prompt tokens of a job's calls: the sampled branch's final prompt carries its
    initial reply (expected length), a fixed branch's its first phrasing."""
    conversation = cell.conversation
    fixed = conversation.fixed_response(cell.branch, 0)
    if fixed is not None:
        return [estimate_tokens(conversation.closing(fixed))]
    return [estimate_tokens(conversation.opening()), estimate_tokens(conversation.closing("")) + reply_tokens]
