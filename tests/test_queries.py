"""Every named statement in sql/queries.sql is one statement DuckDB can prepare: a section
header after the last one must not become part of it (it once broke `pipeline status`)."""

from __future__ import annotations

import duckdb
import pytest

from pipeline.store.queries import _all, sql
from pipeline.store.schema import upgrade


@pytest.mark.parametrize("name", sorted(_all()))
def test_named_statement_is_one_statement_without_trailing_comments(name: str) -> None:
    text = sql(name)
    assert not text.endswith(";") and not text.splitlines()[-1].lstrip().startswith("--")
    code = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    if code[0].startswith("AND "):   # a filter fragment `pipeline view` appends to a statement
        return
    con = duckdb.connect(":memory:")
    try:
        upgrade(con)
        assert len(con.extract_statements(text)) == 1
    finally:
        con.close()
