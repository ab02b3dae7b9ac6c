"""`make bench`: the real `pipeline sample` CLI against the fake server, case by case.

Each case starts tests/fakeserver.py on 127.0.0.1 with its knobs, runs the CLI as a
separate process (as a user would) and reads the outcome from the server's counters and
the DuckDB file. Prints a table and writes data/bench/results.json.

    python -m benchmarks.bench [--only 1,3] [--quick] [--scale 10000,100000] [--resume-jobs 20000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.replay import replay_case
from tests.fakeserver import FakeServer

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "scenarios"
OUT = REPO / "data" / "bench" / "results.json"
SHIPPED = REPO / "scenarios"
FIXED_CELLS = 6        # fixture grid with branches refusal + rebuttal: one call per job
ALL_CELLS = 9          # + sampled (two calls per job)
SHIPPED_CELLS = 12     # shipped scenarios: 4 scenario/variant pairs x 3 branches
SHIPPED_SAMPLED = 4    # ... of which the sampled ones make two calls per job


@dataclass
class Outcome:
    """One finished `pipeline sample` process."""

    returncode: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    stdout: str
    stderr: str


@dataclass
class Bench:
    root: Path
    quick: bool
    scale_sizes: tuple[int, ...] = ()
    resume_jobs: int | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def workspace(self, name: str, base_url: str, *, jobs: int, sampled: bool = False,
                  concurrency: int = 32, timeout_s: float = 30, model_extra: str = "",
                  shipped: bool = False) -> tuple[Path, Path, int]:
        """Scenario copy + experiment file + db path; returns (experiment, db, n per cell).
        `shipped`: the real scenarios (~1,300-token conversations), all three branches."""
        root = self.root / name
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(SHIPPED if shipped else FIXTURES, root / "scenarios",
                        ignore=shutil.ignore_patterns("experiments"))
        sampled = sampled or shipped
        cells = SHIPPED_CELLS if shipped else ALL_CELLS if sampled else FIXED_CELLS
        n = math.ceil(jobs / cells)
        branches = '["sampled", "refusal", "rebuttal"]' if sampled else '["refusal", "rebuttal"]'
        experiment = root / "scenarios" / "experiments" / "bench.toml"
        experiment.parent.mkdir(parents=True)
        experiment.write_text(
            f'name = "bench-{name}"\nbranches = {branches}\nsamples_per_cell = {n}\n'
            f'[params]\nmax_tokens = 32\n[[models]]\nname = "fake"\nbase_url = "{base_url}"\n'
            f'concurrency = {concurrency}\ntimeout_s = {timeout_s}\n{model_extra}\n')
        return experiment, root / "results.duckdb", n

    def sample(self, experiment: Path, db: Path, *args: str) -> Outcome:
        outcome = run_cli(["sample", "--experiment", str(experiment), "--db", str(db), *args])
        if outcome.returncode != 0:
            raise SystemExit(f"pipeline sample failed ({outcome.returncode}):\n{outcome.stderr[-2000:]}")
        return outcome


def run_cli(args: list[str]) -> Outcome:
    """Run the pipeline's CLI (see run_process)."""
    return run_process([sys.executable, "-m", "pipeline", *args])


def run_process(command: list[str], env: dict[str, str] | None = None) -> Outcome:
    """Run a command from the repository; CPU comes from wait4 (after _install_wait4), peak RSS
    from the process's own VmHWM, read until it exits: wait4's maximum also counts the memory
    of this (bench) process at the fork, which case 6's polling of the server's stats made GBs."""
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = PeakWatcher(proc.pid)
    peak.start()
    out, err = proc.communicate()
    wall = time.monotonic() - started
    peak.join()
    usage = proc_usage(proc)
    return Outcome(proc.returncode, wall, usage[0], peak.mb if peak.mb else usage[1], out, err)


