"""The tree is the pipeline: each stage imports only earlier stages and the common modules.

common (errors, logs, progress) < experiment < store < sampling < grading < report < view < cli.
Two exceptions to plain ordering: the store imports no stage at all (every stage imports
the store, so it must not know any of them), and `local_model` imports only common modules
and is imported only by sampling (which starts it) and the CLI (`pipeline serve`).
Imports are read with `ast`, including imports inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
COMMON = {"pipeline", "pipeline.errors", "pipeline.logs", "pipeline.progress"}
STAGES = ["experiment", "store", "sampling", "grading", "report", "view", "cli"]  # in data-flow order
LOCAL_MODEL = "local_model"
LOCAL_MODEL_USERS = {"sampling", "cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every pipeline module `name` imports, wherever in the file the import is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from pipeline.x import y` where y is itself a module
            found.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known)
    return {module for module in found if module == "pipeline" or module.startswith("pipeline.")}


def stage_of(module: str) -> str:
    """'common', a stage name, or 'local_model'."""
    if module in COMMON:
        return "common"
    top = module.split(".")[1]
    if top == "__main__":
        return "cli"
    if top in STAGES or top == LOCAL_MODEL:
        return top
    raise AssertionError(f"{module}: not in any stage; add it to tests/test_layout.py")


def violation(importer: str, imported: str) -> str | None:
    source, target = stage_of(importer), stage_of(imported)
    if source == target or target == "common":
        return None
    if source == "common":
        return "common modules import no stage"
    if source == LOCAL_MODEL:
        return "local_model imports only common modules"
    if target == LOCAL_MODEL:
        return None if source in LOCAL_MODEL_USERS else "only sampling and the CLI import local_model"
    if source == "store":
        return "the store imports no stage"
    if STAGES.index(target) > STAGES.index(source):
        return f"{source} imports a later stage ({target})"
    return None


def test_every_module_belongs_to_a_stage() -> None:
    for module in all_modules():
        stage_of(module)


def test_imports_follow_the_data_flow() -> None:
    modules = all_modules()
    problems = []
    for name, path in modules.items():
        for imported in sorted(imported_modules(name, path, set(modules))):
            why = violation(name, imported)
            if why:
                problems.append(f"{name} imports {imported}: {why}")
    assert problems == []


def test_the_checker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from pipeline.report.figures import save\n"
                    "from ..grading import stats\nfrom . import writer\n", encoding="utf-8")
    known = {"pipeline.grading.stats", "pipeline.store.writer"}
    found = imported_modules("pipeline.store.mod", path, known)
    assert found == {"pipeline.report.figures", "pipeline.grading", "pipeline.grading.stats",
                     "pipeline.store", "pipeline.store.writer"}
    assert violation("pipeline.store.mod", "pipeline.report.figures") == "the store imports no stage"
    assert violation("pipeline.store.mod", "pipeline.experiment.config") == "the store imports no stage"
    assert violation("pipeline.sampling.lane", "pipeline.grading.judge") == "sampling imports a later stage (grading)"
    assert violation("pipeline.report.data", "pipeline.local_model.server") is not None
    assert violation("pipeline.local_model.server", "pipeline.store.schema") is not None
    assert violation("pipeline.errors", "pipeline.store") is not None
    assert violation("pipeline.cli", "pipeline.local_model.server") is None
    assert violation("pipeline.grading.grade", "pipeline.sampling.engine") is None


@pytest.mark.parametrize("package", sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()))
def test_each_package_says_what_it_owns(package: str) -> None:
    tree = ast.parse((PACKAGE / package / "__init__.py").read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree)
    assert docstring, f"pipeline/{package}/__init__.py has no docstring"
    assert "import" in docstring.lower(), f"pipeline/{package}/__init__.py does not say what it may import"


def test_every_directory_with_modules_is_a_package() -> None:
    for directory in {path.parent for path in PACKAGE.rglob("*.py")}:
        assert (directory / "__init__.py").is_file(), directory
