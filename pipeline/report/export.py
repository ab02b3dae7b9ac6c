"""`pipeline export`: the final responses as files other tools read as one table.

One row per final response: its cell, phrasing, seed, texts (initial reply, trigger, final
reply), the CoT split, usage, every judge's newest labels as columns `<judge>_output_label`,
`<judge>_cot_label`, `<judge>_cot_present`, and the newest human label. Parquet is written
hive-partitioned by scenario and model (`scenario=…/model=…/*.parquet`) so pandas, Polars,
DuckDB, Spark and Hugging Face `datasets` read the folder as one table; CSV and JSONL are one
file each. DuckDB's COPY writes them: no row passes through Python.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import duckdb

from pipeline.errors import PipelineError
from pipeline.store.connection import open_reader
from pipeline.store.queries import sql

FORMATS = ("parquet", "csv", "jsonl")
# Bounded memory however large the database: what does not fit spills to a folder inside --out
# (a million responses with DuckDB's default limit, 80% of RAM, peaked at 3.97 GB).
EXPORT_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "memory_limit": "256MB", "preserve_insertion_order": False}
SPLIT_JUDGE = "rule"   # whose CoT split fills cot_present / cot_text / output_text when several judged


def export(db: Path, out: Path, fmt: str, judge: str | None = None) -> tuple[Path, int]:
    """Write the export; returns where and how many rows."""
    if fmt not in FORMATS:
        raise PipelineError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out}: is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    spill = Path(tempfile.mkdtemp(prefix=".export-spill-", dir=out))
    try:
        con = open_reader(db, config={**EXPORT_CONFIG, "temp_directory": str(spill)})
        try:
            judges = [name for (name,) in con.execute(sql("export_judges"), {"judge": judge}).fetchall()]
            if judge is not None and not judges:
                raise PipelineError(f"--judge {judge}: no labels by that judge in {db} (run `pipeline grade` first)")
            target = out if fmt == "parquet" else out / f"final_responses.{'csv' if fmt == 'csv' else 'jsonl'}"
            options = {"parquet": "FORMAT parquet, PARTITION_BY (scenario, model), OVERWRITE_OR_IGNORE true",
                       "csv": "FORMAT csv, HEADER true", "jsonl": "FORMAT json"}[fmt]
            quoted = str(target).replace("'", "''")
            (rows,) = con.execute(f"COPY ({export_select(judges)}) TO '{quoted}' ({options})").fetchone() or (0,)
        finally:
            con.close()
    except duckdb.IOException as exc:
        raise PipelineError(f"--out {out}: cannot be written ({str(exc).splitlines()[0]})") from None
    except duckdb.OutOfMemoryException as exc:
        raise PipelineError(f"export ran out of memory ({str(exc).splitlines()[0]}); "
                            f"free some memory or disk for {spill}") from None
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return target, int(rows)


def export_select(judges: list[str]) -> str:
    """The export query with each judge's labels joined as columns of their own; the CoT split
    (cot_present / cot_text / output_text) is SPLIT_JUDGE's when it judged, else the first's."""
    split = SPLIT_JUDGE if SPLIT_JUDGE in judges else (judges[0] if judges else None)
    columns, joins = [], []
    for index, name in enumerate(judges):
        alias, prefix = f"j{index}", column_prefix(name)
        joins.append(f"LEFT JOIN (SELECT * FROM ({sql('judge_labels')}) WHERE judge = {_literal(name)}) {alias} "
                     f"ON {alias}.job_id = e.job_id")
        columns += [f'{alias}.output_label AS "{prefix}_output_label"', f'{alias}.cot_label AS "{prefix}_cot_label"',
                    f'{alias}.cot_present AS "{prefix}_cot_present"', f'{alias}.judge_version AS "{prefix}_version"']
        if name == split:
            columns[:0] = [f"{alias}.cot_present AS cot_present", f"{alias}.cot_text AS cot_text",
                           f"{alias}.output_text AS output_text"]
    if split is None:
        columns = ["NULL::BOOLEAN AS cot_present", "NULL::VARCHAR AS cot_text", "NULL::VARCHAR AS output_text"]
    return f"SELECT e.*, {', '.join(columns)} FROM ({sql('export_final_responses')}) e {' '.join(joins)}"


def column_prefix(judge: str) -> str:
    """`llm:gpt-4o` -> `llm_gpt_4o`: a column name every reader accepts."""
    return re.sub(r"\W+", "_", judge).strip("_").lower() or "judge"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
