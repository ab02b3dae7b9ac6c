"""A wheel carries the files the pipeline reads at run time: judge prompts, every SQL
script (migrations included) and the viewer's script and style sheet. Without them a
`pip install .` (not -e) cannot grade with the LLM judge, open a database or show a page."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_wheel_contains_prompts_and_sql(tmp_path: Path) -> None:
    # Built from a copy: a build in the repo leaves build/lib behind, whose stale copies
    # would end up in the next wheel and hide a missing package-data entry.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-w", str(out), "."], capture_output=True, text=True, timeout=300, cwd=source)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {path.relative_to(REPO).as_posix()
                for pattern in ("pipeline/grading/prompts/*.md", "pipeline/store/sql/**/*.sql",
                                "pipeline/experiment/prices.toml", "pipeline/view/static/*")
                for path in REPO.glob(pattern)}
    assert {name for name in expected if "/migrations/" in name}, "no migrations found in the source tree"
    assert {name for name in expected if name.endswith(".md")}, "no prompts found in the source tree"
    assert "pipeline/experiment/prices.toml" in expected, "no price list found in the source tree"
    assert {name for name in expected if name.endswith(".js")}, "no viewer script found in the source tree"
    assert expected - names == set()
