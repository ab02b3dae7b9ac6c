"""Shared fixtures: fixture scenarios, experiment files pointing at a fake server, CLI runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_SCENARIOS = Path(__file__).parent / "fixtures" / "scenarios"


@dataclass
class Workspace:
    """A scenarios dir + experiment file + database path in a temp dir."""

    root: Path

    @property
    def scenarios(self) -> Path:
        return self.root / "scenarios"

    @property
    def experiment(self) -> Path:
        return self.root / "scenarios" / "experiments" / "exp.toml"

    @property
    def db(self) -> Path:
        return self.root / "results.duckdb"

    def write_experiment(self, base_url: str, *, n: int = 4, concurrency: int = 4, extra: str = "",
                         model_extra: str = "") -> Path:
        self.experiment.parent.mkdir(parents=True, exist_ok=True)
        self.experiment.write_text(
            f'name = "test"\nsamples_per_cell = {n}\n{extra}\n'
            f'[params]\nmax_tokens = 32\n\n'
            f'[[models]]\nname = "fake-model"\nbase_url = "{base_url}"\n'
            f"concurrency = {concurrency}\n{model_extra}\n")
        return self.experiment

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `python -m pipeline` as a real process, as a user would."""
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"pipeline {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def sample(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return self.cli("sample", "--experiment", str(self.experiment), "--db", str(self.db), *args, **kwargs)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    shutil.copytree(FIXTURE_SCENARIOS, tmp_path / "scenarios")
    return Workspace(tmp_path)


def query(db: Path, sql: str) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
