"""The writer's key lookups at scale: a job replaced by its seed range, a prompt stored once
whether or not the writer's filter of stored ids has seen it (pipeline/store/prompts.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipeline.store import prompts
from pipeline.store.prompts import BloomFilter, RecentIds, StoredPrompts
from pipeline.store.writer import Outcome, Store
from tests.conftest import query


def job(job_id: str, seed: int | None, status: str = "done") -> dict[str, Any]:
    return {"job_id": job_id, "run_id": "r1", "scenario": "s", "variant": "v", "branch": "sampled",
            "model": "m", "seed": seed, "status": status, "error": None if status == "done" else "boom"}


def prompt(text: str) -> dict[str, Any]:
    return {"prompt_id": hashlib.md5(text.encode()).hexdigest(), "parent_id": None,
            "messages": [{"role": "user", "content": text}]}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    writer = Store(tmp_path / "db.duckdb")
    writer.initialize()
    yield writer
    writer.close()


def test_bloom_filter_never_says_no_to_a_stored_id_and_rarely_yes_to_another() -> None:
    known = BloomFilter(capacity=20_000)
    stored = [hashlib.md5(f"stored {i}".encode()).hexdigest() for i in range(20_000)]
    for key in stored:
        known.add(key)
    assert all(key in known for key in stored)
    others = [hashlib.md5(f"other {i}".encode()).hexdigest() for i in range(100_000)]
    false_maybes = sum(key in known for key in others)
    assert false_maybes < 100   # designed for ~1 in 15,000 at capacity: ~7 expected


@pytest.mark.parametrize("seeds", [(5, 5), (5, 900), (None, None)])
def test_a_failed_job_is_replaced_whatever_the_batch_seed_range(store: Store, seeds: tuple[int | None, ...]) -> None:
    store.write_batch([Outcome({"jobs": [job("a", seeds[0], "failed")]})])
    store.write_batch([Outcome({"jobs": [job("z", 100)]}), Outcome({"jobs": [job("a", seeds[0])]}),
                       Outcome({"jobs": [job("b", seeds[1])]})])
    assert query(store.path, "SELECT job_id, status FROM jobs ORDER BY job_id") == [
        ("a", "done"), ("b", "done"), ("z", "done")]


def test_a_prompt_is_stored_once_across_batches_writers_and_a_failed_commit(store: Store, tmp_path: Path) -> None:
    store.write_batch([Outcome({"prompts": [prompt("opening"), prompt("one")]})])
    store.write_batch([Outcome({"prompts": [prompt("opening"), prompt("two")]})])   # seen lately
    again = Store(store.path)   # a later run: its filter is loaded from the table
    try:
        again.write_batch([Outcome({"prompts": [prompt("one"), prompt("three")]})])
        with pytest.raises(duckdb.Error):   # a batch DuckDB refuses: nothing of it is stored
            again.write_batch([Outcome({"prompts": [prompt("four")], "jobs": [{"job_id": "x", "seed": "NaN"}]})])
        again.write_batch([Outcome({"prompts": [prompt("four"), prompt("two")]})])
    finally:
        again.close()
    assert query(store.path, "SELECT count(*), count(DISTINCT prompt_id) FROM prompts") == [(5, 5)]


def test_the_filters_grow_past_their_size_without_reading_the_table_again(store: Store, monkeypatch: Any) -> None:
    known = StoredPrompts()
    known.MIN_CAPACITY = 4
    known._recent = RecentIds(limit=1)   # nothing skipped as "committed lately": the filters decide
    loads: list[int] = []
    load = known._load
    monkeypatch.setattr(known, "_load", lambda con: loads.append(1) or load(con))
    rows = [prompt(f"p{i}") for i in range(20)]
    for start in range(0, 20, 3):
        with store.connect() as con:
            new, maybe = known.split(con, rows[start:start + 3])
            store.insert_rows(con, "prompts", new, known_new=True)
            store.insert_rows(con, "prompts", maybe)
        known.committed([row["prompt_id"] for row in new + maybe])
    known._recent = RecentIds()
    with store.connect() as con:
        new, maybe = known.split(con, rows)   # every one is stored: none may be inserted unchecked
    assert new == [] and len(maybe) == 20
    assert len(loads) == 1 and len(known._filters) >= 3   # 4 + 8 + 16 ids of room, one scan
    assert query(store.path, "SELECT count(*) FROM prompts") == [(20,)]


@pytest.mark.parametrize("extra", [
    [{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "Ünïcode \"quoted\"\n"}],
    [{"role": "user", "content": ""}],
])
def test_an_extended_prompt_has_the_id_of_its_whole_conversation(extra: list[dict[str, Any]]) -> None:
    opening = [{"role": "system", "content": "You are a trader."}, {"role": "user", "content": "Go on, 42 ☃"}]
    parent = prompts.root(opening)
    child = prompts.extend(parent, opening + extra)
    assert parent.prompt_id == prompts.prompt_id(opening)
    assert child.prompt_id == prompts.prompt_id(opening + extra) and child.messages == extra
    assert child.parent_id == parent.prompt_id
