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
    """Best-effort line number of a field such as `models[1].rpm` in TOML source (tomllib
    keeps no positions).

    The source is scanned line by line, following table headers, so `models[1].rpm` is the
    `rpm =` of the second `[[models]]` block, not the first one's. A field that is not written
    out (a missing key) gets the line of its nearest written parent: `models[1].name` points
    at the second `[[models]]` header. Falls back to the first `key =` or `[..key]` anywhere.
    """
    target = _field_path(field)
    best: tuple[int, int] | None = None  # (matched components, line)
    for path, line in _toml_paths(text):
        matched = _common_prefix(path, target)
        if matched == len(path) and (best is None or matched > best[0]):
            best = (matched, line)
            if matched == len(target):
                break
    if best is not None:
        return best[1]
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


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_TRIPLE = re.compile(r'"""|\'\'\'')


def _field_path(field: str) -> tuple[str, ...]:
    """`models[1].params.temperature` -> ('models', '#1', 'params', 'temperature')."""
    path: list[str] = []
    for part in _split_dotted(field):
        path.append(re.sub(r"\[\d+\]", "", part))
        path.extend(f"#{index}" for index in re.findall(r"\[(\d+)\]", part))
    return tuple(path)


def _split_dotted(key: str) -> list[str]:
    parts = re.findall(r"""\s*("[^"]*"|'[^']*'|[^.]+)\s*(?:\.|$)""", key)
    return [part.strip().strip("\"'") for part in parts if part.strip()]


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


def _toml_paths(text: str) -> list[tuple[tuple[str, ...], int]]:
    """(path, line) of every table header and key in `text`, with array-of-tables entries
    numbered (`#0`, `#1`, ...) in the order they appear. Lines inside multi-line strings are
    skipped."""
    found: list[tuple[tuple[str, ...], int]] = []
    arrays: dict[tuple[str, ...], int] = {}  # array-of-tables path -> entries seen
    table: tuple[str, ...] = ()
    open_quote: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if open_quote is not None:
            if line.count(open_quote) % 2 == 1:
                open_quote = None
            continue
        header = _HEADER.match(line)
        key = None if header else _KEY.match(line)
        if header:
            path: tuple[str, ...] = ()
            names = _split_dotted(header.group(2))
            for i, name in enumerate(names):
                path += (name,)
                if i == len(names) - 1 and header.group(1) == "[[":
                    arrays[path] = arrays.get(path, 0) + 1
                if path in arrays:
                    path += (f"#{arrays[path] - 1}",)
            table = path
            found.append((table, number))
        elif key:
            found.append((table + tuple(_split_dotted(key.group(1))), number))
        quotes = _TRIPLE.findall(line)
        if len(quotes) % 2 == 1:
            open_quote = quotes[-1]
    return found
