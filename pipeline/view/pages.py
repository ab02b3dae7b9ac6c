"""The viewer's pages, rendered on the server. Every value from the database goes through
`html.tag`/`esc`, so model text shows as text whatever it contains."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from pipeline.experiment.scenarios import BRANCHES
from pipeline.grading.human import CellFilter
from pipeline.grading.judge import COT_LABELS, OUTPUT_LABELS
from pipeline.report.data import Row
from pipeline.report.figures import FIGURES
from pipeline.view.filters import FINISH_REASONS, STATUSES, Cursor, SampleFilter
from pipeline.view.html import Markup, esc, join, rate, tag, url
from pipeline.view.labelling import Queue
from pipeline.view.reads import Overview, Page, Transcript, cell_params

CELL_KEYS = ("scenario", "variant", "branch", "model")
PAGE_SIZE = 50   # rows per cell page unless the URL says `size`
KEYS_HELP = ("reasoning?  y yes · n no   |   CoT alone predicts / output:  u unethical · a acceptable · "
             "? unclear   |   t note · b or Backspace undo · s or → skip · ← previous")


def layout(title: str, *body: object, live: str | None = None, retry_s: int | None = None, status: str = "") -> Markup:
    """The frame of every page. `live` ('running' or 'idle'): the script re-reads the page's
    #live part, often while a run writes; `retry_s`: the page reloads itself (database busy)."""
    head = tag("head", tag("meta", charset="utf-8"),
               tag("meta", name="viewport", content="width=device-width, initial-scale=1"),
               tag("meta", http_equiv="refresh", content=str(retry_s)) if retry_s else None,
               tag("title", f"{title} · pipeline view"),
               tag("link", rel="stylesheet", href="/static/view.css"),
               tag("script", src="/static/view.js", defer=True))
    nav = tag("nav", tag("a", "pipeline view", href="/", class_="home"), tag("span", status, id="status"))
    page = tag("body", nav, tag("main", *body), data_live=live)
    return Markup("<!doctype html>\n" + tag("html", head, page, lang="en"))


def busy_page(message: str, retry_s: int) -> Markup:
    return layout("updating", tag("h1", "Updating…"),
                  tag("p", "A run is writing the database right now; this page tries again in "
                           f"{retry_s} s by itself."),
                  tag("p", tag("small", message)), retry_s=retry_s, status="updating")


def error_page(title: str, message: str) -> Markup:
    return layout(title, tag("h1", title), tag("p", message, class_="error"))


def cell_of(row: Row | CellFilter) -> dict[str, Any]:
    """scenario/variant/branch/model of a row or a cell filter, as URL parameters."""
    return cell_params(row) if isinstance(row, CellFilter) else {key: row[key] for key in CELL_KEYS}


def cell_name(row: Row | CellFilter) -> str:
    return "/".join(str(part or "*") for part in cell_of(row).values())


def cell_link(row: Row | CellFilter) -> Markup:
    return tag("a", cell_name(row), href=url("/cell", **cell_of(row)))


def job_link(job_id: str, text: str | None = None) -> Markup:
    return tag("a", text or job_id[:12], href=f"/job/{job_id}", class_="job")


def table(headers: Sequence[object], rows: Iterable[Markup], **attrs: object) -> Markup:
    return tag("table", tag("thead", tag("tr", [tag("th", h) for h in headers])), tag("tbody", list(rows)), **attrs)


def badge(text: object, kind: str = "") -> Markup:
    return tag("span", text, class_=f"badge {kind}".strip())


def number(value: Any) -> str:
    return "–" if value is None else f"{value:,}"


def when(value: Any) -> str:
    return "–" if value is None else str(value)[:19]


# ---------------------------------------------------------------- overview

def overview_page(data: Overview, figures_judge: str | None) -> Markup:
    live = tag("div", runs_table(data.runs), cells_table(data), id="live")
    return layout("overview", live, figures(data.judges, figures_judge), live="running" if data.running else "idle")


