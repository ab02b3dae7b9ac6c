"""`pipeline sql`: ad-hoc queries that can only read the database.

Two locks, each enough on its own for what it covers: every statement is parsed and only
reads pass (DuckDB's own statement type, not a text match: DESCRIBE, SHOW and SUMMARIZE are
SELECTs to its parser), and the connection itself is read-only, without file access or
extension loading, with its configuration locked so a statement cannot undo that.
Exporting is for your own DuckDB client.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from pipeline.errors import PipelineError
from pipeline.store.connection import open_reader

# The connection `pipeline sql` runs on: no file other than the database (COPY, ATTACH,
# read_text, read_csv, ...), no extension installed or loaded, and no SET can change that.
READ_ONLY_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}
ALLOWED = "SELECT/WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN"
_EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+(ANALYZE|ANALYSE))?\s+", re.IGNORECASE)
_NAMES = {"LOAD": "INSTALL/LOAD"}   # DuckDB files INSTALL under LOAD


def open_sql_reader(path: Path) -> duckdb.DuckDBPyConnection:
    return open_reader(path, config=READ_ONLY_CONFIG)


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse `query` unless every statement in it only reads (one line naming the first
    statement that does not)."""
    for statement in _statements(con, query):
        kind = statement.type
        if kind == duckdb.StatementType.EXPLAIN:
            inner = _EXPLAIN.sub("", statement.query, count=1)
            if inner != statement.query:
                check_read_only(con, inner)
                continue
        elif kind == duckdb.StatementType.SELECT:
            continue
        name = _NAMES.get(kind.name, kind.name)
        raise PipelineError(f"sql: refused {name} statement: `pipeline sql` only reads ({ALLOWED}); "
                            "use your own DuckDB client to export or change data")


def refused_file_access(exc: duckdb.PermissionException) -> PipelineError:
    """What a statement that tried to reach a file (read_text, read_csv, ...) is told."""
    detail = str(exc).splitlines()[0].removeprefix("Permission Error: ")
    return PipelineError(f"sql: refused file access: `pipeline sql` reads only the database ({detail})")


def _statements(con: duckdb.DuckDBPyConnection, query: str) -> list[duckdb.Statement]:
    try:
        return list(con.extract_statements(query))
    except duckdb.Error as exc:
        raise PipelineError(f"sql: {str(exc).splitlines()[0]}") from None
