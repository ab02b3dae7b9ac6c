"""Experiment files: which scenarios, variants, branches and models, and how many samples.

An experiment is TOML (see scenarios/experiments/default.toml). Command-line flags can
replace its model list with a single endpoint, so any OpenAI-compatible server can be
targeted without writing a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.experiment.pricing import FREE, Price, parse_price, price_list
from pipeline.experiment.scenarios import BRANCHES, Scenario, load_scenarios
from pipeline.experiment.tomlfile import TomlFile

_TOP_KEYS = {"name", "description", "scenarios_dir", "scenarios", "variants", "branches",
             "samples_per_cell", "params", "models", "budget_usd"}
_MODEL_KEYS = {"name", "base_url", "base_urls", "api_key_env", "params", "rpm", "tpm",
               "concurrency", "timeout_s", "max_attempts", "embedded", "send_seed", "limit_window_s",
               "price", "batch", "cot", "send_reasoning_back"}
# Where a model's chain of thought comes from: the scenario's `Reasoning:`/`Output:` instruction
# (the paper's set-up), the model's own reasoning trace (no instruction added), or neither.
COT_MODES = ("prompted", "native", "none")
DEFAULT_COT = "prompted"
DEFAULT_MAX_TOKENS = 512  # when an experiment sets none: room for a Reasoning + Output reply
DEFAULT_PARAMS: dict[str, Any] = {"temperature": 1.0, "max_tokens": DEFAULT_MAX_TOKENS}
# Sampling parameters checked at load (others are passed through for vendor extensions):
# (kind, lowest, highest); kind "int" or "number", bounds inclusive, None = unbounded.
_PARAM_RANGES: dict[str, tuple[str, float | None, float | None]] = {
    "max_tokens": ("int", 1, None), "max_completion_tokens": ("int", 1, None),
    "temperature": ("number", 0, 2), "top_p": ("number", 0, 1), "min_p": ("number", 0, 1),
    "presence_penalty": ("number", -2, 2), "frequency_penalty": ("number", -2, 2),
    "repetition_penalty": ("number", 0, None), "repeat_penalty": ("number", 0, None),
    "top_k": ("int", -1, None), "seed": ("int", None, None), "top_logprobs": ("int", 0, 20),
    "n": ("int", 1, 1),
}
_PARAMS_SET_BY_PIPELINE = {"model": "the model's `name`", "messages": "the scenario",
                           "stream": "the client (it reads whole answers)"}


@dataclass(frozen=True)
class ModelConfig:
    """One model and the endpoint(s) that serve it. Limits of 0/None mean "no limit"."""

    name: str
    base_urls: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    api_key_env: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    concurrency: int = 8
    timeout_s: float = 120.0
    max_attempts: int = 6
    embedded: bool = False
    send_seed: bool = True
    limit_window_s: float = 60.0   # rpm/tpm count per window of this length (a gateway's "minute")
    price: Price | None = None     # None: cost unknown (never counted as 0)
    batch: bool = False            # sample through the Batch API instead of online calls
    cot: str = DEFAULT_COT         # prompted | native | none (COT_MODES)
    send_reasoning_back: bool = False   # sampled branch: the initial reply's trace goes into the next turn

    @property
    def cot_instruction(self) -> bool:
        """Whether the scenario's CoT instruction is appended to the system prompt."""
        return self.cot == "prompted"

    def identity(self) -> dict[str, Any]:
        """What about the model changes its answers: part of every job id (not the URL).
        A setting at its default is left out, so the ids of earlier experiments stay the same."""
        identity = {"model": self.name, "params": self.params, "send_seed": self.send_seed}
        if self.cot != DEFAULT_COT:
            identity["cot"] = self.cot
        return identity


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    scenarios: list[Scenario]
    variants: dict[str, list[str]]
    branches: tuple[str, ...]
    samples_per_cell: int
    models: list[ModelConfig]
    default_params: dict[str, Any]
    budget_usd: float | None = None   # cap on what this experiment may cost in the database

    def variants_of(self, scenario: Scenario) -> list[str]:
        return self.variants.get(scenario.id, scenario.variant_names)


