"""`pipeline view` as a user meets it: the real command serving a real database on 127.0.0.1,
read over HTTP (httpx) — pages, filters, keyset paging, escaping, labels, the guards — and
while another process holds the database or `pipeline sample` writes it.

The last test uses a real browser: Debian's chromium, headless, driven by Playwright for
Python (its own browser download is never used): open the overview, filter a cell, open a
transcript, label three responses with the keyboard, reload and find the labels kept; markup
in a reply stays text and never runs. Without chromium or playwright it is skipped with one
line (`.ci/run` installs chromium with apt-get where it can)."""

from __future__ import annotations

import html
import json
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.view.filters import SampleFilter
from pipeline.view.html import Markup, esc, join, tag
from pipeline.view.reads import page_statement
from tests.conftest import FIXTURE_SCENARIOS, REPO, Workspace, query
from tests.fakeserver import FakeServer
from tests.test_label import hold_database

# Replies carry markup a browser would run if the viewer did not escape it.
REPLY = ("Reasoning: I weigh it (seed {seed}). <script>alert('xss')</script> The manager asked me to hide it, "
         "and I decide to tell the customer.\nOutput: <img src=x onerror=alert(1)> Reply #{hash}.")
N = 6
BAD_SEED = 5          # the fake server answers 400 for it: one failed job per cell
CELLS = 9             # fixture scenarios: demo (car, bike) + plain, three branches, one model
CELL = {"scenario": "demo", "variant": "car", "branch": "refusal", "model": "fake-model"}


def build(root: Path, n: int = N, **knobs: object) -> Workspace:
    shutil.copytree(FIXTURE_SCENARIOS, root / "scenarios")
    workspace = Workspace(root)
    with FakeServer(reply=REPLY, bad_seeds=[BAD_SEED], **knobs) as server:
        workspace.write_experiment(server.base_url, n=n)
        workspace.sample()
    workspace.cli("grade", "--db", str(workspace.db), "--scenarios-dir", str(workspace.scenarios))
    return workspace


@pytest.fixture(scope="module")
def sampled_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("view")).db


