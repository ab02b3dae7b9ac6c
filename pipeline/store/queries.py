"""Named SQL statements from `sql/queries.sql`, so no module writes SQL inline."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _all() -> dict[str, str]:
    text = resources.files("pipeline.store").joinpath("sql", "queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)[1:]
    return {name: _statement(body) for name, body in zip(parts[::2], parts[1::2])}


def _statement(body: str) -> str:
    """A statement without the comment lines that follow it (e.g. the next section's header)
    and without its final semicolon."""
    lines = body.strip().splitlines()
    while lines and lines[-1].lstrip().startswith("--"):
        lines.pop()
    return "\n".join(lines).strip().rstrip(";")


def sql(name: str) -> str:
    """The statement called `name` (KeyError names a statement that does not exist)."""
    return _all()[name]
