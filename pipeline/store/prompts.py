"""Requests stored once: content-addressed prompts that responses refer to by id.

A job's final request is its cell's opening (shared by every job and branch of the
scenario/variant) plus two messages, so it is stored as a prompt row naming the opening as
its parent and holding only those two messages. The id is the md5 of the whole message
list's JSON (the same text DuckDB stores), so one conversation always has one id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson

from pipeline.store.queries import sql

_FETCH_CHUNK = 50_000
Message = dict[str, Any]   # {"role": ..., "content": ...}; the store imports no stage


def prompt_id(messages: list[Message]) -> str:
    return hashlib.md5(orjson.dumps(messages), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Prompt:
    prompt_id: str
    parent_id: str | None
    messages: list[Message]   # after the parent's
    # A root's md5 state over its JSON without the closing "]": a child's id then hashes only
    # the child's own messages (~1 KB) on top of the opening's (~5 KB), once per job.
    open_md5: Any = field(default=None, compare=False, repr=False)

    def row(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "parent_id": self.parent_id, "messages": self.messages}


def root(messages: list[Message]) -> Prompt:
    dumped = orjson.dumps(messages)
    state = hashlib.md5(dumped[:-1], usedforsecurity=False)
    whole = state.copy()
    whole.update(b"]")
    return Prompt(whole.hexdigest(), None, messages, state)


def extend(parent: Prompt, full: list[Message]) -> Prompt:
    """`full` (which starts with the root `parent`'s messages) stored as the parent plus the rest;
    its id is `prompt_id(full)`, hashed from where the parent's JSON left off."""
    rest = full[len(parent.messages):]
    if parent.open_md5 is None or not parent.messages or not rest:
        return Prompt(prompt_id(full), parent.prompt_id, rest)
    state = parent.open_md5.copy()
    state.update(b"," + orjson.dumps(rest)[1:])   # "[m, ...]" of the rest goes on as ",m, ...]"
    return Prompt(state.hexdigest(), parent.prompt_id, rest)


class RecentIds:
    """Ids the writer has committed lately, so a batch does not send the same opening to DuckDB
    a thousand times. Bounded: it is emptied when full, so memory stays flat however many
    distinct prompts a run makes."""

    def __init__(self, limit: int = 50_000):
        self.limit = limit
        self._ids: set[str] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def add_all(self, keys: list[str]) -> None:
        if len(self._ids) + len(keys) > self.limit:
            self._ids.clear()
        self._ids.update(keys)


class BloomFilter:
    """Which ids MAY be stored: never a false "no", a false "maybe" about once in 15,000 (20 bits
    and 13 hashes per id, up to `capacity` ids). A million ids take 2.5 MB where a set of them
    would take ~100 MB."""

    BITS_PER_ID = 20
    HASHES = 13

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.count = 0
        self._bits = capacity * self.BITS_PER_ID
        self._array = bytearray((self._bits + 7) // 8)

    def _positions(self, key: str) -> list[int]:
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        first, step = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
        return [(first + i * step) % self._bits for i in range(self.HASHES)]

    def add(self, key: str) -> None:
        for position in self._positions(key):
            self._array[position >> 3] |= 1 << (position & 7)
        self.count += 1

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and all(self._array[p >> 3] & (1 << (p & 7)) for p in self._positions(key))


class StoredPrompts:
    """The writer's knowledge of which prompt ids the database holds, so that a batch's new
    prompts are inserted without DuckDB checking them against the whole `prompts` table: that
    check reads every stored id (a million-job run: +10 MB per batch, growing with the table).

    Only ids the filters say MAY be stored are checked by DuckDB. The first filter is filled
    from the table (one scan, at the first batch and after a failed commit); ids committed
    since go to the newest filter, and a full one is followed by one twice its size. Reading
    the table again instead, when the filter filled 260k ids into a million-job run, was that
    run's highest memory peak (+15 MB)."""

    MIN_CAPACITY = 1 << 18

    def __init__(self) -> None:
        self._filters: list[BloomFilter] = []
        self._recent = RecentIds()   # committed lately: not sent to DuckDB at all

    def split(self, con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(surely new rows, rows that may be stored already); rows committed lately are dropped."""
        rows = [row for row in rows if row.get("prompt_id") not in self._recent]
        if not self._filters:
            self._filters = [self._load(con)]
        new: list[dict[str, Any]] = []
        maybe: list[dict[str, Any]] = []
        for row in rows:
            key = row.get("prompt_id")
            (maybe if any(key in known for known in self._filters) else new).append(row)
        return new, maybe

    def _load(self, con: duckdb.DuckDBPyConnection) -> BloomFilter:
        """A filter of every stored id, streamed from the table (room for twice as many)."""
        (stored,) = con.execute(sql("count_prompts")).fetchone() or (0,)
        known = BloomFilter(max(self.MIN_CAPACITY, 2 * int(stored)))
        con.execute(sql("prompt_ids"))
        while chunk := con.fetchmany(_FETCH_CHUNK):
            for (key,) in chunk:
                known.add(key)
        return known

    def committed(self, ids: list[str]) -> None:
        newest = self._filters[-1]
        for key in ids:
            if newest.count >= newest.capacity:
                newest = BloomFilter(2 * newest.capacity)
                self._filters.append(newest)
            newest.add(key)
        self._recent.add_all(ids)

    def forget(self) -> None:
        """After a failed commit: what is stored is no longer certain; load again next time."""
        self._filters = []
