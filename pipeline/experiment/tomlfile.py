"""Typed reads from a parsed TOML file that fail with file, line and field."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, cast

from pipeline.errors import ConfigError, find_key_line

_MISSING = object()


class TomlFile:
    """A parsed TOML document that remembers its source, so errors can point into it."""

    def __init__(self, path: Path, text: str, data: dict[str, Any]):
        self.path = path
        self.text = text
        self.data = data

    @classmethod
    def load(cls, path: Path) -> TomlFile:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(path, None, f"cannot read file ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            raw = path.read_bytes()
            raise ConfigError(path, None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                                          "save the file as UTF-8", line=raw.count(b"\n", 0, exc.start) + 1) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            at = re.search(r"\(at line (\d+)", str(exc))
            line = int(at.group(1)) if at else None
            message = str(exc).split(" (at ")[0]
            raise ConfigError(path, None, f"invalid TOML: {message}", line=line) from None
        return cls(path, text, data)

    def error(self, field: str, message: str) -> ConfigError:
        return ConfigError(self.path, field, message, line=find_key_line(self.text, field))

    def get(self, table: dict[str, Any], field: str, key: str, kind: type | tuple[type, ...],
            default: Any = _MISSING) -> Any:
        """Read `table[key]` checking its type; `field` is the dotted name used in errors."""
        if key not in table:
            if default is _MISSING:
                raise self.error(field, "is required but missing")
            return default
        value = table[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.error(field, f"must be a number, got {value!r}")
        if not isinstance(value, kind):
            raise self.error(field, f"must be {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def text_field(self, table: dict[str, Any], field: str, key: str, default: Any = _MISSING) -> str:
        value = self.get(table, field, key, str, default)
        if isinstance(value, str) and value is not default and not value.strip():
            raise self.error(field, "must not be empty")
        return cast(str, value)

    def text_list(self, table: dict[str, Any], field: str, key: str, min_items: int = 0,
                  default: Any = _MISSING) -> list[str]:
        values = self.get(table, field, key, list, default)
        if values is default:
            return cast(list[str], values)
        for index, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise self.error(f"{field}[{index}]", "must be a non-empty string")
        if len(values) < min_items:
            raise self.error(field, f"needs at least {min_items} item(s), got {len(values)}")
        return cast(list[str], values)

    def check_keys(self, table: dict[str, Any], prefix: str, allowed: set[str]) -> None:
        """Reject unknown keys: a typo in a config file must not be silently ignored."""
        for key in table:
            if key not in allowed:
                field = f"{prefix}.{key}" if prefix else key
                raise self.error(field, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list",
             dict: "a table", bool: "true or false"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)