def load_experiment(path: Path) -> Experiment:
    doc = TomlFile.load(path)
    data = doc.data
    doc.check_keys(data, "", _TOP_KEYS)
    name = doc.text_field(data, "name", "name", path.stem)
    scenarios_dir = (path.parent / doc.text_field(data, "scenarios_dir", "scenarios_dir", "..")).resolve()
    names = doc.text_list(data, "scenarios", "scenarios", min_items=1, default=None)
    scenarios = load_scenarios(scenarios_dir, names)
    if names is not None:
        _refuse_repeats(doc, "scenarios", names)
    branches = tuple(doc.text_list(data, "branches", "branches", min_items=1, default=list(BRANCHES)))
    for index, branch in enumerate(branches):
        if branch not in BRANCHES:
            raise doc.error(f"branches[{index}]", f"unknown branch {branch!r} (use {', '.join(BRANCHES)})")
    _refuse_repeats(doc, "branches", list(branches))
    samples = doc.get(data, "samples_per_cell", "samples_per_cell", int, 10)
    if samples < 1:
        raise doc.error("samples_per_cell", "must be at least 1")
    default_params = {**DEFAULT_PARAMS, **_load_params(doc, data, "params")}
    variants = _load_variant_filter(doc, scenarios)
    models_raw = doc.get(data, "models", "models", list, [])
    models = [_load_model(doc, raw, index, default_params) for index, raw in enumerate(models_raw)]
    budget = doc.get(data, "budget_usd", "budget_usd", (int, float), None)
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise doc.error("budget_usd", f"must be a number of dollars > 0, got {budget!r}")
    _refuse_repeats(doc, "models", [model.name for model in models], suffix=".name",
                    why="two [[models]] with one name would share (or fight over) its jobs; give each its own name")
    return Experiment(name=name, path=path, scenarios=scenarios, variants=variants,
                      branches=branches, samples_per_cell=samples, models=models,
                      default_params=default_params, budget_usd=None if budget is None else float(budget))


def endpoint_model(*, model: str, base_url: str, api_key_env: str | None,
                   params: dict[str, Any], cot: str = DEFAULT_COT) -> ModelConfig:
    """A model given on the command line as one OpenAI-compatible endpoint."""
    if cot not in COT_MODES:
        raise PipelineError(f"--cot must be one of {', '.join(COT_MODES)}, got {cot!r}")
    return ModelConfig(name=model, base_urls=(base_url.rstrip("/"),), params=dict(params),
                       api_key_env=api_key_env, price=price_list().find(model), cot=cot)


def single_endpoint(experiment: Experiment, *, model: str, base_url: str,
                    api_key_env: str | None, cot: str = DEFAULT_COT) -> Experiment:
    """Replace the experiment's models with one endpoint given on the command line."""
    config = endpoint_model(model=model, base_url=base_url, api_key_env=api_key_env,
                            params=experiment.default_params, cot=cot)
    return replace(experiment, models=[config])


