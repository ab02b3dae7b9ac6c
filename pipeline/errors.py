"""User-facing errors: one line that says what is wrong and where."""

from __future__ import annotations

import re
from pathlib import Path


class PipelineError(Exception):
    """An error the CLI prints as one line and exits non-zero on (no traceback)."""


class ConfigError(PipelineError):
    """Bad input file: carries the file, the line (when known) and the field."""

    def __init__(self, path: Path | str, field: str | None, message: str, line: int | None = None):
        self.path = str(path)
        self.field = field
        self.line = line
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {what}{self.message}"


def find_key_line(text: str, field: str) -> int | None:
    """Best-effort line number of a dotted field in TOML source (tomllib keeps no positions).

    Looks for the last path component as a key (`key =`) or table header (`[a.key]`),
    which is what a reader needs to jump to the right place.
    """
    key = re.sub(r"\[\d+\]$", "", field.split(".")[-1])
    patterns = [
        re.compile(rf"^\s*{re.escape(key)}\s*=", re.MULTILINE),
        re.compile(rf"^\s*\[+[^\]]*\b{re.escape(key)}\]+\s*$", re.MULTILINE),
    ]
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            return text.count("\n", 0, match.start()) + 1
    return None
