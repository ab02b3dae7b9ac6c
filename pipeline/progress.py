"""Live progress of a run: done/total, request and token rates, errors, retries, ETA."""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

import structlog

log = structlog.get_logger()
_WINDOW_S = 30.0


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    requests: int = 0
    tokens: int = 0
    errors: int = 0          # failed attempts (retried or not)
    rate_limited: int = 0    # 429 answers
    retrying: int = 0        # calls currently waiting to retry
    limit_wait_s: float = 0.0  # time lanes were held by rate limits (429s, resets, window boundaries)
    cost_usd: float = 0.0      # $ of this run's priced calls
    unpriced: int = 0          # calls whose model has no price (their cost is unknown)
    started: float = field(default_factory=time.monotonic)
    _samples: deque[tuple[float, int, int, int]] = field(default_factory=deque)

    def snapshot(self) -> dict[str, Any]:
        """Rates over the last ~30 s, so the ETA follows the current pace."""
        now = time.monotonic()
        finished = self.done + self.failed
        self._samples.append((now, finished, self.requests, self.tokens))
        while len(self._samples) > 2 and now - self._samples[0][0] > _WINDOW_S:
            self._samples.popleft()
        t0, f0, r0, k0 = self._samples[0]
        span = now - t0
        if span < 1.0:  # too early for a window: average since the start
            span, f0, r0, k0 = max(now - self.started, 1e-9), 0, 0, 0
        jobs_rate = (finished - f0) / span
        remaining = self.total - finished
        return {"finished": finished, "jobs_per_s": jobs_rate, "req_per_s": (self.requests - r0) / span,
                "tok_per_s": (self.tokens - k0) / span,
                "eta_s": remaining / jobs_rate if jobs_rate > 0 else None}

    def count_cost(self, cost: float | None) -> None:
        """One answered call's cost; None (no price) is counted as unpriced, never as $0."""
        if cost is None:
            self.unpriced += 1
        else:
            self.cost_usd += cost

    def spent(self) -> str:
        """`$1.23`, or `$1.23 + unknown (5 unpriced calls)`."""
        text = format_usd(self.cost_usd) if self.cost_usd or not self.unpriced else "unknown"
        return text + (f" + unknown ({self.unpriced} unpriced calls)" if self.unpriced and self.cost_usd else "")

    def line(self) -> str:
        s = self.snapshot()
        eta = _duration(s["eta_s"]) if s["eta_s"] is not None else "?"
        pct = 100.0 * s["finished"] / self.total if self.total else 100.0
        return (f"{s['finished']}/{self.total} jobs ({pct:.1f}%) | {s['req_per_s']:.1f} req/s "
                f"{s['tok_per_s']:.0f} tok/s | failed {self.failed} errors {self.errors} "
                f"429s {self.rate_limited} (waited {self.limit_wait_s:.0f} s) retrying {self.retrying} | "
                f"{self.spent()} | ETA {eta}")


class ProgressReporter:
    """Redraws one status line on a terminal; logs a progress event periodically otherwise."""

    def __init__(self, progress: Progress, stream: TextIO = sys.stderr, log_every_s: float = 10.0):
        self.progress = progress
        self.stream = stream
        self.interactive = stream.isatty()
        self.interval = 0.5 if self.interactive else log_every_s

    def tick(self) -> None:
        if self.interactive:
            self.stream.write("\r\x1b[2K" + self.progress.line())
            self.stream.flush()
        else:
            s = self.progress.snapshot()
            log.info("progress", done=s["finished"], total=self.progress.total, failed=self.progress.failed,
                     req_per_s=round(float(s["req_per_s"]), 1), tok_per_s=round(float(s["tok_per_s"])),
                     errors=self.progress.errors, rate_limited=self.progress.rate_limited,
                     limit_wait_s=round(self.progress.limit_wait_s, 1),
                     retrying=self.progress.retrying, spent=self.progress.spent(),
                     eta=_duration(s["eta_s"]) if s["eta_s"] is not None else None)

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\r\x1b[2K" + self.progress.line() + "\n")
            self.stream.flush()


def _duration(seconds: float | int | None) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_usd(dollars: float | None) -> str:
    """`$12.34`, `$0.0042` for small sums, `unknown` when no price is known."""
    if dollars is None:
        return "unknown"
    return f"${dollars:.2f}" if dollars >= 1 or dollars == 0 else f"${dollars:.4f}"
