"""Serve the embedded model for the cells that need it: size its server from the plan."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace

import structlog

from pipeline.experiment.config import DEFAULT_MAX_TOKENS, ModelConfig
from pipeline.local_model.server import embedded_server
from pipeline.sampling.lane import estimate_tokens
from pipeline.sampling.plan import Cell

log = structlog.get_logger()


def start_embedded_models(cells: list[Cell], stack: ExitStack) -> list[Cell]:
    """Start the local llama.cpp server for embedded models; it stops when `stack` closes."""
    embedded = {cell.model.name: cell.model for cell in cells if cell.model.embedded}
    if not embedded:
        return cells
    served: dict[str, ModelConfig] = {}
    for name, model in embedded.items():
        ctx = context_per_slot([c for c in cells if c.model is model], model)
        log.info("starting the embedded model server", model=name, slots=model.concurrency, ctx_per_slot=ctx)
        url = stack.enter_context(embedded_server(slots=model.concurrency, ctx_per_slot=ctx))
        served[name] = replace(model, base_urls=(url,))
    return [replace(c, model=served[c.model.name]) if c.model.embedded else c for c in cells]


def context_per_slot(cells: list[Cell], model: ModelConfig) -> int:
    """Enough context for the longest conversation: prompt + a sampled initial reply + final reply."""
    max_tokens = int(model.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
    longest = max(estimate_tokens(c.conversation.closing("")) for c in cells)
    needed = int(longest * 1.5) + 2 * max_tokens + 64  # 1.5: chars/4 underestimates small-vocab tokenizers
    return -(-needed // 256) * 256
