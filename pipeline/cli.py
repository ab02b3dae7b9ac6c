"""Command line: `python -m pipeline {sample,status,sql,grade,label,report,export,view,serve} ...` : parsing, wiring and printing; the work lives in the stage packages."""

from __future__ import annotations

import argparse
import getpass
import math
import os
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import structlog

from pipeline.errors import PipelineError
from pipeline.experiment.config import (
    COT_MODES,
    DEFAULT_COT,
    Experiment,
    ModelConfig,
    endpoint_model,
    load_experiment,
    override_limits,
    single_endpoint,
    with_limits,
)
from pipeline.experiment.scenarios import Scenario, load_scenarios
from pipeline.grading import human
from pipeline.grading.evaluate import format_agreement, load_fixtures
from pipeline.grading.grade import grade, predict
from pipeline.grading.judges import JUDGE_KINDS, make_judge
from pipeline.grading.llm_judge import DEFAULT_COT_BUDGET_TOKENS, JUDGE_PARAMS
from pipeline.grading.rule_judge import RULE_JUDGE_NAME
from pipeline.local_model.server import DEFAULT_CTX_PER_SLOT, DEFAULT_SLOTS, serve_forever
from pipeline.logs import configure_logging
from pipeline.progress import Progress, format_usd
from pipeline.sampling.batch.driver import BatchOptions
from pipeline.sampling.budget import check_priced, cost_lines
from pipeline.sampling.dryrun import describe_plan
from pipeline.sampling.embedded import start_embedded_models
from pipeline.sampling.engine import EngineTally
from pipeline.sampling.plan import Cell, DoneIndex, load_done, plan_cells
from pipeline.sampling.runner import RunSummary, sample
from pipeline.sampling.truncation import cap_warnings, truncation_lines
from pipeline.store.adhoc import check_read_only, open_sql_reader, refused_file_access
from pipeline.store.connection import WaitAbandoned, open_reader, run_lock, stop_waiting
from pipeline.store.queries import sql
from pipeline.store.writer import Store

