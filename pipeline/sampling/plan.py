"""Expand an experiment into cells and stream its pending jobs.

A cell is (scenario, variant, branch, model); a job is one seed of a cell. Only cells
are held in memory: jobs are generated lazily, so planning a million jobs costs a few
hundred cell objects and one bit per job for the "already done" bitmap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from pipeline.experiment.config import Experiment, ModelConfig
from pipeline.experiment.scenarios import Conversation, Scenario, content_hash
from pipeline.store.queries import sql

_FETCH_CHUNK = 50_000

JOB_ID_HEX = 32


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    variant: str
    branch: str
    model: ModelConfig
    conversation: Conversation
    n: int
    phrasing_keys: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.scenario.id, self.variant, self.branch, self.model.name)

    def phrasing(self, seed: int) -> int | None:
        """Fixed branches rotate through their phrasings so each gets ~n/k samples."""
        return None if self.branch == "sampled" else seed % len(self.phrasing_keys)

    def job_id(self, seed: int) -> str:
        key = self.phrasing_keys[seed % len(self.phrasing_keys)]
        return hashlib.sha256(f"{key}:{seed}".encode()).hexdigest()[:JOB_ID_HEX]

    def job(self, seed: int) -> Job:
        return Job(self, seed, self.job_id(seed), self.phrasing(seed))


@dataclass(frozen=True, slots=True)
class Job:
    cell: Cell
    seed: int
    job_id: str
    phrasing: int | None

    def fixed_response(self) -> str | None:
        if self.phrasing is None:
            return None
        return self.cell.conversation.fixed_response(self.cell.branch, self.phrasing)


def plan_cells(experiment: Experiment, n: int | None = None) -> list[Cell]:
    """Every cell of the experiment grid, in a stable order."""
    samples = n if n is not None else experiment.samples_per_cell
    cells = []
    for model in experiment.models:
        for scenario in experiment.scenarios:
            for variant in experiment.variants_of(scenario):
                conversation = scenario.render(variant, cot_instruction=model.cot_instruction)
                for branch in experiment.branches:
                    keys = _phrasing_keys(scenario, variant, branch, model, conversation)
                    cells.append(Cell(scenario, variant, branch, model, conversation, samples, keys))
    return cells


def _phrasing_keys(scenario: Scenario, variant: str, branch: str, model: ModelConfig,
                   conversation: Conversation) -> tuple[str, ...]:
    """One content hash per phrasing: exactly what changes this cell's requests."""
    base: dict[str, Any] = {"scenario": scenario.id, "variant": variant, "branch": branch,
            "opening": conversation.opening(), "trigger": conversation.trigger,
            "model": model.identity()}
    if branch == "sampled" and model.send_reasoning_back:   # absent by default: old ids stay valid
        base["send_reasoning_back"] = True
    return tuple(content_hash({**base, "fixed": conversation.fixed_response(branch, p)})
                 for p in range(conversation.phrasings(branch)))


class DoneIndex:
    """Which seeds of each cell are already done, as one bit per planned job."""

    def __init__(self, cells: Iterable[Cell]):
        self._bits = {cell.key: bytearray((cell.n + 7) // 8) for cell in cells}
        self._cells = {cell.key: cell for cell in cells}
        self.count = 0

    def add(self, key: tuple[str, str, str, str], seed: int, job_id: str) -> None:
        """Mark a stored done job; ignored unless it matches the current plan exactly."""
        cell = self._cells.get(key)
        if cell is None or not 0 <= seed < cell.n or cell.job_id(seed) != job_id:
            return
        bits = self._bits[key]
        if not bits[seed >> 3] & (1 << (seed & 7)):
            bits[seed >> 3] |= 1 << (seed & 7)
            self.count += 1

    def is_done(self, cell: Cell, seed: int) -> bool:
        return bool(self._bits[cell.key][seed >> 3] & (1 << (seed & 7)))


def pending_jobs(cells: list[Cell], done: DoneIndex) -> Iterator[Job]:
    """Jobs not yet done, seed-major so every cell fills evenly if a run stops early."""
    longest = max((cell.n for cell in cells), default=0)
    for seed in range(longest):
        for cell in cells:
            if seed < cell.n and not done.is_done(cell, seed):
                yield cell.job(seed)


def load_done(con: duckdb.DuckDBPyConnection, cells: Sequence[Cell]) -> DoneIndex:
    """Which planned jobs are already done (streamed: memory is one bit per planned job)."""
    done = DoneIndex(cells)
    con.execute(sql("done_jobs"))
    while rows := con.fetchmany(_FETCH_CHUNK):
        for scenario, variant, branch, model, seed, job_id in rows:
            done.add((scenario, variant, branch, model), seed, job_id)
    return done
