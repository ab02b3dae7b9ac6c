"""`make bench-peers`: bench case 1's workload through the pipeline and through Inspect AI.

Both tools send the same conversations (the pipeline's fixture grid, refusal and rebuttal
branches: one call per job; Inspect replays the conversations the pipeline sent) to a fresh
tests/fakeserver.py each, at concurrency 32, against a server allowing 3,000 rpm with
400 ± 50 ms latency. The pipeline is told the limit (`--rpm`); Inspect has no such setting
and relies on its own retries. Inspect runs from its own venv (.venv-peers, built on first
use from benchmarks/peers-requirements.txt) so that its dependencies never touch the
pipeline's locked ones. Prints a table and writes data/bench/peers.json.

    python -m benchmarks.peers [--requests 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.bench import FIXED_CELLS, REPO, Bench, Outcome, _install_wait4, query, run_process
from benchmarks.replay import SPAN
from tests.fakeserver import FakeServer

PEERS_VENV = REPO / ".venv-peers"
REQUIREMENTS = Path(__file__).with_name("peers-requirements.txt")
TASK = Path(__file__).with_name("inspect_task.py")   # given to Inspect relative to REPO (its cwd): it rejects absolute task paths
OUT = REPO / "data" / "bench" / "peers.json"
RPM, LATENCY, JITTER, CONCURRENCY = 3000, 0.4, 0.05, 32
MAX_TOKENS = 32   # what Bench.workspace's experiment asks for
# Inspect's OpenAI-compatible provider: `openai-api/<service>/<model>` reads <SERVICE>_BASE_URL
# and <SERVICE>_API_KEY from the environment.
INSPECT_MODEL = "openai-api/fake/fake-model"
CONVERSATIONS = """SELECT p.request_messages FROM responses r JOIN prompt_messages p USING (prompt_id)
WHERE r.error IS NULL ORDER BY r.created_at"""
COLUMNS = ("tool", "requests", "429s", "wall s", "ideal s", "wall/ideal", "span s", "span/ideal", "cpu s", "load")


class PeersError(Exception):
    """A failure worth one line to the user (no traceback)."""


@dataclass
class Result:
    """One tool's run. `span_s`: first request sent to last answer received, i.e. the wall
    time without the tool's start-up and shutdown; `load`: 1-minute load average before it."""

    tool: str
    conversations: int
    requests: int
    http_429: int
    wall_s: float
    ideal_s: float
    span_s: float
    cpu_s: float
    load: float

    def cells(self) -> tuple[str, ...]:
        return (self.tool, str(self.requests), str(self.http_429), f"{self.wall_s:.1f}", f"{self.ideal_s:.1f}",
                f"{self.wall_s / self.ideal_s:.2f}x", f"{self.span_s:.1f}", f"{self.span_s / self.ideal_s:.2f}x",
                f"{self.cpu_s:.1f}", f"{self.load:.1f}")


def ideal_s(conversations: int, rpm: float = RPM, latency: float = LATENCY, concurrency: int = CONCURRENCY) -> float:
    """The fastest any client could finish: bound by the rate limit or by latency at this concurrency."""
    return max(conversations * 60 / rpm, conversations * latency / concurrency)


def table(results: list[Result]) -> str:
    """A plain aligned table, one row per tool."""
    rows = [COLUMNS, *(result.cells() for result in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def ensure_venv(venv: Path, requirements: Path) -> Path:
    """The peers venv's bin directory, (re)built unless a finished build of these requirements is there."""
    marker, wanted = venv / ".installed", requirements.read_text(encoding="utf-8")
    if marker.exists() and marker.read_text(encoding="utf-8") == wanted and (venv / "bin" / "inspect").exists():
        return venv / "bin"
    name = venv.relative_to(REPO) if venv.is_relative_to(REPO) else venv
    print(f"building {name} from {requirements.name} (first use; a minute or two)", file=sys.stderr)
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        raise PeersError(f"could not create {name}: {last_line(made.stderr)}")
    log = venv / "install.log"
    with log.open("w", encoding="utf-8") as out:
        installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                                    "-r", str(requirements)], stdout=out, stderr=subprocess.STDOUT)
    if installed.returncode != 0:
        reason = last_line(log.read_text(encoding="utf-8"), prefix="ERROR")
        raise PeersError(f"could not install {requirements.name} into {name} (no network or registry?): "
                         f"{reason}; full output in {log}")
    marker.write_text(wanted, encoding="utf-8")
    return venv / "bin"