DEFAULT_DB = Path("data/results.duckdb")
DEFAULT_EXPERIMENT = Path("scenarios/experiments/default.toml")
DEFAULT_SCENARIOS = Path("scenarios")
DEFAULT_FIXTURES = Path("tests/fixtures/labelled/tune.jsonl")
DEFAULT_REPORT = Path("data/report")
log = structlog.get_logger()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-json", action="store_true", help="structured logs as JSON lines")
    common.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common])

    run = command("sample", "sample the experiment grid into the database (resumable)")
    run.add_argument("--experiment", type=Path, default=DEFAULT_EXPERIMENT, help="experiment TOML file")
    run.add_argument("--n", type=int, help="samples per cell (default: the experiment's samples_per_cell)")
    run.add_argument("--dry-run", action="store_true", help="print the plan and its cost; send nothing")
    run.add_argument("--max-cost", type=float, metavar="USD",
                     help="stop sending before the experiment's cost in this database would pass USD "
                          "(exit 3; default: the experiment's budget_usd)")
    run.add_argument("--batch", action="store_true",
                     help="sample every model through the Batch API (/v1/files, /v1/batches; half price at OpenAI)")
    run.add_argument("--no-wait", action="store_true",
                     help="with batches: submit and exit; a later `sample --batch` collects")
    run.add_argument("--poll-s", type=float, default=30.0, help="with batches: seconds between polls (default 30)")
    run.add_argument("--cot", choices=COT_MODES, default=DEFAULT_COT,
                     help="with --base-url: where the CoT comes from (native: the model's own reasoning, "
                          "no CoT instruction; default prompted)")
    _add_db(run)
    _add_endpoint(run, "single endpoint (replaces the experiment's models)")

    status = command("status", "done/pending/failed per cell (works during a run)")
    _add_db(status)

    sql = command("sql", "run a read-only SQL query and print a table (works during a run)")
    sql.add_argument("query")
    sql.add_argument("--max-rows", type=int, default=50)
    _add_db(sql)

    grade = command("grade", "label final responses a judge has not labelled yet (never resamples)")
    grade.add_argument("--judge", choices=JUDGE_KINDS, default="rule",
                       help="rule: offline regex rules from the scenario files; llm: a chat model (needs --base-url/--model)")
    grade.add_argument("--scenarios-dir", type=Path, default=DEFAULT_SCENARIOS, help="where the scenario files are")
    grade.add_argument("--eval-fixtures", nargs="?", const=DEFAULT_FIXTURES, type=Path, metavar="JSONL",
                       help=f"instead of grading: accuracy and Cohen's kappa against hand labels ({DEFAULT_FIXTURES})")
    grade.add_argument("--json", action="store_true", help="with --eval-fixtures: print the scores as JSON")
    grade.add_argument("--cot-budget", type=int, default=DEFAULT_COT_BUDGET_TOKENS, metavar="TOKENS",
                       help="LLM judge: longer reasoning traces are cut from the middle, with a marker "
                            f"(default {DEFAULT_COT_BUDGET_TOKENS})")
    _add_db(grade)
    _add_endpoint(grade, "the LLM judge's endpoint")

    report = command("report", "the paper's figures (PNG) and a Markdown summary, from the database")
    report.add_argument("--out", type=Path, default=DEFAULT_REPORT, help=f"output folder (default {DEFAULT_REPORT})")
    report.add_argument("--judge", default=RULE_JUDGE_NAME, help="whose labels to report (default: rule)")
    report.add_argument("--corrected", action="store_true",
                        help="add rates corrected for judge error with human labels (figure + table)")
    _add_db(report)

    export = command("export", "one row per final response with its labels, as Parquet (partitioned by "
                               "scenario and model), CSV or JSONL")
    export.add_argument("--format", choices=["parquet", "csv", "jsonl"], default="parquet")
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.add_argument("--judge", help="only this judge's labels (default: every judge's)")
    _add_db(export)

    _add_label(command("label", "label final responses by hand in the terminal; `label import FILE` / "
                               "`label export` move labels in and out as JSONL"))

    view = command("view", "a local web app: runs, cells, transcripts, and labelling by keyboard (works during a run)")
    view.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    view.add_argument("--port", type=int, default=0, help="port (default 0: any free port; the URL is printed)")
    view.add_argument("--labeller", help="whose labels the label page gives (default: $USER)")
    _add_db(view)

    serve = command("serve", "run the embedded model's OpenAI-compatible server in the foreground")
    serve.add_argument("--slots", type=int, default=DEFAULT_SLOTS, help="parallel sequences (continuous batching)")
    serve.add_argument("--ctx-per-slot", type=int, default=DEFAULT_CTX_PER_SLOT, help="context tokens per slot")
    return parser


def _add_label(label: argparse.ArgumentParser) -> None:
    label.add_argument("action", nargs="?", choices=["session", "import", "export"], default="session",
                       help="session (default): label in the terminal; import FILE.jsonl; export [--out FILE]")
    label.add_argument("file", nargs="?", type=Path, help="with import: the JSONL file to read")
    label.add_argument("--per-cell", type=int, default=30, help="responses per cell in the sample (default 30)")
    label.add_argument("--cell", help="only this cell: scenario/variant/branch/model ('*' for any part)")
    label.add_argument("--labeller", help="your name (session default: $USER; import: for lines without one)")
    label.add_argument("--seed", type=int, default=0, help="the sample's seed (same seed, same sample)")
    label.add_argument("--out", type=Path, help="with export: write here instead of stdout")
    _add_db(label)


