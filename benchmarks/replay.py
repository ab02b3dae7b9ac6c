"""Bench case 8: the embedded model through the pipeline vs a minimal client replaying the
same requests straight to llama.cpp in the best order (one conversation's requests back to
back, initial calls before final ones), at the same concurrency. What the pipeline adds on
top of llama.cpp's own speed is the difference. Only meaningful on a quiet machine: llama.cpp's
busy-waiting threads collapse when anything else uses the CPU (the case records the load).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import orjson

from pipeline.experiment.config import load_experiment
from pipeline.local_model.server import embedded_server
from pipeline.sampling.embedded import context_per_slot
from pipeline.sampling.plan import plan_cells

REQUESTS = """
SELECT p.request_messages, r.request_params, r.call, coalesce(q.parent_id, q.prompt_id) AS conversation
FROM responses r JOIN prompt_messages p USING (prompt_id) JOIN prompts q USING (prompt_id)
WHERE r.error IS NULL
ORDER BY conversation, r.call DESC, r.created_at
"""  # call DESC: 'initial' before 'final'
SPAN = "SELECT epoch(max(created_at)) - epoch(min(created_at - to_milliseconds(latency_ms))) FROM responses"


def replay_case(root: Path, n: int, run: Any) -> dict[str, Any]:
    """`run(args)` runs the pipeline CLI and returns its Outcome (benchmarks.bench.run_cli)."""
    repo = Path(__file__).resolve().parents[1]
    work = root / "replay"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(repo / "scenarios", work / "scenarios")
    experiment, db = work / "scenarios" / "experiments" / "default.toml", work / "results.duckdb"
    load_before = os.getloadavg()[0]
    outcome = run(["sample", "--experiment", str(experiment), "--n", str(n), "--db", str(db)])
    con = duckdb.connect(str(db), read_only=True)
    try:
        requests = [(orjson.loads(m), orjson.loads(p), call) for m, p, call, _ in con.execute(REQUESTS).fetchall()]
        (pipeline_span,) = con.execute(SPAN).fetchone() or (0.0,)
        (prompt_tokens,) = con.execute("SELECT sum(prompt_tokens) FROM responses").fetchone() or (0,)
    finally:
        con.close()
    cells = plan_cells(load_experiment(experiment), n)
    model = cells[0].model
    with embedded_server(slots=model.concurrency, ctx_per_slot=context_per_slot(cells, model)) as base_url:
        replay_span, read, cached = asyncio.run(_replay(base_url, requests, model.concurrency))
    return {"case": f"8 embedded replay (N={n})", "exit": outcome.returncode, "requests": len(requests),
            "pipeline_wall_s": round(outcome.wall_s, 2), "pipeline_span_s": round(float(pipeline_span), 2),
            "replay_span_s": round(replay_span, 2), "ratio": round(float(pipeline_span) / replay_span, 3),
            "prompt_tokens": int(prompt_tokens or 0), "replay_prompt_tokens_read": read,
            "replay_prompt_tokens_cached": cached, "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2)}


async def _replay(base_url: str, requests: list[tuple[Any, Any, str]], concurrency: int) -> tuple[float, int, int]:
    """Send every request in order with `concurrency` workers; seconds, prompt tokens read and cached."""
    queue: asyncio.Queue[tuple[Any, Any, str]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    totals = [0, 0]

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            messages, params, _ = queue.get_nowait()
            async with session.post(f"{base_url}/chat/completions", json={**params, "messages": messages}) as reply:
                body = await reply.json()
            timings = body.get("timings") or {}
            totals[0] += int(timings.get("prompt_n") or 0)
            totals[1] += int(timings.get("cache_n") or 0)

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.monotonic() - started, totals[0], totals[1]
