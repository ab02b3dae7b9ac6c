"""find_key_line: the file:line of a field in TOML source, array-of-tables entries included."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError, find_key_line
from pipeline.experiment.config import load_experiment
from tests.conftest import Workspace

SOURCE = '''\
name = "x"
branches = ["sampled", "refusal"]
[params]
max_tokens = 32

[[models]]
name = "first"
rpm = 5
concurrency = 2

[[models]]                      # second model
name = "second"
rpm = -1
[models.params]
temperature = 1

[variants]
car_sales = ["default"]
notes = """
[[models]]
rpm = 3
"""
[[models]]
"rpm" = 4
params.temperature = 0.5
'''


@pytest.mark.parametrize(("field", "line"), [
    ("name", 1),
    ("params.max_tokens", 4),
    ("models[0]", 6),
    ("models[0].rpm", 8),
    ("models[0].concurrency", 9),
    ("models[1]", 11),
    ("models[1].rpm", 13),                     # was 8: the first model's rpm
    ("models[1].base_url", 11),                # missing key: the block it is missing from
    ("models[1].params.temperature", 15),
    ("models[2]", 23),                         # the [[models]] inside the string is not a block
    ("models[2].rpm", 24),                     # quoted key
    ("models[2].params.temperature", 25),      # dotted key
    ("branches[1]", 2),                        # inline array: the key's line
    ("variants.car_sales", 18),
    ("nowhere", None),
])
def test_find_key_line(field: str, line: int | None) -> None:
    assert find_key_line(SOURCE, field) == line


def test_error_in_the_second_model_points_at_its_block(workspace: Workspace) -> None:
    second = 'name = "b"\nbase_url = "http://127.0.0.1:9/v1"\nrpm = -1\n'
    path = workspace.write_experiment("http://127.0.0.1:9/v1", model_extra=f"rpm = 5\n\n[[models]]\n{second}")
    lines = path.read_text().splitlines()
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert info.value.field == "models[1].rpm"
    assert info.value.line is not None and lines[info.value.line - 1] == "rpm = -1"
    assert f"{path}:{info.value.line}: field 'models[1].rpm'" in str(info.value)
