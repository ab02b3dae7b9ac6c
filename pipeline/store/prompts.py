"""Requests stored once: content-addressed prompts that responses refer to by id.

A job's final request is its cell's opening (shared by every job and branch of the
scenario/variant) plus two messages, so it is stored as a prompt row naming the opening as
its parent and holding only those two messages. The id is the md5 of the whole message
list's JSON (the same text DuckDB stores), so one conversation always has one id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

Message = dict[str, Any]   # {"role": ..., "content": ...}; the store imports no stage


def prompt_id(messages: list[Message]) -> str:
    return hashlib.md5(orjson.dumps(messages), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Prompt:
    prompt_id: str
    parent_id: str | None
    messages: list[Message]   # after the parent's

    def row(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "parent_id": self.parent_id, "messages": self.messages}


def root(messages: list[Message]) -> Prompt:
    return Prompt(prompt_id(messages), None, messages)


def extend(parent: Prompt, full: list[Message]) -> Prompt:
    """`full` (which starts with the parent's messages) stored as the parent plus the rest."""
    return Prompt(prompt_id(full), parent.prompt_id, full[len(parent.messages):])


class RecentIds:
    """Ids the writer has committed lately, so a batch does not send the same opening to DuckDB
    a thousand times (DuckDB still skips any id it has: this only saves work). Bounded: it is
    emptied when full, so memory stays flat however many distinct prompts a run makes."""

    def __init__(self, limit: int = 50_000):
        self.limit = limit
        self._ids: set[str] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def add_all(self, keys: list[str]) -> None:
        if len(self._ids) + len(keys) > self.limit:
            self._ids.clear()
        self._ids.update(keys)