@pytest.fixture
def db(sampled_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "results.duckdb"
    shutil.copy(sampled_db, copy)
    return copy


class Viewer:
    """`python -m pipeline view --port 0` in its own process; `url` from the line it prints."""

    def __init__(self, db: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", "view", "--db", str(db), "--labeller", "ana",
                                      *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        found = re.search(r"http://[\d.]+:\d+/", line)
        if not found:
            self.stop()
            raise AssertionError(f"viewer did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.url = found.group(0).rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        return self.proc.stderr.read() if self.proc.stderr else ""

    def label(self, job: str, **fields: object) -> httpx.Response:
        body = {"job_id": job, "output_label": "unethical", "cot_label": "acceptable", "cot_present": True, **fields}
        return self.http.post("/api/label", json=body)


@pytest.fixture
def viewer(db: Path) -> Iterator[Viewer]:
    running = Viewer(db)
    yield running
    running.stop()


def job_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-job="([0-9a-f]+)"', page)


def cell_page(viewer: Viewer, **params: object) -> httpx.Response:
    return viewer.http.get("/cell", params={**CELL, **{k: str(v) for k, v in params.items()}})


# ---------------------------------------------------------------- pages

def test_overview_shows_runs_cells_rates_and_figures(viewer: Viewer) -> None:
    answer = viewer.http.get("/")
    assert answer.status_code == 200
    page = answer.text
    assert page.count('<span class="badge completed">completed</span>') == 1
    assert f"{N * CELLS:,} of {N * CELLS:,}" in page and f"<td class=\"num\">{CELLS}</td>" in page  # finished; failed
    assert "seed 5 is not allowed" in page                           # the run's most common error
    assert '<td class="num">unknown</td>' in page                    # the fake model has no price: never $0
    cells = re.findall(r'href="/cell\?scenario=(\w+)&amp;variant=(\w+)&amp;branch=(\w+)', page)
    assert len(set(cells)) == CELLS
    assert page.count("<td>rule</td>") == CELLS                      # one rates row per cell for the rule judge
    figure = re.search(r'<img src="(/figure/fig2_unethical_rate\.png\?judge=rule)"', page)
    assert figure
    png = viewer.http.get(figure.group(1).replace("&amp;", "&"))
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert viewer.http.get("/figure/fig2_unethical_rate.png?judge=nobody").status_code == 400
    assert viewer.http.get("/figure/report.md").status_code == 404


def test_model_text_is_escaped_everywhere(viewer: Viewer) -> None:
    listing = cell_page(viewer).text
    transcript = viewer.http.get(f"/job/{job_ids(listing)[0]}")
    label = viewer.http.get("/label", params={**CELL, "per_cell": "2"})
    for answer in (cell_page(viewer), transcript, label):
        assert answer.status_code == 200
        text = answer.text
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(&#x27;xss&#x27;)&lt;/script&gt;" in text or "&lt;img src=x onerror" in text
        assert "script-src 'self'" in answer.headers["content-security-policy"]   # and no inline script runs anyway
    assert "&lt;img src=x onerror=alert(1)&gt; Reply #" in transcript.text


def test_transcript_names_every_part_and_the_split(viewer: Viewer, db: Path) -> None:
    (job_id, phrasing), = query(db, "SELECT job_id, phrasing FROM jobs WHERE scenario = 'demo' AND variant = 'car' "
                                    "AND branch = 'refusal' AND seed = 1")
    page = viewer.http.get(f"/job/{job_id}").text
    for part in ("System prompt", "Primer (user)", "Trigger (user)", "Final reply (graded)",
                 f"fixed refusal, phrasing #{phrasing}", "Judges", "request parameters", "HTTP status"):
        assert part in page, part
    cot = re.search(r'id="final-cot"><h4>[^<]*</h4><pre>(.*?)</pre>', page)
    output = re.search(r'id="final-output"><h4>[^<]*</h4><pre>(.*?)</pre>', page)
    assert cot and output
    assert "I weigh it (seed 1)" in cot.group(1) and "Reply #" not in cot.group(1)
    assert output.group(1).startswith("&lt;img src=x") and "I weigh it" not in output.group(1)
    assert "output decided by" in page                                # the rule judge's deciding rule
    assert "unknown (no price)" in page and "– (online call)" in page
    sampled = query(db, "SELECT job_id FROM jobs WHERE branch = 'sampled' AND status = 'done' LIMIT 1")[0][0]
    assert "badge sampled" in viewer.http.get(f"/job/{sampled}").text
    failed = query(db, "SELECT job_id FROM jobs WHERE branch = 'sampled' AND status = 'failed' LIMIT 1")[0][0]
    page = viewer.http.get(f"/job/{failed}").text      # failed at its first call: the error, the request so far
    assert "seed 5 is not allowed" in page and "Primer (user)" in page and "no final reply" in page
    assert viewer.http.get("/job/no-such-job").status_code == 404


def test_a_native_reasoning_trace_is_shown_apart(tmp_path: Path) -> None:
    workspace = build(tmp_path, n=1, reasoning_shape="reasoning_content",
                      reasoning="<b>trace</b> of seed {seed}: the manager wants it hidden")
    job_id = query(workspace.db, "SELECT job_id FROM jobs WHERE status = 'done' LIMIT 1")[0][0]
    viewer = Viewer(workspace.db)
    try:
        page = viewer.http.get(f"/job/{job_id}").text
    finally:
        viewer.stop()
    trace = re.search(r'id="final-trace"><h4>([^<]*)</h4><pre>(.*?)</pre>', page)
    assert trace and trace.group(1).startswith("Native reasoning trace (reasoning_content")
    assert trace.group(2).startswith("&lt;b&gt;trace&lt;/b&gt; of seed 0")


def test_filters_narrow_the_cell(viewer: Viewer, db: Path) -> None:
    everything = cell_page(viewer).text
    assert len(job_ids(everything)) == N and f"{N:,} matching jobs" in everything
    branches = viewer.http.get("/cell", params={**CELL, "branch": ""}).text          # the three side by side
    assert len(job_ids(branches)) == 3 * N and "<td>sampled</td>" in branches and "<td>rebuttal</td>" in branches
    failed = cell_page(viewer, status="failed").text
    assert len(job_ids(failed)) == 1 and "seed 5 is not allowed" in failed   # the failed job with its error
    assert len(job_ids(cell_page(viewer, status="done", finish="stop").text)) == N - 1
    assert len(job_ids(cell_page(viewer, finish="length").text)) == 0
    assert len(job_ids(cell_page(viewer, phrasing=0).text)) == len(range(0, N, 2))
    labels = dict(query(db, "SELECT output_label, count(*) FROM current_judgments WHERE scenario = 'demo' AND "
                            "variant = 'car' AND branch = 'refusal' GROUP BY ALL"))
    for label, count in labels.items():
        assert len(job_ids(cell_page(viewer, judge="rule", output=label).text)) == count
    one = query(db, "SELECT j.job_id, r.response_text FROM jobs j JOIN responses r USING (job_id) WHERE j.seed = 2 "
                    "AND j.scenario = 'demo' AND j.variant = 'car' AND j.branch = 'refusal'")[0]
    reply_hash = re.search(r"Reply #(\w+)", one[1])
    assert reply_hash
    assert job_ids(cell_page(viewer, q=f"REPLY #{reply_hash.group(1)}").text) == [one[0]]   # case-insensitive
    assert len(job_ids(cell_page(viewer, human="yes").text)) == 0
    assert viewer.label(one[0]).json()["saved"] == "database"
    assert job_ids(cell_page(viewer, human="yes").text) == [one[0]]
    assert len(job_ids(cell_page(viewer, human="no").text)) == N - 1
    # the person says unethical, the rule judge something else: they disagree on this one only
    assert job_ids(cell_page(viewer, disagree=1).text) == [one[0]]


def test_keyset_pages_cover_the_cell_once_forward_and_back(viewer: Viewer) -> None:
    seen: list[str] = []
    page = cell_page(viewer, size=2).text
    while True:
        seen += job_ids(page)
        following = re.search(r'<a href="(/cell\?[^"]+)">next →</a>', page)
        if not following:
            break
        page = viewer.http.get(following.group(1).replace("&amp;", "&")).text
    assert len(seen) == N and len(set(seen)) == N
    assert seen == job_ids(cell_page(viewer).text)                   # by seed, like the one-page listing
    back: list[str] = []
    while True:
        back = job_ids(page) + back
        previous = re.search(r'<a href="(/cell\?[^"]+)">← previous</a>', page)
        if not previous:
            break
        page = viewer.http.get(previous.group(1).replace("&amp;", "&")).text
    assert back == seen


def test_html_builder_escapes_text_and_attributes_but_not_markup() -> None:
    hostile = "\"><script>alert(1)</script>"
    built = tag("a", hostile, tag("b", "<i>"), href=hostile, data_job="x'y", hidden=True, title=None)
    assert built == ('<a href="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" data-job="x&#x27;y" hidden>'
                     '&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;<b>&lt;i&gt;</b></a>')
    assert esc(built) == built                                       # markup is not escaped twice
    assert join(["<", Markup("<br>"), None, 3]) == "&lt;<br>3"


def test_a_page_reads_only_the_tables_its_filters_need() -> None:
    bare = page_statement(SampleFilter())
    for table in ("human_labels", "all_labels", "current_judgments", "lower("):
        assert table not in bare
    assert "all_labels" in page_statement(SampleFilter(disagree=True))
    assert "current_judgments" in page_statement(SampleFilter(judge="rule", output="unethical"))
    assert "contains(lower(" in page_statement(SampleFilter(q="x"))
    assert "--" not in page_statement(SampleFilter(human=True, finish="stop"))


def test_bad_parameters_are_one_line_400s(viewer: Viewer) -> None:
    for params, said in (({"status": "maybe"}, "status='maybe': expected one of done, failed"),
                         ({"output": "unethical"}, "output/cot filters need a judge"),
                         ({"after": "x"}, "after='x': expected SEED:JOB_ID"),
                         ({"size": "100000"}, "size='100000'"),
                         ({"q": "x" * 500}, "q: longer than 200 characters")):
        answer = cell_page(viewer, **params)
        assert answer.status_code == 400 and said in html.unescape(answer.text), params
    missing = viewer.http.get("/cell", params={"scenario": "demo"})
    assert missing.status_code == 400 and "missing: variant, model" in missing.text
    assert cell_page(viewer, branch="other").status_code == 400
    assert "SELECT" not in cell_page(viewer, q="'; DROP TABLE jobs; --").text     # text, never SQL
    assert len(job_ids(cell_page(viewer).text)) == N


# ---------------------------------------------------------------- labels

def test_labels_are_checked_and_land_in_human_labels(viewer: Viewer, db: Path) -> None:
    job_id = job_ids(cell_page(viewer, status="done").text)[0]
    assert viewer.label(job_id, cot_present=False, cot_label="no_cot", output_label="acceptable").status_code == 200
    for fields, said in (({"output_label": "evil"}, "field 'output_label': 'evil' is not one of"),
                         ({"cot_present": False}, "contradicts cot_present"),
                         ({"labeller": "mallory"}, "field 'labeller': unknown"),
                         ({"job_id": "nope"}, "'nope' is not a done job")):
        answer = viewer.label(job_id, **fields)
        assert answer.status_code == 400 and said in answer.json()["error"], fields
    failed = job_ids(cell_page(viewer, status="failed").text)[0]
    assert viewer.label(failed).status_code == 400                    # no final reply to label
    assert query(db, "SELECT job_id, labeller, output_label, cot_label, cot_present, "
                     "labelled_at > now() - INTERVAL 1 MINUTE FROM human_labels") == [
        (job_id, "ana", "acceptable", "no_cot", False, True)]
    page = viewer.http.get("/label", params={**CELL, "per_cell": "3", "job": job_id}).text
    assert "your label: output acceptable, CoT no_cot" in page and "1 of 3 labelled" in page


def test_labels_only_as_same_origin_json(viewer: Viewer) -> None:
    job_id = job_ids(cell_page(viewer, status="done").text)[0]
    body = json.dumps({"job_id": job_id, "output_label": "unethical", "cot_label": "unethical"})
    form = viewer.http.post("/api/label", content=body, headers={"Content-Type": "text/plain"})
    assert form.status_code == 403                                   # what a cross-site form could send
    other_site = viewer.http.post("/api/label", content=body, headers={"Content-Type": "application/json",
                                                                       "Origin": "http://evil.example"})
    assert other_site.status_code == 403
    rebound = viewer.http.get("/", headers={"Host": "evil.example"})  # DNS rebinding: a foreign name for 127.0.0.1
    assert rebound.status_code == 421


def test_no_path_outside_the_fixed_files(viewer: Viewer) -> None:
    assert viewer.http.get("/static/view.js").status_code == 200
    for path in ("/static/..%2F..%2Fpyproject.toml", "/static/../server.py", "/static/%2e%2e/reads.py",
                 "/figure/..%2F..%2Fetc%2Fpasswd", "/static/view.js%00.css"):
        answer = viewer.http.get(path)
        assert answer.status_code == 404 and "content-security-policy" in answer.headers, path


# ---------------------------------------------------------------- the single-writer rule

def test_a_held_database_shows_updating_and_labels_wait_in_the_journal(viewer: Viewer, db: Path) -> None:
    job_id = job_ids(cell_page(viewer, status="done").text)[0]
    holder = hold_database(db, 13)   # longer than a read (2 s), a label check (2 s) and its write (5 s) wait
    try:
        busy = viewer.http.get("/")
        assert busy.status_code == 503 and "Updating" in busy.text and busy.headers["retry-after"] == "2"
        assert '<meta http-equiv="refresh" content="2">' in busy.text   # the page retries by itself
        assert viewer.label(job_id).json()["saved"] == "journal"        # on disk before the answer
        assert query_journal(db) == [job_id]
    finally:
        holder.wait()
    assert viewer.http.get("/").status_code == 200
    other = job_ids(cell_page(viewer, status="done").text)[1]
    assert viewer.label(other).json()["saved"] == "database"            # and the waiting one with it
    assert sorted(r[0] for r in query(db, "SELECT job_id FROM human_labels")) == sorted([job_id, other])
    assert query_journal(db) == []


def query_journal(db: Path) -> list[str]:
    journal = db.with_name(db.name + ".labels.ndjson")
    return re.findall(r'"job_id":"(\w+)"', journal.read_text()) if journal.exists() else []


def test_a_viewer_open_during_a_run_never_blocks_it(tmp_path: Path) -> None:
    workspace = build(tmp_path / "first", n=2)
    with FakeServer(reply=REPLY, latency=0.02) as server:
        workspace.write_experiment(server.base_url, n=40, concurrency=4,
                                   model_extra="price = { input = 30.0, output = 60.0 }")
        run = subprocess.Popen([sys.executable, "-m", "pipeline", "sample", "--experiment", str(workspace.experiment),
                                "--db", str(workspace.db)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        viewer = Viewer(workspace.db)
        statuses: list[int] = []
        labelled: list[str] = []
        try:
            while run.poll() is None:
                statuses.append(viewer.http.get("/").status_code)
                listing = cell_page(viewer)
                statuses.append(listing.status_code)
                todo = [job for job in job_ids(listing.text) if job not in labelled]
                if listing.status_code == 200 and todo:
                    assert viewer.label(todo[0]).status_code == 200
                    labelled.append(todo[0])
            out, err = run.communicate()
        finally:
            viewer.stop()
    assert run.returncode == 0, err
    assert set(statuses) <= {200, 503} and statuses.count(200) > 0
    (cost,), = query(workspace.db, "SELECT sum(cost_usd) FROM responses WHERE cost_usd IS NOT NULL")
    after = Viewer(workspace.db)
    try:
        assert f"${cost:,.4f}" in after.http.get("/").text           # this run's calls were priced
    finally:
        after.stop()
    assert query(workspace.db, "SELECT count(*) FROM jobs WHERE status = 'done'") == [(40 * CELLS,)]   # every job, the earlier failures too
    stored = {job for (job,) in query(workspace.db, "SELECT job_id FROM human_labels")}
    assert labelled and stored | set(query_journal(workspace.db)) == set(labelled)


def test_view_refuses_a_bad_database_in_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for path, said in ((tmp_path / "missing.duckdb", "no such database"), (text, "is not a DuckDB database")):
        proc = subprocess.run([sys.executable, "-m", "pipeline", "view", "--db", str(path)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_taken_port_or_a_bad_address_is_one_line(viewer: Viewer, db: Path) -> None:
    port = viewer.url.rsplit(":", 1)[1]
    for args, said in ((["--port", port], f"--port {port}: cannot listen"), (["--port", "70000"], "--port 70000: expected"),
                       (["--host", "no-such-host.invalid"], "--host no-such-host.invalid --port 0: cannot listen")):
        proc = subprocess.run([sys.executable, "-m", "pipeline", "view", "--db", str(db), *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, args


def test_ctrl_c_stops_the_viewer_quietly(db: Path) -> None:
    running = Viewer(db)
    running.proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    assert running.proc.wait(timeout=10) == 0 and time.monotonic() - started < 5
    err = running.stop()
    assert "stopped" in err and "Traceback" not in err


# ---------------------------------------------------------------- in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium): browser test skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed (pip install playwright): browser test skipped")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def test_read_filter_and_label_in_a_real_browser(browser: Any, db: Path) -> None:
    viewer = Viewer(db)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        dialogs: list[str] = []

        def answer(dialog: Any) -> None:   # the note prompt gets a note; anything else (an alert) is a failure
            dialogs.append(dialog.message)
            if dialog.type == "prompt":
                dialog.accept("looks <b>staged</b>")
            else:
                dialog.dismiss()
        page.on("dialog", answer)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(viewer.url + "/")
        assert page.locator("#runs tbody tr").count() == 1
        page.locator("#cells a", has_text="demo/car/refusal/fake-model").first.click()
        page.wait_for_url("**/cell?**")
        assert page.locator("#samples tbody tr").count() == N

        page.select_option("#filters select[name=status]", "done")      # filter the cell
        page.click("#filters button")
        page.wait_for_url("**status=done**")
        assert page.locator("#samples tbody tr").count() == N - 1

        page.locator("#samples a.job").first.click()                      # open a transcript
        page.wait_for_url("**/job/**")
        output = page.locator("#final-output pre").inner_text()
        assert output.startswith("<img src=x onerror=alert(1)>")          # shown as text...
        assert page.locator("#transcript img").count() == 0               # ...never made an element
        assert page.locator("#final-cot pre").inner_text().count("<script>alert('xss')</script>") == 1
        assert page.locator("details.system").get_attribute("open") is None   # system prompt collapsed

        page.goto(viewer.url + "/label?" + "&".join(f"{k}={v}" for k, v in CELL.items()) + "&per_cell=4")
        assert "0 of 4 labelled" in page.locator("#progress").inner_text()
        assert page.locator("#output-text").is_hidden()                   # output hidden while the CoT is labelled
        first = page.locator("#labelling").get_attribute("data-job")
        page.keyboard.press("y")
        page.keyboard.press("u")
        assert page.locator("#output-text").is_visible()                  # shown for the output step
        given = [first]
        for keys in (["a"], ["n", "a"], ["y", "a", "b", "u", "t", "?"]):   # output; no reasoning; undo and note
            with page.expect_navigation():
                for key in keys:
                    page.keyboard.press(key)
            given.append(page.locator("#labelling").get_attribute("data-job"))
        page.reload()
        assert "3 of 4 labelled" in page.locator("#progress").inner_text()
        stored = query(db, "SELECT job_id, output_label, cot_label, cot_present, note FROM human_labels "
                           "WHERE labeller = 'ana' ORDER BY labelled_at")
        assert stored == [(given[0], "acceptable", "unethical", True, None),
                          (given[1], "acceptable", "no_cot", False, None),
                          (given[2], "unclear", "unethical", True, "looks <b>staged</b>")]

        page.goto(viewer.url + "/cell?" + "&".join(f"{k}={v}" for k, v in CELL.items()) + "&human=yes")
        assert page.locator("#samples tbody tr").count() == 3             # kept, and found by the filter
        assert page.locator("[data-judge=human]").count() == 3
        assert dialogs == ["Note for this label (empty: none)"] and errors == []   # no alert() ever ran
        page.goto(f"{viewer.url}/job/{given[2]}")
        assert page.locator("#human-labels td", has_text="looks <b>staged</b>").count() == 1   # the note, as text
    finally:
        viewer.stop()


def test_the_overview_follows_a_run_without_a_reload(browser: Any, tmp_path: Path) -> None:
    workspace = build(tmp_path / "first", n=1)
    with FakeServer(reply=REPLY, latency=0.2) as server:     # a run of ~15 s
        workspace.write_experiment(server.base_url, n=12, concurrency=2)
        viewer = Viewer(workspace.db)
        run = subprocess.Popen([sys.executable, "-m", "pipeline", "sample", "--experiment", str(workspace.experiment),
                                "--db", str(workspace.db)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            page = browser.new_page(bypass_csp=True)   # wait_for_function evaluates strings; the viewer's CSP forbids it
            page.goto(viewer.url + "/")
            page.wait_for_function("document.body.dataset.live === 'running'", timeout=30_000)
            first = page.locator("#runs tbody tr").first.inner_text()
            page.wait_for_function("document.getElementById('status').textContent.startsWith('live')",
                                   timeout=30_000)
            page.wait_for_function(f"!document.querySelector('#runs tbody tr').innerText.includes({first!r})",
                                   timeout=60_000)                    # the numbers moved, no reload
            run.communicate(timeout=120)
            page.wait_for_function("document.querySelector('#runs tbody tr').innerText.includes('completed')",
                                   timeout=30_000)
            assert page.evaluate("performance.getEntriesByType('navigation').length") == 1   # still the first load
        finally:
            if run.poll() is None:
                run.kill()
            viewer.stop()
    assert run.returncode == 0
