"""What a call costs: list prices per model (shipped `prices.toml`, or a model's own `price`)
and the cost of a call from its usage.

A model with no price has an UNKNOWN cost (None), never 0: a run against an unpriced
endpoint must say it cannot count its money, not report that it spent nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.experiment.tomlfile import TomlFile

PRICE_KEYS = {"input", "cached_input", "output", "batch_discount"}
PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class Price:
    """$ per million tokens; `batch_discount` is the share the Batch API takes off."""

    input: float
    output: float
    cached_input: float
    batch_discount: float = 0.5
    source: str = "prices.toml"

    def cost(self, prompt: int | None, cached: int | None, completion: int | None, batch: bool = False) -> float:
        """$ for one call's usage (cached prompt tokens at the cached rate)."""
        prompt, completion = prompt or 0, completion or 0
        cached = min(cached or 0, prompt)
        dollars = ((prompt - cached) * self.input + cached * self.cached_input
                   + completion * self.output) / PER_TOKENS
        return dollars * (1.0 - self.batch_discount) if batch else dollars

    def upper_bound(self, prompt: int, max_completion: int, batch: bool = False) -> float:
        """$ for a call whose prompt is read uncached and whose reply runs to its cap."""
        return self.cost(prompt, 0, max_completion, batch)


FREE = Price(0.0, 0.0, 0.0, 0.0, source="local model")


@dataclass(frozen=True)
class PriceList:
    as_of: str
    prices: dict[str, Price]

    def find(self, model: str) -> Price | None:
        """The list price of `model` (also as `provider/model`, e.g. `openai/gpt-4o`)."""
        return self.prices.get(model) or self.prices.get(model.rsplit("/", 1)[-1])


def price_list_path() -> Path:
    return Path(str(resources.files("pipeline.experiment").joinpath("prices.toml")))


@cache
def price_list() -> PriceList:
    """The shipped list (read once)."""
    doc = TomlFile.load(price_list_path())
    as_of = doc.text_field(doc.data, "as_of", "as_of")
    discount = doc.get(doc.data, "batch_discount", "batch_discount", (int, float), 0.5)
    models = doc.get(doc.data, "models", "models", dict, {})
    prices = {name: parse_price(doc, raw, f"models.{name}", float(discount), f"prices.toml ({as_of})")
              for name, raw in models.items()}
    return PriceList(as_of, prices)


def parse_price(doc: TomlFile, raw: Any, where: str, default_discount: float, source: str) -> Price:
    """A `{input, cached_input?, output, batch_discount?}` table, checked."""
    if not isinstance(raw, dict):
        raise doc.error(where, "must be a table: { input = 30.0, cached_input = 15.0, output = 60.0 } ($ per million tokens)")
    doc.check_keys(raw, where, PRICE_KEYS)
    values = {}
    for key in ("input", "output", "cached_input", "batch_discount"):
        default = {"cached_input": None, "batch_discount": default_discount}.get(key, ...)
        if default is ...:
            value = doc.get(raw, f"{where}.{key}", key, (int, float))
        else:
            value = doc.get(raw, f"{where}.{key}", key, (int, float), default)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise doc.error(f"{where}.{key}", f"must be a number >= 0, got {value!r}")
        values[key] = value
    if values["batch_discount"] >= 1:
        raise doc.error(f"{where}.batch_discount", "must be below 1 (a share: 0.5 = half price)")
    cached = values["input"] if values["cached_input"] is None else values["cached_input"]
    return Price(input=float(values["input"]), output=float(values["output"]), cached_input=float(cached),
                 batch_discount=float(values["batch_discount"]), source=source)


def cached_prompt_tokens(usage: dict[str, Any]) -> int | None:
    """Prompt tokens served from the provider's cache, as each server family reports them:
    OpenAI/vLLM `prompt_tokens_details.cached_tokens`, the Responses API's
    `input_tokens_details.cached_tokens`, DeepSeek `prompt_cache_hit_tokens`, Anthropic-style
    `cache_read_input_tokens`. None when the server says nothing."""
    if not isinstance(usage, dict):
        return None
    for details, key in (("prompt_tokens_details", "cached_tokens"), ("input_tokens_details", "cached_tokens")):
        inner = usage.get(details)
        if isinstance(inner, dict) and isinstance(inner.get(key), int):
            return int(inner[key])
    for key in ("prompt_cache_hit_tokens", "cache_read_input_tokens"):
        if isinstance(usage.get(key), int):
            return int(usage[key])
    return None