def _add_endpoint(parser: argparse.ArgumentParser, title: str) -> None:
    endpoint = parser.add_argument_group(title)
    endpoint.add_argument("--base-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    endpoint.add_argument("--model", help="model name sent to the endpoint")
    endpoint.add_argument("--api-key-env", help="environment variable holding the API key (none: no auth header)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--rpm", type=float, help="requests per minute (0 = unlimited)")
    limits.add_argument("--tpm", type=float, help="tokens per minute (0 = unlimited)")
    limits.add_argument("--concurrency", type=int, help="max requests in flight per endpoint")


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"DuckDB file (default {DEFAULT_DB})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(json=args.log_json, level=args.log_level)
    try:
        commands = {"sample": cmd_sample, "status": cmd_status, "sql": cmd_sql, "grade": cmd_grade,
                    "report": cmd_report, "serve": cmd_serve, "label": cmd_label, "view": cmd_view,
                    "export": cmd_export}
        return commands[args.command](args)
    except (KeyboardInterrupt, WaitAbandoned):
        stop_waiting.set()   # a thread still waiting for the database gives up (connection.retry_on_lock)
        done = "every label given is saved" if args.command == "label" else "finished results are kept"
        print(f"\ninterrupted: {done}", file=sys.stderr)
        return 130
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if str(exc) != "Query interrupted":   # DuckDB's form of a Ctrl-C during a statement
            raise
        stop_waiting.set()
        print("\ninterrupted", file=sys.stderr)
        return 130


def load_run_experiment(args: argparse.Namespace) -> Experiment:
    experiment = load_experiment(args.experiment)
    if args.base_url or args.model:
        if not (args.base_url and args.model):
            raise PipelineError("--base-url and --model go together")
        experiment = single_endpoint(experiment, model=args.model, base_url=args.base_url,
                                     api_key_env=args.api_key_env, cot=args.cot)
    elif args.cot != DEFAULT_COT:
        raise PipelineError("--cot needs --base-url and --model (or set cot in the experiment's [[models]])")
    elif args.api_key_env:
        raise PipelineError("--api-key-env needs --base-url and --model (or set api_key_env in the experiment)")
    if args.n is not None and args.n < 1:
        raise PipelineError("--n must be at least 1")
    experiment = override_limits(experiment, rpm=args.rpm, tpm=args.tpm, concurrency=args.concurrency)
    if not experiment.models:
        raise PipelineError(f"{args.experiment}: no [[models]] configured (or pass --base-url and --model)")
    return experiment


def cmd_sample(args: argparse.Namespace) -> int:
    experiment = load_run_experiment(args)
    experiment = batch_models(args, experiment)
    cells = plan_cells(experiment, args.n)
    max_cost = budget_cap(args, experiment)
    if args.dry_run:
        return print_dry_run(cells, args.db, max_cost)
    store = Store(args.db)
    argv = sys.argv[1:]
    with run_lock(args.db), ExitStack() as stack:
        store.initialize()
        stack.callback(store.close)
        if any(cell.model.embedded for cell in cells) and _has_pending(store, cells):   # nothing to do: no server
            cells = start_embedded_models(cells, stack)
        options = BatchOptions(wait=not args.no_wait, poll_s=args.poll_s)
        result = anyio.run(sample, experiment, cells, store, argv, max_cost, options)
    print_summary(result, args.db, embedded=any(cell.model.embedded for cell in cells))
    return EXIT_CODES.get(result.status, 1)


EXIT_CODES = {"completed": 0, "interrupted": 130, "budget_reached": 3}


def _has_pending(store: Store, cells: list[Cell]) -> bool:
    """Whether any planned job is not done yet (read only when a server would be started for it:
    at half of a million jobs the read takes a second, which `sample` repeats after the journal)."""
    with store.connect() as con:
        return sum(cell.n for cell in cells) > load_done(con, cells).count


def batch_models(args: argparse.Namespace, experiment: Experiment) -> Experiment:
    """--batch sends every model through the Batch API (not part of job ids: same jobs)."""
    if not (math.isfinite(args.poll_s) and args.poll_s > 0):
        raise PipelineError(f"--poll-s must be a number of seconds > 0, got {args.poll_s:g}")
    models = [replace(model, batch=True) for model in experiment.models] if args.batch else experiment.models
    for model in models:
        if model.batch and model.embedded:
            raise PipelineError(f"model {model.name!r}: the embedded model has no Batch API (drop --batch or batch = true)")
    if args.no_wait and not any(model.batch for model in models):
        raise PipelineError("--no-wait is for batch runs (add --batch)")
    return replace(experiment, models=models)


def budget_cap(args: argparse.Namespace, experiment: Experiment) -> float | None:
    """--max-cost, else the experiment's budget_usd; every model must then have a price."""
    if args.max_cost is not None and not (math.isfinite(args.max_cost) and args.max_cost > 0):
        raise PipelineError(f"--max-cost must be a number of dollars > 0, got {args.max_cost:g}")
    cap: float | None = args.max_cost if args.max_cost is not None else experiment.budget_usd
    if cap is not None:
        check_priced(experiment.models, "--max-cost" if args.max_cost is not None else "budget_usd")
    return cap


def print_dry_run(cells: list[Cell], db: Path, max_cost: float | None) -> int:
    warnings: list[str] = []
    mean_reply: dict[str, float] = {}
    speeds: dict[str, float] = {}
    if db.exists():
        con = open_reader(db)
        try:
            done = load_done(con, cells)
            warnings = cap_warnings(con, list({id(c.model): c.model for c in cells}.values()))
            mean_reply = dict(con.execute(sql("mean_reply_by_model")).fetchall())
            speeds = dict(con.execute(sql("model_speeds")).fetchall())
        finally:
            con.close()
    else:
        done = DoneIndex(cells)
    print(describe_plan(cells, done, mean_reply, speeds))
    if max_cost is not None:
        print(f"budget: at most {format_usd(max_cost)} in total for this experiment in {db.name} "
              "(what it has cost so far counts)")
    for warning in warnings:
        print(warning)
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    scenarios = {s.id: s for s in load_scenarios(args.scenarios_dir)}
    model = judge_model(args) if args.judge == "llm" else None
    if args.cot_budget < 1:
        raise PipelineError(f"--cot-budget must be at least 1 token, got {args.cot_budget}")
    if args.eval_fixtures:
        items = load_fixtures(args.eval_fixtures, scenarios)
        name, predictions = anyio.run(_predict, args.judge, scenarios, model, items, args.cot_budget)
        print(format_agreement(name, items, predictions, as_json=args.json))
        return 0
    if not args.db.exists():
        raise PipelineError(f"{args.db}: no such database (run `pipeline sample` first)")
    store = Store(args.db)
    with run_lock(args.db), ExitStack() as stack:
        store.initialize()
        stack.callback(store.close)
        name, version, engine = anyio.run(_grade, store, args.judge, scenarios, model, args.cot_budget)
    print(f"graded {engine.stored_ok} responses with {name} (version {version}); "
          f"{engine.stored_failed} got no answer and stay ungraded; status {engine.status}")
    for error in engine.endpoint_errors:
        print(f"  endpoint error: {error}")
    return {"completed": 0, "interrupted": 130}.get(engine.status, 1)


async def _grade(store: Store, kind: str, scenarios: dict[str, Scenario],
                 model: ModelConfig | None, cot_budget: int) -> tuple[str, str, EngineTally]:
    progress = Progress(total=0)
    judge = make_judge(kind, scenarios, progress, model, cot_budget)
    try:
        return judge.name, judge.version, await grade(store, judge, scenarios, progress)
    finally:
        await judge.aclose()


async def _predict(kind: str, scenarios: dict[str, Scenario], model: ModelConfig | None,
                   items: list[Any], cot_budget: int) -> tuple[str, list[dict[str, Any]]]:
    judge = make_judge(kind, scenarios, Progress(total=len(items)), model, cot_budget)
    try:
        return judge.name, await predict(judge, items)
    finally:
        await judge.aclose()


def judge_model(args: argparse.Namespace) -> ModelConfig:
    if not (args.base_url and args.model):
        raise PipelineError("--judge llm needs --base-url and --model (any OpenAI-compatible endpoint)")
    model = endpoint_model(model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                           params=JUDGE_PARAMS)
    return with_limits(model, rpm=args.rpm, tpm=args.tpm, concurrency=args.concurrency)


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import write_report  # matplotlib loads only for this command

    for path in write_report(args.db, args.out, judge=args.judge, corrected=args.corrected):
        print(path)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pipeline.report.export import export

    target, rows = export(args.db, args.out, args.format, judge=args.judge)
    print(f"exported {rows} final responses to {target}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    """`pipeline label [session|import FILE|export]`: never takes the run lock (see grading/human.py)."""
    if (args.file is not None) != (args.action == "import"):
        raise PipelineError("label import needs a FILE; session and export take none")
    if args.action == "import":
        added, known = human.import_labels(args.db, args.file, args.labeller)
        print(f"imported {added} labels from {args.file} ({known} already stored)")
        return 0
    if args.action == "export":
        return _label_export(args)
    return _label_session(args)


def _label_export(args: argparse.Namespace) -> int:
    if args.out is None:
        human.export_labels(args.db, sys.stdout)
        return 0
    with open(args.out, "w", encoding="utf-8") as out:
        count = human.export_labels(args.db, out)
    print(f"exported {count} labels to {args.out}", file=sys.stderr)
    return 0


def _label_session(args: argparse.Namespace) -> int:
    from pipeline.grading.label_tui import Keys, Screen, Session

    labeller = args.labeller or os.environ.get("USER") or getpass.getuser()
    writer = human.LabelWriter(args.db)
    try:
        recovered = writer.recover() if args.db.exists() else 0
        items = human.sample_for_labelling(args.db, per_cell=args.per_cell, seed=args.seed, labeller=labeller,
                                           cell=human.CellFilter.parse(args.cell))
        with Keys() as keys:
            session = Session(items, writer, labeller, keys, Screen(sys.stdout, clear=keys.tty))
            session.message = f"recovered {recovered} labels from the journal" if recovered else ""
            session.run()
    finally:
        writer.close()
    left = sum(1 for item in items if item.job_id not in session.done)
    print(f"\n{session.saved} labels given this session by {labeller}; "
          f"{len(items) - left} of {len(items)} in the sample labelled, {left} left")
    if not left:
        print(f"this sample is fully labelled; a larger --per-cell (now {args.per_cell}) extends it")
    if writer.waiting():
        print(f"{writer.waiting()} labels wait in {writer.journal.path} (database busy); "
              "the next `pipeline label` writes them")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from pipeline.view.server import serve  # aiohttp.web and matplotlib load only for this command

    try:
        serve(args.db, host=args.host, port=args.port,
              labeller=args.labeller or os.environ.get("USER") or getpass.getuser())
    except KeyboardInterrupt:
        print("\npipeline view stopped", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    serve_forever(slots=args.slots, ctx_per_slot=args.ctx_per_slot)
    return 0


def print_summary(result: RunSummary, db: Path, embedded: bool) -> None:
    rate = result.requests / result.wall_s if result.wall_s else 0.0
    left = result.pending_at_start - result.stored_done
    lines = [
        f"run {result.run_id}: {result.status} in {result.wall_s:.1f} s",
        f"  jobs: {result.planned} planned, {result.planned - result.pending_at_start} already done, "
        f"{result.stored_done} done now, {result.stored_failed} failed, {left} still pending",
        f"  calls: {result.requests} requests ({rate:.1f}/s), {result.tokens} tokens, cost {result.spent}",
        f"  rate limits: {result.rate_limited} 429s, {result.limit_wait_s:.1f} s waiting on limits",
        *(f"  limits: {text}" for text in result.limits),
        f"  data: {db}  (try: python -m pipeline status --db {db})",
    ]
    lines += [f"  endpoint error: {error}" for error in result.endpoint_errors]
    lines += batch_lines(result)
    if result.budget:
        budget = result.budget
        lines.append(f"  budget: {format_usd(budget.total)} of {format_usd(budget.cap_usd)} spent on this experiment "
                     f"in {db.name} ({format_usd(budget.spent_before)} before this run)")
        if budget.reached:
            lines.append(f"  budget reached: stopped sending, {left} jobs left pending; run again with a higher "
                         "--max-cost (or budget_usd) to continue")
    if result.stored_failed and not result.stored_done:
        lines.append(f"  every job of this run failed ({result.stored_failed}); most common error: "
                     f"{top_error(db, result.run_id)}")
    lines += run_truncation(db, result.run_id)
    if embedded:
        lines.append("  note: the embedded model (SmolLM2-135M) is a tiny model for offline runs and pipeline "
                     "checks, not for findings; see README 'Real models' to sample gpt-4-*, vLLM, Ollama, ...")
    if left and not (result.budget and result.budget.reached):
        lines.append("  run the same command again to finish the pending jobs")
    print("\n".join(lines))


def batch_lines(result: RunSummary) -> list[str]:
    """What the Batch API side of a run did, and what is left."""
    tally = result.batch
    if tally is None:
        return []
    lines = [f"  batches: {tally.submitted} submitted now ({tally.requests_submitted} requests), {tally.collected} "
             f"collected ({tally.answered} requests answered, {tally.unanswered} unanswered), {tally.still_open} open"]
    if tally.still_open:
        states = ", ".join(f"{count} {status}" for status, count in sorted(tally.by_status.items()))
        lines.append(f"  open batches ({states}): run `pipeline sample --batch` again later to collect them")
    for why, count in tally.errors.most_common(3):
        lines.append(f"  unanswered ({count}): {why} -- their jobs are pending; the next `sample --batch` resubmits them")
    return lines


# The end-of-run summary reads every response of a run once: a small memory limit makes DuckDB
# drop blocks as it goes instead of caching them (1M responses: +18 MB instead of +101 MB).
SUMMARY_CONFIG: dict[str, str | bool | int | float | list[str]] = {"threads": 1, "memory_limit": "16MB"}


def run_truncation(db: Path, run_id: str) -> list[str]:
    """This run's final replies cut off at max_tokens, per model (nothing if it cannot be read)."""
    try:
        con = open_reader(db, config=SUMMARY_CONFIG)
    except PipelineError:
        return []
    try:
        return truncation_lines(con, run_id)
    finally:
        con.close()


def top_error(db: Path, run_id: str) -> str:
    """The most common error of a run's failed jobs, on one line."""
    import duckdb

    try:
        con = open_reader(db)
        try:
            rows = con.execute(sql("run_top_error"), [run_id]).fetchall()
        finally:
            con.close()
    except (PipelineError, duckdb.Error):
        rows = []
    if not rows:
        return f"see `python -m pipeline sql \"SELECT error FROM jobs WHERE run_id = '{run_id}'\"`"
    error, jobs = rows[0]
    text = " ".join(str(error).split())
    return f"{text[:300]}{'...' if len(text) > 300 else ''} ({jobs} jobs)"


def cmd_status(args: argparse.Namespace) -> int:
    con = open_reader(args.db)
    try:
        print("cells (latest plan of each):")
        con.sql("SELECT * FROM cell_status").show(max_rows=1000, max_width=200)
        print("recent runs:")
        con.sql(sql("recent_runs")).show(max_width=200)
        print("\n".join(["final replies:", *truncation_lines(con)]))
        print("\n".join(["cost per model (see the `costs` view):", *cost_lines(con)]))
        if con.execute(sql("count_batches")).fetchall()[0][0]:
            print("batches (newest first):")
            con.sql(sql("batch_status")).show(max_width=200)
    finally:
        con.close()
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    con = open_sql_reader(args.db)
    try:
        check_read_only(con, args.query)
        relation = con.sql(args.query)
        if relation is not None:
            relation.show(max_rows=args.max_rows, max_width=10_000)
    except duckdb.PermissionException as exc:
        raise refused_file_access(exc) from None
    except duckdb.Error as exc:
        raise PipelineError(f"sql: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    return 0
