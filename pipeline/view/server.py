"""The viewer's HTTP side (aiohttp.web): routes, security headers, and the answers for a busy
database or a bad parameter. Pages are rendered by `pages`; data comes from `reads`.

Security: it binds 127.0.0.1 unless told otherwise, answers only requests addressed to the
host it listens on (no DNS rebinding), takes labels only as same-origin JSON, serves a fixed
set of files (never a path from the URL) and runs only the named statements in queries.sql.
A Content-Security-Policy without inline script is a second fence behind the escaping.
"""

from __future__ import annotations

import asyncio
import socket
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import orjson
import structlog
from aiohttp import web

from pipeline.errors import PipelineError
from pipeline.grading.human import LabelWriter
from pipeline.report.figures import FIGURES
from pipeline.store.connection import DatabaseBusy, check_database_file
from pipeline.view import labelling, pages, reads
from pipeline.view.charts import Charts
from pipeline.view.filters import BadParameter, Cursor, SampleFilter, integer, parse_cell
from pipeline.view.html import Markup

log = structlog.get_logger()
MAX_PAGE_SIZE = 500
RETRY_S = 2
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
STATIC = {"view.js": "text/javascript", "view.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Viewer:
    """What the handlers share: the database, who labels, the figures and the static files."""

    def __init__(self, db: reads.Database, labeller: str, host: str):
        self.db = db
        self.labeller = labeller
        self.host = host
        self.charts = Charts(db)
        self.overview = reads.OverviewReader()
        self.static = {name: resources.files("pipeline.view").joinpath("static", name).read_bytes()
                       for name in STATIC}
        self._writer: LabelWriter | None = None

    def writer(self) -> LabelWriter:
        """Made at the first label (on the database thread), so a read-only database can still be read."""
        if self._writer is None:
            self._writer = LabelWriter(self.db.path)
        return self._writer

    def close(self) -> None:
        self.db.close()
        self.charts.close()
        if self._writer is not None:
            self._writer.close()


VIEWER = web.AppKey("viewer", Viewer)


def make_app(viewer: Viewer) -> web.Application:
    app = web.Application(middlewares=[_guard, _errors], client_max_size=64 * 1024)
    app[VIEWER] = viewer
    app.router.add_get("/", overview)
    app.router.add_get("/cell", cell)
    app.router.add_get("/job/{job_id}", job)
    app.router.add_get("/label", label)
    app.router.add_post("/api/label", save_label)
    app.router.add_get("/figure/{name}", figure)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", no_icon)
    return app


async def no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


# ---------------------------------------------------------------- middlewares

@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Requests must name the host the viewer listens on; answers carry the security headers."""
    viewer = request.app[VIEWER]
    if viewer.host in LOOPBACK and (request.url.host or "").strip("[]") not in LOOPBACK:
        response: web.StreamResponse = web.Response(status=421, text="misdirected request\n")
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:   # 404s and the like: answers too
            response = exc
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """One line for the person, never a traceback: 400 for a bad parameter, 503 + retry while
    a run holds the database."""
    api = request.path.startswith("/api/")
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException:
        raise
    except BadParameter as exc:
        return _json({"error": str(exc)}, 400) if api else _page(pages.error_page("Bad request", str(exc)), 400)
    except DatabaseBusy as exc:
        headers = {"Retry-After": str(RETRY_S)}
        if api:
            return _json({"error": "database busy", "retry_s": RETRY_S}, 503, headers)
        return _page(pages.busy_page(str(exc), RETRY_S), 503, headers)
    except PipelineError as exc:
        return _json({"error": str(exc)}, 409) if api else _page(pages.error_page("Cannot show this", str(exc)), 409)
    except duckdb.Error as exc:
        log.error("view: database error", path=request.path, error=str(exc).splitlines()[0])
        message = f"database error: {str(exc).splitlines()[0]}"
        return _json({"error": message}, 500) if api else _page(pages.error_page("Database error", message), 500)


def _page(body: Markup, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8", headers=headers)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


# ---------------------------------------------------------------- pages

async def overview(request: web.Request) -> web.Response:
    viewer = request.app[VIEWER]
    data = await viewer.db.read(viewer.overview)
    asked = request.query.get("judge")
    if asked and asked not in data.judges:
        raise BadParameter(f"judge={asked!r}: no such judge in this database ({', '.join(data.judges) or 'none'})")
    judge = asked or ("rule" if "rule" in data.judges else next(iter(data.judges), None))
    return _page(pages.overview_page(data, judge))


async def cell(request: web.Request) -> web.Response:
    viewer = request.app[VIEWER]
    where = parse_cell(request.query, whole=True)
    filters = SampleFilter.parse(request.query)
    cursor = Cursor.parse(request.query)
    size = integer(request.query, "size", pages.PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = await viewer.db.read(lambda con: reads.cell_page(con, where, filters, cursor, size))
    return _page(pages.cell_page(where, filters, page, size))


async def job(request: web.Request) -> web.Response:
    viewer = request.app[VIEWER]
    job_id = request.match_info["job_id"]
    found = await viewer.db.read(lambda con: reads.transcript(con, job_id)) if len(job_id) <= 128 else None
    if found is None:
        return _page(pages.error_page("No such job", f"{job_id[:128]!r} is not a job of this database"), 404)
    return _page(pages.job_page(found))


async def label(request: web.Request) -> web.Response:
    viewer = request.app[VIEWER]
    where = parse_cell(request.query, whole=False)
    per_cell = integer(request.query, "per_cell", 30, 1, 100_000)
    seed = integer(request.query, "seed", 0, 0, 2**31 - 1)
    job_id = request.query.get("job")

    def read() -> tuple[labelling.Queue, dict[str, Any] | None]:
        found = labelling.queue(viewer.db.path, where, per_cell=per_cell, seed=seed, labeller=viewer.labeller,
                                job_id=job_id)
        mine = viewer.db.read_here(lambda con: reads.labels_by(con, found.item.job_id, viewer.labeller))
        return found, (mine[0] if mine else None)

    found, mine = await viewer.db.call(read)
    return _page(pages.label_page(found, where, viewer.labeller, seed, mine))


async def save_label(request: web.Request) -> web.Response:
    """One label, as same-origin JSON (a form on another site cannot send it)."""
    viewer = request.app[VIEWER]
    origin = request.headers.get("Origin")
    if request.content_type != "application/json" or (origin and origin != f"{request.scheme}://{request.host}"):
        return _json({"error": "labels are accepted only as JSON from the viewer's own pages"}, 403)
    try:
        record = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise BadParameter(f"not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise BadParameter("expected a JSON object")
    in_db = await viewer.db.call(lambda: labelling.save(viewer.writer(), viewer.db.path, record, viewer.labeller,
                                                        viewer.db.wait_s))
    return _json({"job_id": record.get("job_id"), "saved": "database" if in_db else "journal"})


async def figure(request: web.Request) -> web.Response:
    """A figure of `pipeline report`, drawn in memory (charts.py)."""
    name = request.match_info["name"]
    if name not in FIGURES:
        raise web.HTTPNotFound(text=f"no figure called {name[:80]!r}\n")
    png = await request.app[VIEWER].charts.png(name, request.query.get("judge", "rule")[:200])
    return web.Response(body=png, content_type="image/png")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound(text="not found\n")
    return web.Response(body=request.app[VIEWER].static[name], content_type=STATIC[name], charset="utf-8")


# ---------------------------------------------------------------- running

def serve(db: Path, *, host: str, port: int, labeller: str) -> None:
    """Serve until Ctrl-C, printing the URL once listening."""
    if not 0 <= port <= 65535:
        raise PipelineError(f"--port {port}: expected 0 (any free port) to 65535")
    check_database_file(db, writing=False)
    asyncio.run(_serve(db, host, port, labeller))


async def _serve(db: Path, host: str, port: int, labeller: str) -> None:
    viewer = Viewer(db=reads.Database(db), labeller=labeller, host=host)
    try:
        try:
            await viewer.db.read(lambda con: None)   # a newer or foreign database: one line, before listening
        except DatabaseBusy:
            pass                                     # a run holds it: the pages say "updating"
        runner = web.AppRunner(make_app(viewer), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await _listen(runner, db, host, port, labeller)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
    finally:
        viewer.close()


async def _listen(runner: web.AppRunner, db: Path, host: str, port: int, labeller: str) -> None:
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise PipelineError(f"--host {host} --port {port}: cannot listen ({exc.strerror or exc})") from None
    await web.SockSite(runner, sock).start()
    shown = f"[{host}]" if ":" in host else host
    print(f"pipeline view: http://{shown}:{sock.getsockname()[1]}/  (database {db}; labeller {labeller}; "
          "Ctrl-C stops it)", flush=True)
    if host not in LOOPBACK:
        log.warning("the viewer listens beyond this machine and has no login: anyone who reaches it can read "
                    "and label", host=host)