def with_limits(model: ModelConfig, *, rpm: float | None, tpm: float | None,
                concurrency: int | None) -> ModelConfig:
    """Command-line limits (None leaves a limit as configured, 0 removes it)."""
    if concurrency is not None and concurrency < 1:
        raise PipelineError("--concurrency must be at least 1")
    for flag, value in (("--rpm", rpm), ("--tpm", tpm)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise PipelineError(f"{flag} must be a number >= 0 (0 = no limit), got {value:g}")
    changes: dict[str, Any] = {}
    if rpm is not None:
        changes["rpm"] = rpm or None
    if tpm is not None:
        changes["tpm"] = tpm or None
    if concurrency is not None:
        changes["concurrency"] = concurrency
    return replace(model, **changes)


def override_limits(experiment: Experiment, *, rpm: float | None, tpm: float | None,
                    concurrency: int | None) -> Experiment:
    """Apply command-line limits to every model."""
    models = [with_limits(m, rpm=rpm, tpm=tpm, concurrency=concurrency) for m in experiment.models]
    return replace(experiment, models=models)


def _load_variant_filter(doc: TomlFile, scenarios: list[Scenario]) -> dict[str, list[str]]:
    table = doc.get(doc.data, "variants", "variants", dict, {})
    by_id = {s.id: s for s in scenarios}
    chosen: dict[str, list[str]] = {}
    for scenario_id in table:
        where = f"variants.{scenario_id}"
        if scenario_id not in by_id:
            raise doc.error(where, f"no scenario {scenario_id!r} in this experiment")
        chosen[scenario_id] = doc.text_list(table, where, scenario_id, min_items=1)
        _refuse_repeats(doc, where, chosen[scenario_id])
        for name in chosen[scenario_id]:
            if name not in by_id[scenario_id].variant_names:
                raise doc.error(where, f"scenario {scenario_id!r} has no variant {name!r} "
                                       f"(it has {', '.join(by_id[scenario_id].variant_names)})")
    return chosen


def _load_model(doc: TomlFile, raw: Any, index: int, default_params: dict[str, Any]) -> ModelConfig:
    where = f"models[{index}]"
    if not isinstance(raw, dict):
        raise doc.error(where, "must be a table ([[models]])")
    doc.check_keys(raw, where, _MODEL_KEYS)
    embedded = doc.get(raw, f"{where}.embedded", "embedded", bool, False)
    name = doc.text_field(raw, f"{where}.name", "name")
    urls: list[str] = doc.text_list(raw, f"{where}.base_urls", "base_urls", min_items=1, default=[])
    if "base_url" in raw:
        urls.insert(0, doc.text_field(raw, f"{where}.base_url", "base_url"))
    if not urls and not embedded:
        raise doc.error(f"{where}.base_url", "is required (or set embedded = true)")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise doc.error(f"{where}.base_url", f"must start with http:// or https://, got {url!r}")
    _refuse_repeats(doc, f"{where}.base_urls", [url.rstrip("/") for url in urls])
    limits = {key: doc.get(raw, f"{where}.{key}", key, (int, float), 0) for key in ("rpm", "tpm")}
    for key, value in limits.items():
        if not (math.isfinite(value) and value >= 0):
            raise doc.error(f"{where}.{key}", "must be >= 0 (0 = no limit)")
    concurrency = doc.get(raw, f"{where}.concurrency", "concurrency", int, 8)
    max_attempts = doc.get(raw, f"{where}.max_attempts", "max_attempts", int, 6)
    timeout_s = doc.get(raw, f"{where}.timeout_s", "timeout_s", (int, float), 120.0)
    if concurrency < 1 or max_attempts < 1 or not (math.isfinite(timeout_s) and timeout_s > 0):
        raise doc.error(where, "concurrency and max_attempts must be >= 1 and timeout_s > 0")
    window_s = doc.get(raw, f"{where}.limit_window_s", "limit_window_s", (int, float), 60.0)
    if not (math.isfinite(window_s) and window_s > 0):
        raise doc.error(f"{where}.limit_window_s", "must be > 0 (seconds)")
    cot = doc.text_field(raw, f"{where}.cot", "cot", DEFAULT_COT)
    if cot not in COT_MODES:
        raise doc.error(f"{where}.cot", f"must be one of {', '.join(COT_MODES)}, got {cot!r}")
    batch = doc.get(raw, f"{where}.batch", "batch", bool, False)
    send_back = doc.get(raw, f"{where}.send_reasoning_back", "send_reasoning_back", bool, False)
    if batch and send_back:  # the batch's second round is built from stored reply texts only
        raise doc.error(f"{where}.send_reasoning_back", "is not supported with batch = true")
    return ModelConfig(
        name=name, base_urls=tuple(u.rstrip("/") for u in urls), price=_model_price(doc, raw, where, name, embedded),
        batch=batch, cot=cot, send_reasoning_back=send_back,
        params={**default_params, **_load_params(doc, raw, f"{where}.params")},
        api_key_env=doc.text_field(raw, f"{where}.api_key_env", "api_key_env", None),
        rpm=limits["rpm"] or None, tpm=limits["tpm"] or None, concurrency=concurrency,
        timeout_s=float(timeout_s), max_attempts=max_attempts, embedded=embedded,
        send_seed=doc.get(raw, f"{where}.send_seed", "send_seed", bool, True), limit_window_s=float(window_s))


def _model_price(doc: TomlFile, raw: dict[str, Any], where: str, name: str, embedded: bool) -> Price | None:
    """The entry's own `price`, else the shipped list price; the embedded model is free."""
    listed = FREE if embedded else price_list().find(name)
    if "price" in raw:
        discount = listed.batch_discount if listed else 0.5
        return parse_price(doc, raw["price"], f"{where}.price", discount, f"{doc.path.name} ({where}.price)")
    return listed


def _refuse_repeats(doc: TomlFile, field: str, values: list[str], suffix: str = "",
                    why: str = "each may be listed once") -> None:
    """A name listed twice would plan its jobs twice (or never sample one of them)."""
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            raise doc.error(f"{field}[{index}]{suffix}", f"{value!r} is listed twice (also {field}[{seen[value]}]); "
                                                         f"{why}")
        seen[value] = index


def _load_params(doc: TomlFile, table: dict[str, Any], field: str) -> dict[str, Any]:
    """A params table with every known sampling parameter checked: a bad value must stop the
    run at load, not in the middle of it."""
    params: dict[str, Any] = doc.get(table, field, "params", dict, {})
    for key, value in params.items():
        where = f"{field}.{key}"
        if key in _PARAMS_SET_BY_PIPELINE:
            raise doc.error(where, f"is set by {_PARAMS_SET_BY_PIPELINE[key]}, not in params")
        if key == "stop":
            if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
                raise doc.error(where, "must be a string or a list of strings")
            continue
        if key not in _PARAM_RANGES:
            continue
        kind, low, high = _PARAM_RANGES[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind == "int" and not isinstance(value, int)) or not math.isfinite(value):
            raise doc.error(where, f"must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (f"from {low:g} to {high:g}" if low is not None and high is not None
                      else f">= {low:g}" if low is not None else f"<= {high:g}")
            raise doc.error(where, f"must be {bounds}, got {value!r}")
    return params