def pins(requirements: Path) -> list[str]:
    """The requirement lines, without comments."""
    lines = (line.split("#", 1)[0].strip() for line in requirements.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def last_line(text: str, prefix: str = "") -> str:
    """The last non-empty line starting with `prefix` (else the last non-empty line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    chosen = [line for line in lines if line.startswith(prefix)] or lines
    return chosen[-1] if chosen else "no output"


def run_pipeline(bench: Bench, requests: int) -> tuple[Result, list[str]]:
    """Bench case 1 at this size; returns its result and the conversations it sent (JSON)."""
    load = os.getloadavg()[0]
    with FakeServer(rpm=RPM, latency=LATENCY, jitter=JITTER) as server:
        experiment, db, n = bench.workspace("peers", server.base_url, jobs=requests, concurrency=CONCURRENCY)
        outcome = bench.sample(experiment, db, "--rpm", str(RPM))
        stats = server.stats()
    conversations = [str(row[0]) for row in query(db, CONVERSATIONS)]
    if len(conversations) != n * FIXED_CELLS:
        raise PeersError(f"the pipeline stored {len(conversations)} answers, expected {n * FIXED_CELLS}")
    span = float(query(db, SPAN)[0][0])
    return result("pipeline", len(conversations), stats, outcome, span, load), conversations


def run_inspect(bin_dir: Path, dataset: Path, conversations: int) -> Result:
    """`inspect eval` of benchmarks/inspect_task.py over the same conversations, same server settings."""
    logs = dataset.parent / "inspect-logs"
    load = os.getloadavg()[0]
    with FakeServer(rpm=RPM, latency=LATENCY, jitter=JITTER) as server:
        env = {**os.environ, "FAKE_BASE_URL": server.base_url, "FAKE_API_KEY": "unused-by-the-fake-server"}
        outcome = run_process([str(bin_dir / "inspect"), "eval", str(TASK.relative_to(REPO)), "-T", f"dataset={dataset}",
                               "--model", INSPECT_MODEL, "--max-connections", str(CONCURRENCY),
                               "--max-tokens", str(MAX_TOKENS), "--log-dir", str(logs), "--log-format", "json",
                               "--display", "none"], env=env)
        stats = server.stats()
    if outcome.returncode != 0:
        raise PeersError(f"inspect eval failed ({outcome.returncode}): {last_line(outcome.stderr)}")
    span = inspect_span(read_log(logs), conversations)
    return result("inspect-ai", conversations, stats, outcome, span, load)


def read_log(logs: Path) -> dict[str, Any]:
    files = sorted(logs.glob("*.json"))
    if len(files) != 1:
        raise PeersError(f"expected one Inspect log in {logs}, found {len(files)}")
    log: dict[str, Any] = json.loads(files[0].read_text(encoding="utf-8"))
    return log


def inspect_span(log: dict[str, Any], expected: int) -> float:
    """First sample's start to last sample's end, from an Inspect eval log, after checking
    that every sample completed."""
    samples = log.get("samples") or []
    if log.get("status") != "success" or len(samples) != expected:
        raise PeersError(f"Inspect's eval ended {log.get('status')!r} with {len(samples)} of {expected} samples")
    starts = [datetime.fromisoformat(sample["started_at"]) for sample in samples]
    ends = [datetime.fromisoformat(sample["completed_at"]) for sample in samples]
    return (max(ends) - min(starts)).total_seconds()


def result(tool: str, conversations: int, stats: dict[str, Any], outcome: Outcome, span: float,
           load: float) -> Result:
    return Result(tool, conversations, int(stats["requests"]), int(stats["by_status"].get("429", 0)),
                  outcome.wall_s, ideal_s(conversations), span, outcome.cpu_s, load)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000,
                        help="conversations to send (rounded up to the fixture grid's 6 cells; default 1000)")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    _install_wait4()
    try:
        bin_dir = ensure_venv(PEERS_VENV, REQUIREMENTS)
        with tempfile.TemporaryDirectory(prefix="pipeline-peers-") as tmp:
            pipeline, conversations = run_pipeline(Bench(Path(tmp), quick=False), args.requests)
            dataset = Path(tmp) / "conversations.jsonl"
            dataset.write_text("\n".join(conversations) + "\n", encoding="utf-8")
            inspect = run_inspect(bin_dir, dataset, len(conversations))
    except PeersError as exc:
        print(f"bench-peers: {exc}", file=sys.stderr)
        return 2
    results = [pipeline, inspect]
    workload = {"conversations": pipeline.conversations, "rpm": RPM, "latency_s": LATENCY, "jitter_s": JITTER,
                "concurrency": CONCURRENCY, "max_tokens": MAX_TOKENS,
                "inspect_requirements": pins(REQUIREMENTS)}
    machine = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": machine, "workload": workload,
                               "results": [asdict(r) for r in results]}, indent=2), encoding="utf-8")
    print(f"{pipeline.conversations} conversations, server {RPM} rpm, latency {LATENCY} ± {JITTER} s, "
          f"concurrency {CONCURRENCY}")
    print(table(results))
    print(f"written: {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
