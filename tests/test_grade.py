"""`pipeline grade`: the rule judge and the LLM judge through the engine (fake server)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.grading.llm_judge import parse_label
from pipeline.store.writer import Store
from tests.conftest import REPO, Workspace, query
from tests.fakeserver import FakeServer
from tests.test_reliability import HOLD

REASONED_REPLY = ("Reasoning: I weigh what the manager asked against what the customer needs to know, "
                  "and I decide what to write (seed {seed}).\nOutput: Thank you for asking, reply {hash}.")
JOBS = 9 * 2


def grade(workspace: Workspace, *args: str, check: bool = True):
    return workspace.cli("grade", "--db", str(workspace.db), "--scenarios-dir", str(workspace.scenarios),
                         *args, check=check)


def test_parse_label_takes_the_first_valid_json_object() -> None:
    assert parse_label('Sure! {"label": "unethical", "reason": "hides it"} done') == ("unethical", "hides it")
    assert parse_label('{"verdict": 1} then {"label": "acceptable"}') == ("acceptable", "")
    assert parse_label('{"label": "maybe"}') is None
    assert parse_label("no json") is None and parse_label(None) is None


def test_llm_judge_labels_output_and_cot_separately_and_resumes(workspace: Workspace) -> None:
    with FakeServer(reply=REASONED_REPLY) as server:
        workspace.write_experiment(server.base_url, n=2)
        workspace.sample()
        grade(workspace)  # rule judge first: its labels must survive the LLM judge
        server.configure(reply='{{"label": "unethical", "reason": "it hides the flaw"}}')
        server.reset()
        judge = ("--judge", "llm", "--base-url", server.base_url, "--model", "judge-a")
        out = grade(workspace, *judge).stdout
        assert f"graded {JOBS} responses with llm:judge-a" in out
        calls = server.stats()["calls"]
        assert sum(1 for key in calls if key.endswith("/judge-output")) == JOBS
        assert sum(1 for key in calls if key.endswith("/judge-cot")) == JOBS  # every reply has a CoT
        rows = query(workspace.db, "SELECT output_label, cot_label, cot_present, count(*) FROM judgments "
                                   "WHERE judge = 'llm:judge-a' GROUP BY ALL")
        assert rows == [("unethical", "unethical", True, JOBS)]
        assert query(workspace.db, "SELECT count(*) FROM judgments WHERE judge = 'rule'") == [(JOBS,)]

        server.reset()
        again = grade(workspace, *judge).stdout
        assert "graded 0 responses" in again and server.stats()["requests"] == 0


def test_malformed_judge_json_is_retried_then_stored_as_unclear(workspace: Workspace) -> None:
    with FakeServer(reply=REASONED_REPLY) as server:
        workspace.write_experiment(server.base_url, n=1)
        workspace.sample()
        server.configure(reply="I think it is unethical, but I will not say it in JSON.")
        server.reset()
        grade(workspace, "--judge", "llm", "--base-url", server.base_url, "--model", "judge-b")
        assert server.stats()["requests"] == 9 * 2 * 3  # two prompts x three attempts each
        rows = query(workspace.db, "SELECT output_label, cot_label, detail FROM judgments")
        assert {(o, c) for o, c, _ in rows} == {("unclear", "unclear")}
        detail = json.loads(rows[0][2])
        assert detail["output"]["attempts"] == 3 and "JSON" in detail["output"]["raw"]


def test_judge_without_answer_leaves_responses_ungraded(workspace: Workspace) -> None:
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=1)
        workspace.sample()
        server.configure(bad_seeds=[0, 1, 2])  # the judge's attempts use seeds 0..2: all get 400
        proc = grade(workspace, "--judge", "llm", "--base-url", server.base_url, "--model", "judge-c")
        assert "graded 0 responses" in proc.stdout and "9 got no answer" in proc.stdout
        assert query(workspace.db, "SELECT count(*) FROM judgments") == [(0,)]


def test_eval_fixtures_prints_accuracy_and_kappa_for_both_judges(workspace: Workspace) -> None:
    rule = workspace.cli("grade", "--eval-fixtures").stdout
    assert "judge rule vs hand labels" in rule and "output_label" in rule and "kappa" in rule
    with FakeServer(reply='{{"label": "acceptable", "reason": "fine"}}') as server:
        llm = workspace.cli("grade", "--eval-fixtures", "--judge", "llm", "--base-url", server.base_url,
                            "--model", "judge-d").stdout
    line = next(line for line in llm.splitlines() if line.startswith("output_label"))
    n, accuracy = int(line.split()[1]), float(line.split()[2])
    assert n >= 60 and 0.2 < accuracy < 0.8  # always "acceptable": right only on the acceptable half


def test_editing_a_grading_rule_regrades_under_a_new_version(workspace: Workspace) -> None:
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=1)
        workspace.sample()
    first = grade(workspace).stdout
    assert "graded 9 responses" in first
    assert "graded 0 responses" in grade(workspace).stdout
    demo = workspace.scenarios / "demo.toml"
    demo.write_text(demo.read_text() + '\n[grading]\nunethical_patterns = ["reply"]\n')
    assert "graded 9 responses" in grade(workspace).stdout
    versions = query(workspace.db, "SELECT judge_version, count(*) FROM judgments GROUP BY ALL ORDER BY ALL")
    assert len(versions) == 2 and all(count == 9 for _, count in versions)


def test_a_page_read_waits_for_a_commit_of_the_same_process(tmp_path: Path) -> None:
    """`grade` reads its next page on the event loop while the writer thread commits: DuckDB
    refuses a second instance attaching the same file ('Unique file handle conflict'), which
    ended a million-response grading run with a traceback after 5 s."""
    store = Store(tmp_path / "db.duckdb")
    store.initialize()
    committing, release = threading.Event(), threading.Event()

    def long_commit() -> None:
        with store.connect() as con:
            con.execute("SELECT 1")
            committing.set()
            release.wait(5)

    writer = threading.Thread(target=long_commit)
    writer.start()
    committing.wait(5)
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    with store.connect() as con:   # waits for the other connection instead of failing
        assert con.execute("SELECT count(*) FROM jobs").fetchall() == [(0,)]
    assert time.monotonic() - started >= 0.2
    writer.join()
    store.close()


@contextmanager
def held(db: Path) -> Iterator[None]:
    """Another process holding the database's write lock until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.communicate()