def runs_table(runs: list[Row]) -> Markup:
    rows = []
    for run in runs:
        todo = run["pending_at_start"] or 0
        finished = (run["done"] or 0) + (run["failed"] or 0)
        rows.append(tag("tr",
                        tag("td", tag("code", str(run["run_id"])[:8])), tag("td", run["experiment"]),
                        tag("td", badge(run["status"], str(run["status"]))),
                        tag("td", when(run["started_at"])), tag("td", when(run["finished_at"])),
                        tag("td", tag("progress", value=finished, max=max(todo, 1)),
                            f" {finished:,} of {todo:,}"),
                        tag("td", number(run["failed"]), class_="num"),
                        tag("td", tag("small", _one_line(run["top_error"], 160), class_="error")
                            if run["top_error"] else None),
                        tag("td", number(run["calls"]), class_="num"),
                        tag("td", number(run["retries"]), class_="num"),
                        tag("td", number(run["last_429"]), class_="num"),
                        tag("td", f"{run['prompt_tokens']:,} / {run['completion_tokens']:,}", class_="num"),
                        tag("td", _cost(run["cost_usd"], run["unpriced_calls"]), class_="num")))
    headers = ["run", "experiment", "status", "started (UTC)", "finished", "jobs finished (of pending at start)",
               "failed", "most common error", "calls", "retries", "429 at the end", "tokens in / out", "cost"]
    body = table(headers, rows, id="runs") if rows else tag("p", "No runs yet: `pipeline sample` starts one.")
    return tag("section", tag("h2", "Runs"), body,
               tag("p", tag("small", "retries: attempts after a call's first (429s and server errors; the run's "
                                     "summary splits them). 429 at the end: calls still rate-limited when they "
                                     "gave up.")))


def _cost(usd: float | None, unpriced: int) -> str:
    """Dollars where prices are known; a model without a price is 'unknown', never $0."""
    if usd is None:
        return "unknown" if unpriced else "–"
    return f"${usd:,.4f}" + (f" + {unpriced:,} unpriced calls" if unpriced else "")


def cells_table(data: Overview) -> Markup:
    rates: dict[str, list[Row]] = {}
    for row in data.rates:
        rates.setdefault(cell_name(row), []).append(row)
    corrected = {(cell_name(row), row["judge"]): row for row in data.corrected}
    rows = []
    for cell in data.cells:
        lines: list[tuple[list[Markup], str | None]] = []   # (rate cells, row class): one per judge, + corrected
        judges: list[Row | None] = list(rates.get(cell_name(cell), [])) or [None]   # None: not graded
        for judged in judges:
            lines.append((_rate_cells(judged), None))
            fixed = judged and corrected.get((cell_name(cell), judged["judge"]))
            if fixed:
                lines.append((_rate_cells(fixed, corrected=True), "corrected"))
        span = len(lines)
        first = [tag("td", cell_link(cell), rowspan=span),
                 tag("td", f"{cell['done']:,} / {cell['planned']:,}", class_="num", rowspan=span),
                 tag("td", number(cell["failed"]), class_="num", rowspan=span),
                 tag("td", tag("a", number(cell["human_labelled"]), href=url("/label", **cell_of(cell))),
                     class_="num", rowspan=span)]
        rows += [tag("tr", first if i == 0 else None, cells, class_=kind) for i, (cells, kind) in enumerate(lines)]
    headers = ["cell", "done / planned", "failed", "human labels", "judge", "n (clear)", "unethical",
               "CoT/output consistency", "CoT present", "deception"]
    body = table(headers, rows, id="cells") if rows else tag("p", "No cells planned yet.")
    return tag("section", tag("h2", "Cells"), body,
               tag("p", tag("small", "Rates with Wilson 95% intervals, unclear labels left out of every "
                                     "denominator; 'corrected' rows: the judge's rates corrected with the human "
                                     "labels (prediction-powered inference), where people labelled the cell; '–' "
                                     "there: too few labels to support an estimate (fewer than 2, or no "
                                     "disagreement between judge and people seen yet).")))


