"""The report's figures for the overview, drawn in memory with `pipeline report`'s own code
and redrawn only when the data behind them change (a run adds jobs, a judge or a person labels)."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
from matplotlib.figure import Figure

from pipeline.report.data import ReportData, load
from pipeline.report.figures import FIGURES, save
from pipeline.view.filters import BadParameter
from pipeline.view.reads import Database, fingerprint, judges

Stamp = tuple[Any, ...]


class Charts:
    def __init__(self, db: Database):
        self.db = db
        self._data: dict[str, tuple[Stamp, ReportData]] = {}         # judge -> what its figures show
        self._png: dict[tuple[str, str], tuple[Stamp, bytes]] = {}   # (judge, figure) -> drawn
        self._drawing = ThreadPoolExecutor(1, thread_name_prefix="view-figures")   # matplotlib: one thread

    async def png(self, name: str, judge: str) -> bytes:
        """Figure `name` (a key of report.figures.FIGURES) for `judge`'s labels."""
        make = FIGURES[name][0]
        stamp, data = await self.db.read(lambda con: self._load(con, judge))
        drawn = self._png.get((judge, name))
        if drawn is None or drawn[0] != stamp:
            png = await asyncio.get_running_loop().run_in_executor(self._drawing, lambda: _png(make(data)))
            self._png[(judge, name)] = drawn = (stamp, png)
        return drawn[1]

    def _load(self, con: duckdb.DuckDBPyConnection, judge: str) -> tuple[Stamp, ReportData]:
        """On the database thread, so one figure's load is reused by the others."""
        stamp = fingerprint(con)
        cached = self._data.get(judge)
        if cached and cached[0] == stamp:
            return cached
        if judge not in judges(con):
            raise BadParameter(f"judge={judge!r}: no such judge in this database")
        self._data[judge] = (stamp, load(con, judge))
        return self._data[judge]

    def close(self) -> None:
        self._drawing.shutdown(wait=True)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    save(figure, buffer)
    return buffer.getvalue()