def start_grade(workspace: Workspace, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "grade", "--db", str(workspace.db),
                             "--scenarios-dir", str(workspace.scenarios), *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C; the process must end within 8 s. Its stderr."""
    try:
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 8, err
        return err
    finally:
        proc.kill()


@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_while_another_process_holds_the_database_exits_in_seconds(workspace: Workspace, delay: float) -> None:
    """A database held from before the start: Ctrl-C during the wait exits 130 with one line."""
    with FakeServer() as server:
        workspace.write_experiment(server.base_url, n=2)
        workspace.sample()
    with held(workspace.db):
        proc = start_grade(workspace)
        time.sleep(delay)
        err = interrupt(proc)
    assert proc.returncode == 130 and "Traceback" not in err, err


def test_ctrl_c_while_a_page_waits_for_a_held_database_exits_in_seconds(workspace: Workspace) -> None:
    """The engine runs (a slow LLM judge); another process takes the database before the next
    page is read. The page waits in a thread, so Ctrl-C still stops the run: 130, no traceback
    (before, the event loop itself waited for the lock and Ctrl-C went unheard)."""
    with FakeServer(reply=REASONED_REPLY) as server:
        workspace.write_experiment(server.base_url, n=2)
        workspace.sample()
        server.configure(reply='{{"label": "unethical", "reason": "r"}}', latency=0.3)
        server.reset()
        proc = start_grade(workspace, "--judge", "llm", "--base-url", server.base_url, "--model", "judge-a",
                           "--concurrency", "4")
        wait_for_requests(server, 2)
        with held(workspace.db):
            wait_for_requests(server, 26)   # the first page's items are all taken: the next page is asked for
            time.sleep(0.5)
            err = interrupt(proc)
    assert proc.returncode == 130 and "Traceback" not in err, err


def wait_for_requests(server: FakeServer, count: int) -> None:
    deadline = time.monotonic() + 30
    while server.stats()["requests"] < count:
        assert time.monotonic() < deadline, "the judge's calls did not arrive"
        time.sleep(0.05)
