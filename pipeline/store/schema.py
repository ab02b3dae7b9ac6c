"""The one source of the database's shape: numbered migrations, then the views.

Tables are defined only by `sql/migrations/NNN_*.sql`, applied once and in order; a fresh
database runs them all, a database written by an earlier release runs the ones it lacks
(`meta.schema_version` says which it has). Views and macros (`sql/views*.sql`) are
re-created whenever their text changes (`meta.views_hash`), so a database always carries
today's definitions. The writer's column lists are read from the migrated schema itself,
never written out a second time.
"""

from __future__ import annotations

import hashlib
import re
from contextlib import suppress
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

import duckdb

from pipeline.errors import PipelineError

_SQL = resources.files("pipeline.store").joinpath("sql")
_MIGRATION_NAME = re.compile(r"(\d{3})_\w+\.sql")
VIEW_SCRIPTS = ("views.sql", "rates_corrected.sql", "costs.sql")  # in dependency order


def migrations() -> list[tuple[int, str]]:
    """(version, script) for every migration, in order."""
    found = []
    for entry in _SQL.joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


SCHEMA_VERSION = migrations()[-1][0]


def view_scripts() -> list[str]:
    scripts: list[Traversable] = [_SQL.joinpath(name) for name in VIEW_SCRIPTS]
    return [script.read_text(encoding="utf-8") for script in scripts if script.is_file()]


def views_hash() -> str:
    return hashlib.sha256("\n".join(view_scripts()).encode()).hexdigest()[:16]


def stored_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version a database has: 0 when it is empty (new file)."""
    tables = {name for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()}
    if not tables:
        return 0
    if "meta" not in tables:
        raise PipelineError("not a results database of this pipeline (it has tables but no `meta` table)")
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    row = rows[0] if rows else None
    if row is None or not str(row[0]).isdigit():
        raise PipelineError("not a results database of this pipeline (no schema version in `meta`)")
    return int(row[0])


def needs_upgrade(con: duckdb.DuckDBPyConnection) -> bool:
    version = _checked_version(con)
    if version < SCHEMA_VERSION:
        return True
    rows = con.execute("SELECT value FROM meta WHERE key = 'views_hash'").fetchall()
    row = rows[0] if rows else None
    return row is None or row[0] != views_hash()


def upgrade(con: duckdb.DuckDBPyConnection) -> int:
    """Bring a database to today's schema and views in one transaction; returns the
    version it had. Nothing is changed if any step fails."""
    version = _checked_version(con)
    con.execute("BEGIN TRANSACTION")
    try:
        for number, script in migrations():
            if number > version:
                con.execute(script)
        for script in view_scripts():
            con.execute(script)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?), ('views_hash', ?)",
                    [str(SCHEMA_VERSION), views_hash()])
        con.execute("COMMIT")
    except BaseException:
        with suppress(duckdb.Error):   # an interrupted COMMIT has already ended the transaction
            con.execute("ROLLBACK")
        raise
    return version


def _checked_version(con: duckdb.DuckDBPyConnection) -> int:
    version = stored_version(con)
    if version > SCHEMA_VERSION:
        raise PipelineError(f"written by a newer release (schema version {version}; this one knows "
                            f"up to {SCHEMA_VERSION}): upgrade the pipeline")
    return version


@cache
def table_columns(table: str) -> dict[str, str]:
    """Column name -> DuckDB type of `table`, read from the migrated schema."""
    con = duckdb.connect(":memory:")
    try:
        for _, script in migrations():
            con.execute(script)
        return {name: kind for name, kind, *_ in con.execute(f"DESCRIBE {table}").fetchall()}
    finally:
        con.close()
