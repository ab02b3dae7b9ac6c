"""Experiment files and command-line overrides."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.experiment.config import load_experiment, override_limits, single_endpoint
from tests.conftest import REPO, Workspace


def test_experiment_loads_models_and_defaults(workspace: Workspace) -> None:
    path = workspace.write_experiment("http://127.0.0.1:9/v1", n=3, model_extra="rpm = 600\napi_key_env = 'K'")
    experiment = load_experiment(path)
    assert [s.id for s in experiment.scenarios] == ["demo", "plain"]
    assert experiment.samples_per_cell == 3
    model = experiment.models[0]
    assert model.rpm == 600 and model.tpm is None and model.api_key_env == "K"
    assert model.params == {"temperature": 1.0, "max_tokens": 32}
    assert model.limit_window_s == 60   # rpm/tpm are per minute unless a gateway's window differs


def test_single_endpoint_and_limit_overrides(workspace: Workspace) -> None:
    experiment = load_experiment(workspace.write_experiment("http://127.0.0.1:9/v1"))
    replaced = single_endpoint(experiment, model="m", base_url="http://x/v1/", api_key_env=None)
    replaced = override_limits(replaced, rpm=3000, tpm=0, concurrency=7)
    (model,) = replaced.models
    assert (model.name, model.base_urls, model.rpm, model.tpm, model.concurrency) == ("m", ("http://x/v1",), 3000, None, 7)


@pytest.mark.parametrize("model_extra, field", [
    ("rpm = -1", "models[0].rpm"),
    ("temperature = 1", "models[0].temperature"),
    ("max_attempts = 'many'", "models[0].max_attempts"),
    ("limit_window_s = 0", "models[0].limit_window_s"),
])
def test_bad_model_fields_are_named(workspace: Workspace, model_extra: str, field: str) -> None:
    path = workspace.write_experiment("http://127.0.0.1:9/v1", model_extra=model_extra)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert f"field '{field}'" in str(info.value) and str(path) in str(info.value)


def test_unknown_scenario_and_variant(workspace: Workspace) -> None:
    path = workspace.write_experiment("http://127.0.0.1:9/v1", extra='scenarios = ["nope"]')
    with pytest.raises(ConfigError, match="scenario 'nope' not found"):
        load_experiment(path)
    path = workspace.write_experiment("http://127.0.0.1:9/v1", extra='[variants]\ndemo = ["boat"]')
    with pytest.raises(ConfigError, match="has no variant 'boat'"):
        load_experiment(path)


def test_default_experiment_is_valid() -> None:
    experiment = load_experiment(REPO / "scenarios" / "experiments" / "default.toml")
    assert experiment.models and experiment.scenarios


def test_zero_concurrency_is_a_clear_error() -> None:
    from pipeline.errors import PipelineError
    from pipeline.experiment.config import endpoint_model, with_limits

    model = endpoint_model(model="m", base_url="http://x/v1/", api_key_env=None, params={"temperature": 0})
    assert model.base_urls == ("http://x/v1",)
    with pytest.raises(PipelineError, match="--concurrency must be at least 1"):
        with_limits(model, rpm=None, tpm=None, concurrency=0)
    assert with_limits(model, rpm=0, tpm=100, concurrency=None).tpm == 100