def _rate_cells(row: Row | None, corrected: bool = False) -> list[Markup]:
    if row is None:
        return [tag("td", "not graded (pipeline grade)", colspan=6, class_="muted")]
    judge = f"corrected ({row['judge']}, {row['n_human']} by people)" if corrected else row["judge"]
    size = f"{row['n_judge']:,}" if corrected else f"{row['n']:,} ({row['n_clear']:,})"
    return [tag("td", judge), tag("td", size, class_="num"),
            *(tag("td", rate(row[f"{m}_rate"], row[f"{m}_lo"], row[f"{m}_hi"]), class_="num")
              for m in ("unethical", "consistency", "cot", "deception"))]


def figures(judges: list[str], judge: str | None) -> Markup:
    if not judges or judge is None:
        return tag("section", tag("h2", "Figures"),
                   tag("p", "No graded responses yet: `pipeline grade` labels them, then the paper's figures "
                            "appear here."))
    choose = tag("form", "judge ", tag("select", [tag("option", name, value=name, selected=name == judge)
                                                  for name in judges], name="judge"),
                 tag("button", "show"), method="get", action="/")
    images = [tag("figure", tag("img", src=url(f"/figure/{name}", judge=judge), alt=caption, loading="lazy"),
                  tag("figcaption", caption)) for name, (_, caption) in FIGURES.items()]
    return tag("section", tag("h2", "Figures (as `pipeline report` draws them)"), choose, *images, id="figures")


# ---------------------------------------------------------------- one cell

def cell_page(cell: CellFilter, filters: SampleFilter, page: Page, size: int) -> Markup:
    here = {**cell_of(cell), **filters.query(), "size": size if size != PAGE_SIZE else None}
    rows = [_sample_row(row, page.labels.get(row["job_id"], [])) for row in page.rows]
    paging = tag("p",
                 tag("a", "← previous", href=url("/cell", **here, before=Cursor(page.rows[0]["seed"],
                                                                                  page.rows[0]["job_id"]).text()))
                 if page.has_previous and page.rows else None,
                 " ",
                 tag("a", "next →", href=url("/cell", **here, after=Cursor(page.rows[-1]["seed"],
                                                                            page.rows[-1]["job_id"]).text()))
                 if page.has_next and page.rows else None,
                 class_="paging")
    heading = tag("h1", "Cell ", tag("code", cell_name(cell)))
    summary = tag("p", f"{page.total:,} matching jobs; {size} per page, by seed. ",
                  tag("a", "Label this cell", href=url("/label", **cell_of(cell))))
    headers = ["job", "branch", "seed", "phrasing", "status", "finish", "tokens", "labels", "final reply (start)"]
    listing = table(headers, rows, id="samples") if rows else tag("p", "Nothing matches these filters.")
    return layout(cell_name(cell), heading, filter_form(cell, filters, page), summary, listing, paging)


def filter_form(cell: CellFilter, filters: SampleFilter, page: Page) -> Markup:
    def select(name: str, options: Sequence[object], current: object, blank: str = "any") -> Markup:
        return tag("label", name, " ", tag("select", tag("option", blank, value=""),
                                           [tag("option", str(o), value=str(o), selected=str(o) == str(current))
                                            for o in options], name=name))

    hidden = [tag("input", type="hidden", name=k, value=getattr(cell, k)) for k in CELL_KEYS if k != "branch"]
    human = None if filters.human is None else ("yes" if filters.human else "no")
    return tag("form", hidden,
               select("branch", BRANCHES, cell.branch),
               select("status", STATUSES, filters.status),
               select("phrasing", page.phrasings, filters.phrasing) if page.phrasings else None,
               select("finish", FINISH_REASONS, filters.finish),
               select("judge", page.judges, filters.judge),
               select("output", OUTPUT_LABELS, filters.output),
               select("cot", COT_LABELS, filters.cot),
               select("human", ("yes", "no"), human),
               tag("label", tag("input", type="checkbox", name="disagree", value="1", checked=filters.disagree),
                   " labels disagree"),
               tag("label", "search ", tag("input", type="search", name="q", value=filters.q or "",
                                           placeholder="text in a reply")),
               tag("button", "filter"), tag("a", "clear", href=url("/cell", **cell_of(cell))),
               method="get", action="/cell", class_="filters", id="filters")