class PeakWatcher(threading.Thread):
    """A process's own peak RSS (VmHWM), read every 20 ms until the process is gone."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.path = Path(f"/proc/{pid}/status")
        self.mb = 0.0

    def run(self) -> None:
        while True:
            try:
                status = self.path.read_text()
            except OSError:
                return
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.mb = max(self.mb, int(line.split()[1]) / 1024)
                if line.startswith("State:") and "zombie" in line:
                    return
            time.sleep(0.02)


_USAGE: dict[int, tuple[float, float]] = {}


def proc_usage(proc: subprocess.Popen[str]) -> tuple[float, float]:
    return _USAGE.get(proc.pid, (float("nan"), float("nan")))


def _install_wait4() -> None:
    """Popen reaps children itself; wrap its wait to keep the child's own rusage."""
    def try_wait(self: subprocess.Popen[Any], wait_flags: int) -> tuple[int, int]:
        pid, status, usage = os.wait4(self.pid, wait_flags)
        if pid:
            _USAGE[pid] = (usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)
        return pid, status

    subprocess.Popen._try_wait = try_wait  # type: ignore[attr-defined]


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def done_once(db: Path, planned: int) -> bool:
    rows = query(db, "SELECT count(*), count(DISTINCT job_id) FROM jobs WHERE status = 'done'")
    return rows == [(planned, planned)]


def chat_requests(server: FakeServer) -> int:
    return int(server.stats()["requests"])


def usage_tokens(db: Path) -> int:
    return int(query(db, "SELECT sum(prompt_tokens + completion_tokens) FROM responses WHERE error IS NULL")[0][0])


# --- cases -------------------------------------------------------------------------------

def case_rate_limited(b: Bench, learned: bool = False) -> None:
    """1 (+7): 2,000 jobs at 3,000 rpm, 400 ms latency; readers poll the db meanwhile.
    With `learned`, the client is given no limit and must pace by the server's headers."""
    jobs, rpm, latency, concurrency = (600 if b.quick else 2000), 3000, 0.4, 32
    with FakeServer(rpm=rpm, latency=latency, jitter=0.05) as server:
        experiment, db, n = b.workspace("rate", server.base_url, jobs=jobs, concurrency=concurrency)
        reader = None if learned else LiveReader(db)
        if reader:
            reader.start()
        outcome = b.sample(experiment, db, *([] if learned else ["--rpm", str(rpm)]))
        if reader:
            reader.stop()
        stats = server.stats()
    requests = stats["requests"]
    planned = n * FIXED_CELLS
    ideal = max(planned * 60 / rpm, planned * latency / concurrency)
    name = "1b rate-limited, limit learned from headers" if learned else "1 rate-limited"
    b.results.append(row(name, outcome, jobs=planned, requests=requests,
                         http_429=stats["by_status"].get("429", 0), ideal_s=ideal,
                         ratio=outcome.wall_s / ideal, all_once=done_once(db, planned)))
    if reader:
        b.results.append(reader.result())


def case_token_limited(b: Bench) -> None:
    """2: as 1, but the token limit binds."""
    jobs, rpm, latency, concurrency = (600 if b.quick else 2000), 3000, 0.4, 32
    tpm = 150_000  # ~62 tokens/request -> ~2,400 requests/min: the token limit binds, not the 3,000 rpm
    with FakeServer(rpm=rpm, tpm=tpm, latency=latency, jitter=0.05) as server:
        experiment, db, n = b.workspace("tokens", server.base_url, jobs=jobs, concurrency=concurrency)
        outcome = b.sample(experiment, db, "--rpm", str(rpm), "--tpm", str(tpm))
        stats = server.stats()
    planned = n * FIXED_CELLS
    tokens = usage_tokens(db)
    ideal = max(planned * 60 / rpm, tokens * 60 / tpm, planned * latency / concurrency)
    b.results.append(row("2 token-limited", outcome, jobs=planned, requests=stats["requests"],
                         tokens=tokens, http_429=stats["by_status"].get("429", 0), ideal_s=ideal,
                         ratio=outcome.wall_s / ideal, all_once=done_once(db, planned)))


def case_overhead(b: Bench) -> None:
    """3: zero latency, no limits: the pipeline's own cost per job, DuckDB included."""
    jobs = 5000 if b.quick else 20_000
    with FakeServer() as server:
        experiment, db, n = b.workspace("overhead", server.base_url, jobs=jobs, sampled=True)
        outcome = b.sample(experiment, db)
        requests = chat_requests(server)
    planned = n * ALL_CELLS
    b.results.append(row("3 overhead", outcome, jobs=planned, requests=requests,
                         jobs_per_s=planned / outcome.wall_s,
                         cpu_s_per_1000_jobs=outcome.cpu_s / planned * 1000,
                         all_once=done_once(db, planned)))


