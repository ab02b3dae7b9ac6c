"""Named SQL statements from `sql/queries.sql`, so no module writes SQL inline."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_TRAILING_COMMENTS = re.compile(r"(?:\s*^--[^\n]*$)+\s*\Z", re.MULTILINE)  # a section heading after a statement


@cache
def _all() -> dict[str, str]:
    text = resources.files("pipeline.store").joinpath("sql", "queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)[1:]
    return {name: _TRAILING_COMMENTS.sub("", body).strip().rstrip(";") for name, body in zip(parts[::2], parts[1::2])}


def sql(name: str) -> str:
    """The statement called `name` (KeyError names a statement that does not exist)."""
    return _all()[name]