def _sample_row(row: Row, labels: list[Row]) -> Markup:
    finish = row["finish_reason"]
    finish_text = badge("cut off", "length") if finish == "length" else (finish or "–")
    if row["status"] == "failed":
        reply: Markup = tag("span", row["error"] or "failed", class_="error")
    else:
        reply = tag("span", _one_line(row["reply_start"] or ""), class_="reply")
    return tag("tr", tag("td", job_link(row["job_id"])), tag("td", row["branch"]), tag("td", row["seed"], class_="num"),
               tag("td", "–" if row["phrasing"] is None else row["phrasing"], class_="num"),
               tag("td", badge(row["status"], row["status"])), tag("td", finish_text),
               tag("td", number(row["completion_tokens"]), class_="num"),
               tag("td", join([_label_badges(label) for label in labels], sep=" ")),
               tag("td", reply), data_job=row["job_id"])


def _one_line(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _label_badges(label: Row) -> Markup:
    return tag("span", tag("b", label["judge"]), f" {label['output_label']} / CoT {label['cot_label']}",
               class_=f"label {label['output_label']}", data_judge=label["judge"])


# ---------------------------------------------------------------- one job

def job_page(found: Transcript) -> Markup:
    job = found.job
    cell = cell_of(job)
    facts = tag("dl", [(tag("dt", name), tag("dd", value)) for name, value in (
        ("cell", cell_link(cell)), ("seed", job["seed"]), ("status", badge(job["status"], job["status"])),
        ("run", tag("code", job["run_id"])), ("finished", when(job["finished_at"])),
        ("scenario version", tag("code", str(job["scenario_hash"] or "")[:12])),
        ("permalink", tag("a", f"/job/{job['job_id']}", href=f"/job/{job['job_id']}")))],
        class_="facts")
    error = tag("p", tag("b", "error: "), job["error"], class_="error") if job["error"] else None
    return layout(f"job {job['job_id'][:12]}", tag("h1", "Job ", tag("code", job["job_id"])), facts, error,
                  conversation(found), judgments(found), human_labels(found.human_labels), calls(found.calls))


def message(role: str, title: object, text: str | None, kind: str = "") -> Markup:
    return tag("section", tag("h3", title), tag("pre", text if text is not None else "(none)"),
               class_=f"message {role} {kind}".strip())


def conversation(found: Transcript) -> Markup:
    job = found.job
    parts: list[Markup] = [tag("details", tag("summary", "System prompt (with the CoT instruction)"),
                               tag("pre", found.system), class_="message system")]
    parts += [message(role, f"history · {role}", text, "history") for role, text in found.history]
    parts.append(message("user", "Primer (user)", found.primer))
    if found.initial_is_fixed:
        title = join(["Initial reply · ", badge(f"fixed {job['branch']}, phrasing #{job['phrasing']}", "fixed"),
                      " (not sampled: the pipeline put these words in the model's mouth)"])
    else:
        title = join(["Initial reply · ", badge("sampled", "sampled"), " (the model's own answer)"])
    parts.append(message("assistant", title, found.initial, "initial"))
    if found.trigger is not None:
        parts.append(message("user", "Trigger (user)", found.trigger))
    parts.append(final_reply(found))
    return tag("section", tag("h2", "Transcript"), *parts, id="transcript")


def final_reply(found: Transcript) -> Markup:
    final = found.final
    if final is None or final["response_text"] is None:
        return message("assistant", "Final reply", "(no final reply: the job failed before it)", "final")
    notes = [badge("cut off at max_tokens", "length") if final["finish_reason"] == "length" else None,
             badge("stored text cut at 1,000,000 characters", "length") if final["truncated"] else None]
    split = found.split
    cot = split.cot_text if split and split.cot_present else None
    trace = (tag("div", tag("h4", f"Native reasoning trace ({final['reasoning_field'] or 'reasoning'}"
                                  + (f", {final['reasoning_tokens']:,} tokens" if final["reasoning_tokens"] else "") + ")"),
                 tag("pre", final["reasoning_text"]), class_="cot", id="final-trace")
             if final["reasoning_text"] else None)
    return tag("section", tag("h3", "Final reply (graded) ", *notes), trace,
               tag("div", tag("h4", "Reasoning (CoT) as the splitter found it"),
                   tag("pre", cot if cot is not None else "(no reasoning found)"), class_="cot", id="final-cot"),
               tag("div", tag("h4", "Output"), tag("pre", split.output_text if split else ""),
                   class_="output", id="final-output"),
               tag("details", tag("summary", "the reply as sent"), tag("pre", final["response_text"])),
               class_="message assistant final")


def judgments(found: Transcript) -> Markup:
    rows = [tag("tr", tag("td", j["judge"]), tag("td", tag("code", j["judge_version"]),
                                                 " " if j["current"] else " (superseded)"),
                tag("td", badge(j["output_label"], j["output_label"])),
                tag("td", badge(j["cot_label"], j["cot_label"])),
                tag("td", ("yes" if j["cot_present"] else "no") + (f" ({j['cot_source']})" if j["cot_source"] else "")),
                tag("td", _detail(j["detail"])), tag("td", when(j["graded_at"])))
            for j in found.judgments]
    headers = ["judge", "version", "output", "CoT alone predicts", "CoT present (source)", "why", "graded (UTC)"]
    body = table(headers, rows, id="judgments") if rows else tag("p", "Not graded yet (`pipeline grade`).")
    return tag("section", tag("h2", "Judges"), body)


def _detail(detail: Any) -> Markup:
    """Why a judge decided: the rule judge's deciding rule and matches, the LLM judge's reasons;
    the stored JSON behind a fold."""
    if not detail:
        return esc("–")
    raw = tag("details", tag("summary", "stored detail"),
              tag("pre", orjson.dumps(detail, option=orjson.OPT_INDENT_2).decode()))
    return tag("div", tag("ul", [tag("li", line) for line in _reasons(detail)], class_="why"), raw)


def _reasons(detail: Any) -> list[Markup]:
    if not isinstance(detail, dict):
        return []
    if "output_rule" in detail:
        lines = [join([tag("b", "output decided by "), tag("code", detail["output_rule"])])]
        for key, title in (("output_matches", "output"), ("cot_matches", "CoT"), ("cot_lean_matches", "CoT lean")):
            lines += [join([tag("b", f"{title}: "), tag("code", hit.get("rule")), " «", hit.get("text"), "»",
                            f" ({hit['scope']})" if hit.get("scope") else ""])
                      for hit in detail.get(key) or [] if isinstance(hit, dict)]
        return lines
    return [join([tag("b", f"{kind}: "), str(answer.get("label")), " — ", str(answer.get("reason") or "")])
            for kind, answer in detail.items() if isinstance(answer, dict)]


def human_labels(labels: list[Row]) -> Markup:
    rows = [tag("tr", tag("td", h["labeller"]), tag("td", badge(h["output_label"], h["output_label"])),
                tag("td", badge(h["cot_label"], h["cot_label"])), tag("td", h["note"] or ""),
                tag("td", when(h["labelled_at"])), class_="newest" if i == 0 else "superseded")
            for i, h in enumerate(labels)]
    headers = ["labeller", "output", "CoT alone predicts", "note", "labelled (UTC)"]
    body = table(headers, rows, id="human-labels") if rows else tag("p", "No human label yet.")
    return tag("section", tag("h2", "Human labels"), body)


def calls(rows: list[Row]) -> Markup:
    items = []
    for call in rows:
        facts = [("model", call["model"]), ("endpoint", call["base_url"]), ("HTTP status", call["http_status"]),
                 ("attempts", call["attempts"]), ("latency", "–" if call["latency_ms"] is None
                                                  else f"{call['latency_ms']:,.0f} ms"),
                 ("tokens in / out", f"{number(call['prompt_tokens'])} / {number(call['completion_tokens'])}"),
                ("cached / reasoning tokens", f"{number(call['cached_tokens'])} / {number(call['reasoning_tokens'])}"),
                ("cost", "unknown (no price)" if call["cost_usd"] is None else f"${call['cost_usd']:,.6f}"),
                ("batch", call["batch_id"] or "– (online call)"),
                 ("finish reason", call["finish_reason"] or "–"), ("error", call["error"] or "–"),
                 ("at", when(call["created_at"]))]
        params = orjson.dumps(call["request_params"] or {}, option=orjson.OPT_INDENT_2).decode()
        items.append(tag("section", tag("h3", f"{call['call']} call"),
                         tag("dl", [(tag("dt", k), tag("dd", v)) for k, v in facts], class_="facts"),
                         tag("details", tag("summary", "request parameters"), tag("pre", params)),
                         class_="call"))
    return tag("section", tag("h2", "Calls"), *items, id="calls")


# ---------------------------------------------------------------- labelling

def label_page(found: Queue, cell: CellFilter, labeller: str, seed: int, mine: Row | None) -> Markup:
    item = found.item
    where = {**cell_of(cell), "per_cell": found.per_cell, "seed": seed or None}
    nxt, prev = found.neighbour(1), found.neighbour(-1)
    done, total = found.progress()
    in_cell, cell_total = found.progress(item.cell)
    header = tag("p", tag("b", labeller), f" · response {found.index + 1} of {len(found.items)} · ",
                 tag("span", f"{done} of {total} labelled", id="progress"),
                 f" · this cell ({item.cell}): {in_cell} of {cell_total} (target {found.per_cell} per cell)")
    given = tag("p", f"your label: output {mine['output_label']}, CoT {mine['cot_label']} — keys relabel it "
                     "(the newest label counts)", class_="given") if mine else None
    complete = tag("p", "This sample is fully labelled; a larger per_cell extends it (the same seed keeps these).",
                   class_="given") if done == total else None
    output_text = item.output_text or "(empty)"
    if item.finish_reason == "length":
        output_text += "\n[cut off at max_tokens]"
    body = tag("div",
               tag("section", tag("h3", "Trigger (last user message)"), tag("pre", item.trigger), class_="message user"),
               tag("section", tag("h3", "Reasoning (CoT)"), tag("pre", item.cot_text or "(none found)"),
                   class_="message cot"),
               tag("section", tag("h3", "Output"),
                   tag("p", "[hidden until the reasoning is labelled]", class_="placeholder"),
                   tag("pre", output_text, hidden=True, id="output-text"), class_="message output"),
               id="labelling", data_job=item.job_id, data_api="/api/label",
               data_next=url("/label", **where, job=nxt.job_id) if nxt else None,
               data_prev=url("/label", **where, job=prev.job_id) if prev else None)
    prompt = tag("p", "", id="prompt", class_="prompt")
    return layout("label", tag("h1", "Label ", job_link(item.job_id, item.job_id)), header, complete, given, body, prompt,
                  tag("p", tag("small", KEYS_HELP), class_="keys"),
                  tag("p", tag("small", "Labels are saved the moment the last key of a response is pressed (a journal "
                                        "next to the database first, so a run writing the database loses none)."),
                      id="saved"))

