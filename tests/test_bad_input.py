"""Bad input never costs data (issue 9, items 1, 2, 7, 8 and 9): a read-only `pipeline sql`,
duplicate names, bad parameters, bad `--db` files and runs in which every job failed."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pipeline.store.writer import Outcome, Store
from tests.conftest import REPO, Workspace, query
from tests.fakeserver import FakeServer


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> dict[str, str]:
    """Every file under `directory` with its hash: 'nothing changed' means this is equal."""
    return {str(p.relative_to(directory)): digest(p) if p.is_file() else "dir"
            for p in sorted(directory.rglob("*"))}


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def sampled(workspace: Workspace) -> Iterator[tuple[Workspace, FakeServer]]:
    """A workspace with a small, fully sampled database."""
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=1)
        workspace.sample()
        server.reset()
        yield workspace, server


# 1. `pipeline sql` is read-only ---------------------------------------------------------------

@pytest.mark.parametrize("statement, refused", [
    ("COPY (SELECT 1 AS a) TO '{db}'", "COPY"),
    ("COPY jobs TO '{tmp}/out.csv'", "COPY"),
    ("SELECT 1; COPY jobs TO '{tmp}/out.csv'", "COPY"),
    ("ATTACH '{tmp}/other.duckdb' AS other", "ATTACH"),
    ("INSTALL sqlite", "INSTALL/LOAD"),
    ("LOAD sqlite", "INSTALL/LOAD"),
    ("SET enable_external_access = true", "SET"),
    ("CALL read_text('/etc/passwd')", "CALL"),
    ("EXPORT DATABASE '{tmp}/dump'", "EXPORT"),
    ("CREATE TABLE x AS SELECT 1", "CREATE"),
    ("DELETE FROM jobs", "DELETE"),
    ("CHECKPOINT", "CALL"),
    ("SELECT * FROM read_text('/etc/passwd')", "file access"),
    ("SELECT * FROM read_csv('{tmp}/nothing.csv')", "file access"),
])
def test_sql_refuses_everything_that_is_not_a_read(sampled: tuple[Workspace, FakeServer], statement: str,
                                                   refused: str) -> None:
    workspace, _ = sampled
    before = listing(workspace.root)
    text = statement.format(db=workspace.db, tmp=workspace.root)
    proc = workspace.cli("sql", text, "--db", str(workspace.db), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_line(proc)
    assert line.startswith("error: sql: refused") and refused in line, line
    assert "root:" not in proc.stdout          # /etc/passwd never printed
    assert listing(workspace.root) == before   # the database and its folder are unchanged


@pytest.mark.parametrize("statement", [
    "SELECT count(*) FROM jobs",
    "WITH j AS (SELECT * FROM jobs) SELECT count(*) FROM j",
    "DESCRIBE jobs",
    "SHOW TABLES",
    "SUMMARIZE jobs",
    "EXPLAIN SELECT * FROM jobs",
    "FROM cell_status",
])
def test_sql_keeps_reads(sampled: tuple[Workspace, FakeServer], statement: str) -> None:
    workspace, _ = sampled
    before = digest(workspace.db)
    proc = workspace.cli("sql", statement, "--db", str(workspace.db))
    assert proc.stdout.strip() and not proc.stderr.strip()
    assert digest(workspace.db) == before


# 2. Duplicate names -----------------------------------------------------------------------------

SECOND_MODEL = '\n[[models]]\nname = "fake-model"\nbase_url = "{url}"\nparams = {{ temperature = 0.5 }}\n'


@pytest.mark.parametrize("extra, model_extra, field, line_text", [
    ("", SECOND_MODEL, "models[1].name", 'name = "fake-model"'),
    ('scenarios = ["demo", "plain", "demo"]', "", "scenarios[2]", "scenarios = "),
    ('branches = ["sampled", "refusal", "sampled"]', "", "branches[2]", "branches = "),
    ('[variants]\ndemo = ["car", "car"]', "", "variants.demo[1]", "demo = "),
])
def test_duplicate_names_are_refused_at_load(workspace: Workspace, extra: str, model_extra: str, field: str,
                                             line_text: str) -> None:
    with FakeServer() as server:
        path = workspace.write_experiment(server.base_url, n=1, extra=extra,
                                          model_extra=model_extra.format(url=server.base_url))
        proc = workspace.sample(check=False)
        assert proc.returncode == 2
        line = one_line(proc)
        assert f"field '{field}'" in line and "twice" in line, line
        where = line.removeprefix("error: ").split(": ")[0]
        file, number = where.rsplit(":", 1)
        assert file == str(path)
        lines = path.read_text().splitlines()
        assert line_text in lines[int(number) - 1]
        if field.startswith("models"):
            assert int(number) > lines.index('name = "fake-model"') + 1   # the second block, not the first
        assert server.stats()["requests"] == 0
        assert not workspace.db.exists()


def test_writer_keeps_one_row_per_key_within_a_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    store.initialize()
    job = {"job_id": "j1", "run_id": "r1", "scenario": "s", "variant": "v", "branch": "sampled",
           "model": "m", "seed": 0, "status": "failed", "error": "first"}
    response = {"job_id": "j1", "run_id": "r1", "call": "final", "response_text": "a"}
    try:
        store.write_batch([Outcome({"jobs": [job], "responses": [response]}),
                           Outcome({"jobs": [{**job, "status": "done", "error": None}],
                                    "responses": [{**response, "response_text": "b"}]})])
    finally:
        store.close()
    db = tmp_path / "db.duckdb"
    assert query(db, "SELECT status, error FROM jobs") == [("done", None)]          # the last one wins
    assert query(db, "SELECT count(*) FROM responses") == [(1,)]


# 7. Parameters are checked at load -------------------------------------------------------------

@pytest.mark.parametrize("edit, args, field", [
    (("max_tokens = 32", 'max_tokens = "lots"'), (), "params.max_tokens"),
    (("max_tokens = 32", "max_tokens = 0"), (), "params.max_tokens"),
    (("max_tokens = 32", "max_tokens = 32\ntemperature = \"hot\""), (), "params.temperature"),
    (("max_tokens = 32", "max_tokens = 32\ntop_p = 3"), (), "params.top_p"),
    (("concurrency = 4", "concurrency = 4\nparams = { max_tokens = -1 }"), (), "models[0].params.max_tokens"),
    (("concurrency = 4", "concurrency = 4\nparams = { temperature = true }"), (), "models[0].params.temperature"),
    (None, ("--rpm", "-5"), "--rpm"),
    (None, ("--tpm", "-1"), "--tpm"),
    (None, ("--rpm", "nan"), "--rpm"),
    (None, ("--concurrency", "0"), "--concurrency"),
    (None, ("--concurrency", "-2"), "--concurrency"),
    (None, ("--n", "0"), "--n"),
    (None, ("--n", "-3"), "--n"),
])
def test_bad_parameters_are_refused_before_anything_is_sent(sampled: tuple[Workspace, FakeServer],
                                                            edit: tuple[str, str] | None, args: tuple[str, ...],
                                                            field: str) -> None:
    workspace, server = sampled
    if edit:
        text = workspace.experiment.read_text()
        assert edit[0] in text
        workspace.experiment.write_text(text.replace(edit[0], edit[1], 1))
    before = digest(workspace.db)
    proc = workspace.sample(*args, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_line(proc)
    assert field in line, line
    if edit:
        assert str(workspace.experiment) + ":" in line
    assert server.stats()["requests"] == 0
    assert digest(workspace.db) == before
    assert query(workspace.db, "SELECT count(*) FROM runs") == [(1,)]


# 8. Bad --db files -----------------------------------------------------------------------------

def unprivileged() -> list[str]:
    """A command prefix under which file permissions hold: root ignores them, so drop the
    capabilities that let it (the files stay root's, their mode bits now count)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def cli(*args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "pipeline", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def make_bad_db(kind: str, root: Path) -> Path:
    if kind == "directory":
        path = root / "results.duckdb"
        path.mkdir()
        (path / "keep.txt").write_text("mine")
    elif kind == "text":
        path = root / "notes.txt"
        path.write_text("these are my notes\n")
    elif kind == "empty":
        path = root / "empty.duckdb"
        path.write_bytes(b"")
    elif kind == "sqlite":
        path = root / "results.sqlite"
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE jobs (job_id TEXT)")
        con.commit()
        con.close()
    elif kind == "foreign":
        path = root / "theirs.duckdb"
        con = duckdb.connect(str(path))
        con.execute("CREATE TABLE jobs (id INTEGER, what VARCHAR); CREATE TABLE runs (id INTEGER);"
                    "INSERT INTO jobs VALUES (1, 'keep me')")
        con.close()
    else:
        raise AssertionError(kind)
    return path


BAD_DBS = {"directory": "is a directory", "text": "not a DuckDB database", "empty": "not a DuckDB database",
           "sqlite": "SQLite", "foreign": "not a results database"}


@pytest.mark.parametrize("kind", sorted(BAD_DBS))
@pytest.mark.parametrize("command", ["sample", "status", "sql", "grade", "label-export", "dry-run"])
def test_bad_db_is_one_line_and_changes_nothing(workspace: Workspace, kind: str, command: str) -> None:
    workspace.write_experiment("http://127.0.0.1:9/v1", n=1)
    data = workspace.root / "data"
    data.mkdir()
    path = make_bad_db(kind, data)
    before = listing(data)
    home = workspace.root / "home"
    home.mkdir()
    argv = {"sample": ["sample", "--experiment", str(workspace.experiment)],
            "dry-run": ["sample", "--dry-run", "--experiment", str(workspace.experiment)],
            "status": ["status"], "sql": ["sql", "SELECT 1"],
            "grade": ["grade", "--scenarios-dir", str(workspace.scenarios)],
            "label-export": ["label", "export"]}[command]
    proc = workspace.cli(*argv, "--db", str(path), env={"HOME": str(home)}, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_line(proc)
    assert str(path) in line and BAD_DBS[kind] in line, line
    assert listing(data) == before
    assert not list(home.rglob("*.duckdb_extension"))   # nothing downloaded for a SQLite file


@pytest.mark.parametrize("case", ["file", "directory", "new file in directory"])
def test_read_only_db_is_refused_for_writing_and_readable_for_reading(sampled: tuple[Workspace, FakeServer],
                                                                      case: str) -> None:
    workspace, _ = sampled
    prefix = unprivileged()
    folder = workspace.root / "ro"
    folder.mkdir()
    db = folder / "results.duckdb"
    if case != "new file in directory":
        shutil.copy(workspace.db, db)
    if case == "file":
        db.chmod(0o444)
    else:
        folder.chmod(0o555)
    try:
        before = listing(folder)
        proc = cli("sample", "--experiment", str(workspace.experiment), "--db", str(db), prefix=prefix)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = one_line(proc)
        assert str(db if case == "file" else folder) in line and "not writable" in line, line
        assert listing(folder) == before
        if case != "new file in directory":   # reading needs no write permission
            status = cli("status", "--db", str(db), prefix=prefix)
            assert status.returncode == 0, status.stderr
            assert listing(folder) == before
    finally:
        folder.chmod(0o755)


def test_experiment_file_that_is_not_utf8_is_one_line(workspace: Workspace) -> None:
    path = workspace.write_experiment("http://127.0.0.1:9/v1", n=1)
    path.write_bytes(path.read_bytes().replace(b'name = "test"', b'name = "t\xe9st"'))
    proc = workspace.sample(check=False)
    assert proc.returncode == 2
    line = one_line(proc)
    assert f"{path}:1:" in line and "UTF-8" in line, line
    assert not workspace.db.exists()


# 9. A run in which every job failed exits 1 and says why ----------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HtmlHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html><body><h1>Welcome to nginx!</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("server_kind", ["nothing listening", "truncated JSON", "HTML page"])
def test_a_run_in_which_every_job_failed_exits_1_and_says_why(workspace: Workspace, server_kind: str) -> None:
    model_extra = "max_attempts = 2\ntimeout_s = 5"
    if server_kind == "nothing listening":
        workspace.write_experiment(f"http://127.0.0.1:{free_port()}/v1", n=1, model_extra=model_extra)
        proc = workspace.sample(check=False)
    elif server_kind == "truncated JSON":
        with FakeServer(malformed_rate=1.0) as server:
            workspace.write_experiment(server.base_url, n=1, model_extra=model_extra)
            proc = workspace.sample(check=False)
    else:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HtmlHandler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            workspace.write_experiment(f"http://127.0.0.1:{httpd.server_address[1]}/v1", n=1,
                                       model_extra=model_extra)
            proc = workspace.sample(check=False)
        finally:
            httpd.shutdown()
            httpd.server_close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ": failed in" in proc.stdout and "completed" not in proc.stdout.splitlines()[0]
    assert "every job of this run failed" in proc.stdout, proc.stdout
    assert "most common error" in proc.stdout
    assert query(workspace.db, "SELECT status FROM runs") == [("failed",)]
