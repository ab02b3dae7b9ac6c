"""`sample --dry-run`: what a run would do and how long the limits let it take, sending nothing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from pipeline.experiment.config import DEFAULT_MAX_TOKENS, ModelConfig
from pipeline.sampling.lane import estimate_tokens
from pipeline.sampling.plan import Cell, DoneIndex


@dataclass
class ModelEstimate:
    pending_jobs: int = 0
    requests: int = 0
    tokens: int = 0

    def seconds_at_limits(self, model: ModelConfig) -> float | None:
        """The floor the rate limits set; None when no limit is configured (latency decides)."""
        bounds = []
        lanes = len(model.base_urls) or 1
        if model.rpm:
            bounds.append(self.requests * model.limit_window_s / (model.rpm * lanes))
        if model.tpm:
            bounds.append(self.tokens * model.limit_window_s / (model.tpm * lanes))
        return max(bounds) if bounds else None


def describe_plan(cells: list[Cell], done: DoneIndex, speeds: dict[str, float] | None = None) -> str:
    """The plan per cell and per model; `speeds` (requests/s a model's last run reached) estimate
    the time of a model without rate limits, e.g. the embedded one."""
    lines = [f"{'scenario':<18} {'variant':<12} {'branch':<9} {'model':<24} {'planned':>8} {'pending':>8}"]
    per_model: dict[str, ModelEstimate] = defaultdict(ModelEstimate)
    models: dict[str, ModelConfig] = {}
    for cell in cells:
        pending = sum(1 for seed in range(cell.n) if not done.is_done(cell, seed))
        lines.append(f"{cell.scenario.id:<18} {cell.variant:<12} {cell.branch:<9} {cell.model.name:<24} "
                     f"{cell.n:>8} {pending:>8}")
        calls = 2 if cell.branch == "sampled" else 1
        max_tokens = int(cell.model.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        prompt = estimate_tokens(cell.conversation.closing(""))
        estimate = per_model[cell.model.name]
        estimate.pending_jobs += pending
        estimate.requests += pending * calls
        estimate.tokens += pending * calls * (prompt + max_tokens)
        models[cell.model.name] = cell.model
    lines.append("")
    for name, estimate in per_model.items():
        at_limits = _duration(estimate, models[name], (speeds or {}).get(name))
        lines.append(f"{name}: {estimate.pending_jobs} pending jobs, {estimate.requests} requests, "
                     f"<= {estimate.tokens} tokens (prompt estimate + max_tokens), {at_limits}")
    return "\n".join(lines)


def _duration(estimate: ModelEstimate, model: ModelConfig, requests_per_s: float | None) -> str:
    seconds = estimate.seconds_at_limits(model)
    if seconds is not None:
        return f"at least {seconds / 60:.1f} min at its rpm/tpm limits"
    if requests_per_s:
        return (f"about {estimate.requests / requests_per_s / 60:.1f} min at the {requests_per_s:.2f} requests/s "
                "its last run reached")
    return "no rpm/tpm limit set and no earlier run to time it by (a short run, e.g. --n 1, measures it)"
