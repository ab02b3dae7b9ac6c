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
from pathlib import Path

import duckdb

from pipeline.errors import PipelineError
from pipeline.store.connection import open_reader
from pipeline.store.queries import sql

FORMATS = ("parquet", "csv", "jsonl")
SPLIT_JUDGE = "rule"   # whose CoT split fills cot_present / cot_text / output_text when several judged


def export(db: Path, out: Path, fmt: str, judge: str | None = None) -> tuple[Path, int]:
    """Write the export; returns where and how many rows."""
    if fmt not in FORMATS:
        raise PipelineError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out}: is a file, not a folder")
    con = open_reader(db)
    try:
        judges = [name for (name,) in con.execute(sql("export_judges"), {"judge": judge}).fetchall()]
        if judge is not None and not judges:
            raise PipelineError(f"--judge {judge}: no labels by that judge in {db} (run `pipeline grade` first)")
        select = export_select(judges)
        out.mkdir(parents=True, exist_ok=True)
        target = out if fmt == "parquet" else out / f"final_responses.{'csv' if fmt == 'csv' else 'jsonl'}"
        options = {"parquet": "FORMAT parquet, PARTITION_BY (scenario, model), OVERWRITE_OR_IGNORE true",
                   "csv": "FORMAT csv, HEADER true", "jsonl": "FORMAT json"}[fmt]
        quoted = str(target).replace("'", "''")
        (rows,) = con.execute(f"COPY ({select}) TO '{quoted}' ({options})", {"judge": judge}).fetchone() or (0,)
    except duckdb.IOException as exc:
        raise PipelineError(f"--out {out}: cannot be written ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()
    return target, int(rows)


def export_select(judges: list[str]) -> str:
    """The export query with each judge's labels widened into columns of their own."""
    split = SPLIT_JUDGE if SPLIT_JUDGE in judges else (judges[0] if judges else None)
    columns = []
    if split is not None:
        pick = f"list_filter(labels, lambda x: x.judge = {_literal(split)})[1]"
        columns += [f"{pick}.cot_present AS cot_present", f"{pick}.cot_text AS cot_text",
                    f"{pick}.output_text AS output_text"]
    else:
        columns += ["NULL::BOOLEAN AS cot_present", "NULL::VARCHAR AS cot_text", "NULL::VARCHAR AS output_text"]
    for name in judges:
        pick = f"list_filter(labels, lambda x: x.judge = {_literal(name)})[1]"
        prefix = column_prefix(name)
        columns += [f'{pick}.output_label AS "{prefix}_output_label"', f'{pick}.cot_label AS "{prefix}_cot_label"',
                    f'{pick}.cot_present AS "{prefix}_cot_present"', f'{pick}.judge_version AS "{prefix}_version"']
    return f"SELECT * EXCLUDE (labels), {', '.join(columns)} FROM ({sql('export_final_responses')})"


def column_prefix(judge: str) -> str:
    """`llm:gpt-4o` -> `llm_gpt_4o`: a column name every reader accepts."""
    return re.sub(r"\W+", "_", judge).strip("_").lower() or "judge"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
