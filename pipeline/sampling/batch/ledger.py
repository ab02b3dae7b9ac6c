"""Batches in DuckDB: each step (prepared, uploaded, created, polled, collected) is written the
moment it happens, through the one writer, so a killed run's successor knows exactly where
every batch stands."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any

import duckdb

from pipeline.store.queries import sql
from pipeline.store.writer import Outcome, RunCounters, Store, utc_now

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class BatchRecord:
    """One `batches` row."""

    batch_key: str
    run_id: str
    model: str
    base_url: str
    round: str
    requests: int
    reserved_usd: float
    status: str = "preparing"
    input_file_id: str | None = None
    batch_id: str | None = None
    completed: int | None = None
    failed: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    error: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    collected_at: str | None = None

    @classmethod
    def new(cls, run_id: str, model: str, base_url: str, round: str, requests: int, reserved_usd: float) -> BatchRecord:
        return cls(f"pb-{uuid.uuid4().hex[:20]}", run_id, model, base_url, round, requests, reserved_usd,
                   created_at=utc_now())

    @property
    def filename(self) -> str:
        return f"{self.batch_key}.jsonl"

    def adopt(self, batch: dict[str, Any]) -> None:
        """Take what the API says of the batch (a Batch object)."""
        counts = batch.get("request_counts") or {}
        errors = (batch.get("errors") or {}).get("data") or []
        self.batch_id = str(batch.get("id") or self.batch_id)
        self.status = str(batch.get("status") or self.status)
        self.completed, self.failed = counts.get("completed"), counts.get("failed")
        self.output_file_id = batch.get("output_file_id") or self.output_file_id
        self.error_file_id = batch.get("error_file_id") or self.error_file_id
        self.error = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)[:1000] or None

    def row(self) -> dict[str, Any]:
        self.updated_at = utc_now()
        return asdict(self)


def save(store: Store, record: BatchRecord, outcomes: list[Outcome] | None = None,
         counters: RunCounters | None = None, requests: list[dict[str, Any]] | None = None) -> None:
    """Write the batch's row (with its request lines or collected results) in one transaction."""
    rows: dict[str, list[dict[str, Any]]] = {"batches": [record.row()]}
    if requests:
        rows["batch_requests"] = requests
    store.write_batch([*(outcomes or []), Outcome(rows)], counters)


def open_batches(con: duckdb.DuckDBPyConnection, models: list[str]) -> list[BatchRecord]:
    """Batches of these models not collected yet, oldest first."""
    result = con.execute(sql("open_batches"), [models])
    names = [column[0] for column in result.description or []]
    known = {f.name for f in fields(BatchRecord)}
    return [BatchRecord(**{name: value for name, value in zip(names, row) if name in known})
            for row in result.fetchall()]


def in_flight(con: duckdb.DuckDBPyConnection) -> set[str]:
    """custom_ids in batches not collected yet: never submitted again."""
    return {custom_id for (custom_id,) in con.execute(sql("in_flight_requests")).fetchall()}


def initial_replies(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str]]:
    """job_id -> (run_id, text) of sampled jobs' collected initial replies."""
    return {job_id: (run_id, text) for job_id, run_id, text in con.execute(sql("batch_initial_replies")).fetchall()}


def request_lines(con: duckdb.DuckDBPyConnection, batch_key: str) -> list[tuple[str, str, str, str, str]]:
    """(custom_id, job_id, call, run_id, line) of one batch."""
    return [tuple(row) for row in con.execute(sql("batch_request_lines"), [batch_key]).fetchall()]