def case_scale(b: Bench) -> None:
    """4: the shipped scenarios at zero latency, run to completion, at growing sizes: peak RSS,
    database bytes per job, jobs/s, planning, time to the first request, view latency."""
    sizes = b.scale_sizes or ((10_000, 50_000) if b.quick else (10_000, 100_000, 1_000_000))
    with FakeServer() as server:
        for jobs in sizes:
            experiment, db, n = b.workspace(f"scale{jobs}", server.base_url, jobs=jobs, shipped=True)
            dry = run_cli(["sample", "--dry-run", "--experiment", str(experiment), "--db", str(db)])
            server.reset()
            started = time.time()
            outcome = b.sample(experiment, db)
            planned = n * SHIPPED_CELLS
            first = query(db, "SELECT epoch(min(created_at)) FROM responses")[0][0]
            b.results.append(row(f"4 scale {planned}", outcome, jobs=planned, plan_s=dry.wall_s,
                                 first_request_s=first - started, jobs_per_s=planned / outcome.wall_s,
                                 db_bytes_per_job=db.stat().st_size / planned,
                                 **view_latency(db), **export_round_trip(db), all_once=done_once(db, planned)))
            if jobs != sizes[-1]:
                shutil.rmtree(db.parent, ignore_errors=True)


def export_round_trip(db: Path) -> dict[str, Any]:
    """`pipeline export` to Parquet, read back by DuckDB: seconds, and whether rows and labels match."""
    out = db.parent / "export"
    outcome = run_cli(["export", "--db", str(db), "--out", str(out)])
    result: dict[str, Any] = {"export_s": outcome.wall_s, "export_peak_rss_mb": outcome.max_rss_mb}
    if outcome.returncode != 0:
        return {**result, "export_matches": False, "export_error": outcome.stderr.strip()[-300:]}
    exported = duckdb.connect().execute(
        f"SELECT count(*), count(*) FILTER (WHERE rule_output_label = 'unethical') "
        f"FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true)").fetchall()
    stored = query(db, "SELECT count(*), count(*) FILTER (WHERE g.output_label = 'unethical') FROM final_responses f "
                       "LEFT JOIN current_judgments g ON g.job_id = f.job_id AND g.judge = 'rule'")
    return {**result, "export_matches": exported == stored}


def view_latency(db: Path) -> dict[str, float]:
    """Seconds to read `rates` and `branch_comparison` in full once every final response has a
    (synthetic, deterministic) rule-judge label: the views' cost at this size, not the judge's."""
    con = duckdb.connect(str(db))
    try:
        con.execute("""INSERT INTO judgments (job_id, judge, judge_version, cot_present, cot_text, output_text,
                                             output_label, cot_label, detail, graded_at)
                       SELECT job_id, 'rule', 'bench', hash(job_id) % 3 > 0, NULL, NULL,
                       ['unethical', 'acceptable', 'unclear'][(hash(job_id) % 3)::INTEGER + 1],
                       ['unethical', 'acceptable', 'no_cot'][(hash(job_id || 'c') % 3)::INTEGER + 1], NULL, now()
                       FROM final_responses""")
    finally:
        con.close()
    timings = {}
    for view in ("rates", "branch_comparison"):
        started = time.monotonic()
        query(db, f"SELECT * FROM {view}")
        timings[f"{view}_s"] = time.monotonic() - started
    return timings


def case_faults(b: Bench) -> None:
    """5: 5% 500/503, 1% hangs (client timeout fires), a 10 s all-429 burst mid-run."""
    jobs, burst = (600 if b.quick else 2000), 10.0
    with FakeServer(latency=0.05, error_rate=0.05, hang_rate=0.01, seed=11) as server:
        experiment, db, n = b.workspace("faults", server.base_url, jobs=jobs, concurrency=32,
                                        timeout_s=2, model_extra="max_attempts = 8")
        timer = threading.Timer(2.0, lambda: server.configure(all_429_for_s=burst))
        timer.start()
        outcome = b.sample(experiment, db)
        timer.cancel()
        stats = server.stats()
    planned = n * FIXED_CELLS
    gaps = query(db, """SELECT max(gap) FROM (SELECT epoch(created_at) - epoch(lag(created_at) OVER (ORDER BY created_at))
                        AS gap FROM responses WHERE error IS NULL)""")[0][0]
    b.results.append(row("5 faults", outcome, jobs=planned, requests=stats["requests"],
                         http_5xx=stats["by_status"].get("500", 0) + stats["by_status"].get("503", 0),
                         hangs=stats["by_status"].get("hang", 0), http_429=stats["by_status"].get("429", 0),
                         longest_stall_s=gaps, longest_retry_after_s=burst,
                         all_once=done_once(db, planned)))


def case_resume(b: Bench) -> None:
    """6: kill -9 at about half, rerun: time to first new request, wasted calls (shipped scenarios;
    a million jobs by default: the restart reads half a million done jobs and their journal)."""
    jobs = b.resume_jobs or (5000 if b.quick else 1_000_000)
    with FakeServer(latency=0.01) as server:
        experiment, db, n = b.workspace("resume", server.base_url, jobs=jobs, concurrency=32, shipped=True)
        planned = n * SHIPPED_CELLS
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "sample", "--experiment", str(experiment),
                                 "--db", str(db)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        calls = n * (SHIPPED_CELLS + SHIPPED_SAMPLED)
        while chat_requests(server) < calls // 2:
            time.sleep(0.2)   # the stats carry every call: polling them faster slows the server
        in_flight = server.stats()["max_in_flight"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first_run_requests = chat_requests(server)
        server.reset()
        restarted = time.time()
        outcome = b.sample(experiment, db)
        second_run = query(db, "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0][0]
        first_new = query(db, f"SELECT epoch(min(created_at)) FROM responses WHERE run_id = '{second_run}'")[0][0]
        total = first_run_requests + chat_requests(server)
    b.results.append(row("6 resume", outcome, jobs=planned, first_new_request_s=first_new - restarted,
                         wasted_calls=total - calls, in_flight_at_kill=in_flight,
                         all_once=done_once(db, planned)))


class LiveReader(threading.Thread):
    """7: `pipeline status` and `pipeline sql` from another process every second."""

    def __init__(self, db: Path):
        super().__init__(daemon=True)
        self.db = db
        self.ok = self.failed = 0
        self.worst_s = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self.db.exists() and not self._stop_event.is_set():
            time.sleep(0.1)
        while not self._stop_event.wait(1.0):
            for args in (["status", "--db", str(self.db)],
                         ["sql", "select count(*) from responses", "--db", str(self.db)]):
                started = time.monotonic()
                proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True)
                self.worst_s = max(self.worst_s, time.monotonic() - started)
                if proc.returncode == 0:
                    self.ok += 1
                else:
                    self.failed += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def result(self) -> dict[str, Any]:
        return {"case": "7 live read (during 1)", "reads_ok": self.ok, "reads_failed": self.failed,
                "worst_read_s": round(self.worst_s, 2)}


def row(case: str, outcome: Outcome, **metrics: Any) -> dict[str, Any]:
    if outcome.returncode != 0:
        metrics["error"] = (outcome.stderr.strip().splitlines() or ["?"])[-1]
    values = {"case": case, "exit": outcome.returncode, "wall_s": outcome.wall_s,
              "cpu_s": outcome.cpu_s, "peak_rss_mb": outcome.max_rss_mb, **metrics}
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()}


def case_embedded_replay(b: Bench) -> None:
    """8: the embedded model, pipeline vs a minimal client replaying the same requests (benchmarks/replay.py)."""
    b.results.append(replay_case(b.root, 1 if b.quick else 5, run_cli))


CASES: dict[str, Callable[[Bench], None]] = {
    "1": case_rate_limited, "1b": partial(case_rate_limited, learned=True), "2": case_token_limited, "3": case_overhead, "4": case_scale,
    "5": case_faults, "6": case_resume, "8": case_embedded_replay,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated case numbers (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--scale", help="comma-separated job counts for case 4 (default 10000,100000,1000000)")
    parser.add_argument("--resume-jobs", type=int, help="job count for case 6 (default 1000000)")
    args = parser.parse_args()
    _install_wait4()
    machine = {"cores": os.cpu_count(), "python": sys.version.split()[0], "quick": args.quick}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        sizes = tuple(int(size) for size in args.scale.split(",")) if args.scale else ()
        bench = Bench(Path(tmp), args.quick, sizes, args.resume_jobs)
        for key in (args.only.split(",") if args.only else CASES):
            started = time.monotonic()
            CASES[key](bench)
            print(f"case {key} done in {time.monotonic() - started:.0f} s", file=sys.stderr)
            OUT.write_text(json.dumps({"machine": machine, "results": bench.results}, indent=2))
    print(f"machine: {machine}")
    for result in bench.results:
        print("  ".join(f"{k}={v}" for k, v in result.items()))
    print(f"written: {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
