"""A fast fake OpenAI-compatible chat server with fault knobs, for tests and benchmarks.

Run `python -m tests.fakeserver --port 0 [knobs]`: it prints `LISTENING <port>` once ready
and serves on 127.0.0.1 until SIGTERM/SIGINT. HTTP/1.1 is parsed by hand on an
asyncio.Protocol because a generic ASGI stack costs several times more CPU per request,
and the benchmark shares the CPU with the client under test. Delayed answers use
loop.call_later rather than tasks, so latency, jitter and hangs never block the loop.

`FakeServer` starts it as a subprocess from tests; see its docstring.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import random
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson

from tests.fakebatch import FakeBatchApi

MODEL = "fake-model"
DEFAULT_REPLY = "Reasoning: I weigh the request (seed {seed}).\nOutput: Reply #{hash}."
DEFAULT_TRACE = "The user asks me something (seed {seed}); I think it over before I answer."
# How a reasoning model's trace comes back (--reasoning-shape): in one of these message fields,
# only as usage.completion_tokens_details.reasoning_tokens (`tokens`), inside the reply as a
# leading <think> block (`inline`: a server without a reasoning parser), or not at all (`none`).
REASONING_SHAPES = ("none", "reasoning_content", "reasoning", "thinking", "tokens", "inline")
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")
DEFAULT_MAX_TOKENS = 256  # what --tpm charges when a request sets no max_tokens
HANG_S = 3600.0  # far beyond any client timeout
CHAT_PATH = "/v1/chat/completions"
REASONS = {200: "OK", 409: "Conflict", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
WORD = re.compile(r"\S+")


def parse_seeds(text: str) -> frozenset[int]:
    """`3,7` -> {3, 7}; empty -> no bad seeds."""
    return frozenset(int(part) for part in text.split(",") if part.strip())


@dataclass
class Knobs:
    """Fault and limit settings; field names are the CLI flags with underscores."""

    latency: float = 0.0
    jitter: float = 0.0
    rpm: float | None = None
    tpm: float | None = None
    error_rate: float = 0.0
    hang_rate: float = 0.0
    malformed_rate: float = 0.0
    bad_seeds: frozenset[int] = frozenset()
    quota_exceeded: bool = False
    require_key: str | None = None
    seed: int | None = None
    reply: str = DEFAULT_REPLY
    echo_key: str = ""   # answer every chat by echoing the Authorization header: 429/500/400/401/200/http
    fixed_window: float | None = None   # LiteLLM's limiter: rpm/tpm per clock-aligned window of S s
    litellm_429: bool = False    # 429s carry only `llm_provider-retry-after: <window>`, as LiteLLM's
    limit_headers: bool = True   # successes carry x-ratelimit-* (False: a server that says nothing)
    cached_share: float = 0.0    # share of prompt tokens reported as cached (prompt_tokens_details)
    batch_step_s: float = 0.3    # Batch API: seconds per lifecycle step (validating, in_progress, ...)
    batch_outcome: str = "completed"   # how new batches end: completed | failed | expired | cancelled
    batch_create_hang: str = ""  # POST /v1/batches never answers: "before" creating, or "after"; "refuse": 400
    reasoning_shape: str = "none"   # REASONING_SHAPES: where the native reasoning trace goes
    reasoning: str = DEFAULT_TRACE  # the trace: str.format template like --reply


class Reply(NamedTuple):
    """One HTTP answer; `delay` seconds before sending it, `chat` counts it as in flight."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    chat: bool = False


def json_reply(status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, orjson.dumps(obj), headers)


def error_body(message: str, kind: str, code: str | None) -> dict[str, Any]:
    """OpenAI's error envelope, which clients parse to classify failures."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* style: "20ms" below a second, else "1.2s"."""
    return f"{math.ceil(seconds * 1000)}ms" if seconds < 1 else f"{seconds:.1f}s"


def retry_headers(wait: float) -> tuple[tuple[str, str], ...]:
    """Retry-After must be whole seconds (>= 1); retry-after-ms carries the exact wait."""
    return (("Retry-After", str(max(1, math.ceil(wait)))),
            ("retry-after-ms", str(math.ceil(wait * 1000))))


class Bucket:
    """Token bucket holding one second's worth of a per-minute limit, refilled continuously.

    A second's capacity makes bursts hit the limit quickly, as OpenAI enforces limits over
    sub-minute windows. Tracking what is used (not what is left) lets the capacity stretch
    to a request costing more than a second's worth, so a large prompt is slow, not impossible.
    """

    def __init__(self, kind: str, per_minute: float):
        self.kind = kind
        self.limit = per_minute
        self.rate = per_minute / 60
        self.capacity = max(1.0, self.rate)
        self.used = 0.0
        self.stamp = time.monotonic()

    def wait_for(self, cost: float) -> float:
        """Seconds until `cost` fits (0 if now), after refilling."""
        now = time.monotonic()
        self.used = max(0.0, self.used - (now - self.stamp) * self.rate)
        self.stamp = now
        return max(0.0, self.used + cost - max(self.capacity, cost)) / self.rate

    def headers(self) -> tuple[tuple[str, str], ...]:
        return ((f"x-ratelimit-limit-{self.kind}", str(int(self.limit))),
                (f"x-ratelimit-remaining-{self.kind}", str(max(0, int(self.capacity - self.used)))),
                (f"x-ratelimit-reset-{self.kind}", duration(self.used / self.rate)))


class FixedWindow:
    """LiteLLM's limiter (`enforce_model_rate_limits`): a count per clock-aligned window (the
    calendar minute at 60 s) that rejected requests raise too; its headers give limit and
    remaining, never a reset, and its 429s no standard timing at all."""

    def __init__(self, kind: str, limit: float, window_s: float):
        self.kind = kind
        self.limit = limit
        self.window_s = window_s
        self.index = -1
        self.used = 0.0

    def admit(self, cost: float) -> bool:
        """Count `cost` (requests count even when refused) and say whether it fits."""
        index = int(time.time() // self.window_s)
        if index != self.index:
            self.index, self.used = index, 0.0
        fits = self.used + cost <= self.limit
        if fits or self.kind == "requests":
            self.used += cost
        return fits

    def headers(self) -> tuple[tuple[str, str], ...]:
        return ((f"x-ratelimit-limit-{self.kind}", str(int(self.limit))),
                (f"x-ratelimit-remaining-{self.kind}", str(max(0, int(self.limit - self.used)))))


def content_chars(messages: list[dict[str, Any]]) -> int:
    """Characters of all message contents, including text parts of multi-part contents."""
    total = 0
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, str):
            total += len(content)
        else:
            total += sum(len(part.get("text", "")) for part in content)
    return total


def truncate_words(text: str, limit: int | None) -> tuple[str, int, bool]:
    """Cut `text` after `limit` words keeping its whitespace: (text, words, truncated)."""
    words = list(WORD.finditer(text))
    if limit is None or len(words) <= limit:
        return text, len(words), False
    return (text[:words[limit - 1].end()] if limit > 0 else ""), max(limit, 0), True


class App:
    """Request routing, knobs, rate limits and statistics (no I/O)."""

    def __init__(self, knobs: Knobs):
        self.knobs = knobs
        self.rng = random.Random(knobs.seed)
        self.buckets = self._make_buckets()
        self.windows = self._make_windows()
        self.all_429_until = 0.0
        self.completions = 0
        self.in_flight = 0
        self.reset()
        self.batch_api = FakeBatchApi(self)
        self.routes = {
            ("POST", CHAT_PATH): self.chat,
            ("GET", "/v1/models"): self.models,
            ("GET", "/_stats"): self.stats,
            ("POST", "/_reset"): self.reset_endpoint,
            ("POST", "/_config"): self.configure,
        }

    def _make_buckets(self) -> list[Bucket]:
        limits = (("requests", self.knobs.rpm), ("tokens", self.knobs.tpm))
        return [Bucket(kind, limit) for kind, limit in limits if limit] if not self.knobs.fixed_window else []

    def _make_windows(self) -> list[FixedWindow]:
        window_s = self.knobs.fixed_window
        limits = (("requests", self.knobs.rpm), ("tokens", self.knobs.tpm))
        return [FixedWindow(kind, limit, window_s) for kind, limit in limits if limit] if window_s else []

    def reset(self) -> None:
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.calls: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.max_in_flight = self.in_flight
        self.rejected_by_window: Counter[str] = Counter()   # fixed-window mode: 429s per window index
        self.first_window: int | None = None
        self.reasoning_received = 0   # requests carrying an assistant turn's trace back

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        route = self.routes.get((method, path.split("?", 1)[0]))
        if route is None and path.startswith(("/v1/files", "/v1/batches")):
            return self.batch_api.handle(method, path, headers, body)
        if route is None:
            return json_reply(404, error_body(f"Unknown route {method} {path}",
                                              "invalid_request_error", "unknown_url"))
        return route(headers, body)

    # --- control endpoints ---------------------------------------------------------------

    def models(self, headers: dict[str, str], body: bytes) -> Reply:
        denied = self.check_key(headers)
        return denied or json_reply(200, {"object": "list", "data": [
            {"id": MODEL, "object": "model", "created": 0, "owned_by": "fakeserver"}]})

    def stats(self, headers: dict[str, str], body: bytes) -> Reply:
        return json_reply(200, {**self.batch_api.stats(), "requests": self.requests, "by_status": self.by_status,
                                "calls": self.calls, "max_in_flight": self.max_in_flight,
                                "rejected_by_window": self.rejected_by_window, "first_window": self.first_window,
                                "reasoning_received": self.reasoning_received})

    def reset_endpoint(self, headers: dict[str, str], body: bytes) -> Reply:
        self.reset()
        return json_reply(200, {"ok": True})

    def configure(self, headers: dict[str, str], body: bytes) -> Reply:
        """Change knobs at run time; `all_429_for_s` opens a window of blanket 429s."""
        changes = orjson.loads(body or b"{}")
        names = {f.name for f in fields(Knobs)}
        unknown = set(changes) - names - {"all_429_for_s"}
        if unknown:
            return json_reply(400, error_body(f"Unknown knobs: {sorted(unknown)}",
                                              "invalid_request_error", None))
        for name, value in changes.items():
            if name == "all_429_for_s":
                self.all_429_until = time.monotonic() + float(value)
            elif name == "bad_seeds":
                self.knobs.bad_seeds = parse_seeds(value) if isinstance(value, str) else frozenset(value)
            else:
                setattr(self.knobs, name, value)
        if {"rpm", "tpm", "fixed_window"} & set(changes):
            self.buckets, self.windows = self._make_buckets(), self._make_windows()
        if "seed" in changes:
            self.rng.seed(self.knobs.seed)
        return json_reply(200, {"ok": True})

    # --- chat ----------------------------------------------------------------------------

    def check_key(self, headers: dict[str, str]) -> Reply | None:
        key = self.knobs.require_key
        if key is None or headers.get("authorization") == f"Bearer {key}":
            return None
        return json_reply(401, error_body("Incorrect API key provided (fake server).",
                                          "invalid_request_error", "invalid_api_key"))

    def chat(self, headers: dict[str, str], body: bytes) -> Reply:
        """Answer a completion, recording it per job/call and counting it as in flight."""
        reply = self.decide(headers, body)
        knobs = self.knobs
        hang = reply.status == 200 and self.rng.random() < knobs.hang_rate
        delay = HANG_S if hang else max(0.0, knobs.latency + self.rng.uniform(-knobs.jitter, knobs.jitter))
        self.requests += 1
        status = "hang" if hang else str(reply.status)
        self.by_status[status] += 1
        call = f"{headers.get('x-pipeline-job-id', '-')}/{headers.get('x-pipeline-call', '-')}"
        self.calls[call][status] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        limit_headers = tuple(h for limiter in [*self.buckets, *self.windows] for h in limiter.headers())
        if not knobs.limit_headers or (self.windows and reply.status != 200):
            limit_headers = ()   # LiteLLM's 429s carry no x-ratelimit-* headers
        return reply._replace(headers=reply.headers + limit_headers, delay=delay, chat=True)

    def decide(self, headers: dict[str, str], body: bytes) -> Reply:
        """The answer before latency: checks in the order a real API applies them."""
        if self.knobs.echo_key:
            return self.echo(headers)
        denied = self.check_key(headers)
        if denied:
            return denied
        try:
            request = orjson.loads(body)
            messages = request["messages"]
            prompt_tokens = math.ceil(content_chars(messages) / 4)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return json_reply(400, error_body(f"Invalid request body: {exc!r}",
                                              "invalid_request_error", None))
        if self.knobs.quota_exceeded:
            return json_reply(429, error_body(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota", "insufficient_quota"))
        max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
        limited = self.rate_limit(prompt_tokens + (DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens))
        if limited:
            return limited
        seed = request.get("seed")
        if seed in self.knobs.bad_seeds:
            return json_reply(400, error_body(f"Invalid request: seed {seed} is not allowed (fake server)",
                                              "invalid_request_error", None))
        fault = self.fault()
        return fault or self.completion(request, messages, prompt_tokens, max_tokens)

    def echo(self, headers: dict[str, str]) -> Reply:
        """A hostile server that quotes the request's Authorization header back (--echo-key MODE):
        in an error message (429 with a short Retry-After, 500, 400, 401), in a malformed 200 body
        (the key straddling byte 120, where clients cut quotes short), or in a broken HTTP status
        line (a connection error)."""
        mode, auth = self.knobs.echo_key, headers.get("authorization", "")
        quoted = f"Authorization: {auth}"
        if mode == "200":
            return Reply(200, b'{"choices": "' + b"x" * 75 + quoted.encode() + b'" ')
        if mode == "http":
            return Reply(0, f"HTTP/1.1 2OO {quoted}\r\nContent-Length: 0\r\n\r\n".encode())
        status = int(mode)
        extra = (("Retry-After", "3600"),) if status == 429 else ()
        return json_reply(status, error_body(f"Request rejected; you sent {quoted}", "echo_error", None), extra)

    def rate_limit(self, token_cost: int) -> Reply | None:
        """429 if the all-429 window is open or a bucket lacks its cost; else charge them."""
        window = self.all_429_until - time.monotonic()
        if window > 0:
            return json_reply(429, error_body("Rate limit reached for requests (all_429_for_s window, fake server).",
                                              "requests", "rate_limit_exceeded"), retry_headers(window))
        if self.windows:
            return self.window_limit(token_cost)
        costs = [1 if bucket.kind == "requests" else token_cost for bucket in self.buckets]
        waits = [bucket.wait_for(cost) for bucket, cost in zip(self.buckets, costs)]
        if not any(waits):
            for bucket, cost in zip(self.buckets, costs):
                bucket.used += cost
            return None
        wait, bucket, cost = max(zip(waits, self.buckets, costs), key=lambda t: t[0])
        message = (f"Rate limit reached for {bucket.kind} per min: Limit {int(bucket.limit)}, "
                   f"Requested {cost}. Please try again in {duration(wait)}. (fake server)")
        return json_reply(429, error_body(message, bucket.kind, "rate_limit_exceeded"), retry_headers(wait))

    def window_limit(self, token_cost: int) -> Reply | None:
        """Fixed-window mode: 429 when a window's count is used up, with LiteLLM's message and
        (with --litellm-429) its only hint, `llm_provider-retry-after` = the window length."""
        window_s = self.knobs.fixed_window or 60.0
        index = int(time.time() // window_s)
        self.first_window = index if self.first_window is None else self.first_window
        refused = [w for w in self.windows if not w.admit(1 if w.kind == "requests" else token_cost)]
        if not refused:
            return None
        self.rejected_by_window[str(index)] += 1
        hint = (("llm_provider-retry-after", str(int(window_s))),) if self.knobs.litellm_429 else ()
        limit = refused[0]
        return json_reply(429, error_body(
            f"litellm.RateLimitError: Deployment over defined {limit.kind} limit={int(limit.limit)} (fake server)",
            "throttling_error", "429"), hint)

    def give_back_unused_tokens(self, unused: int) -> None:
        """Admission charges prompt + max_tokens; the unused completion allowance is given
        back once the answer is known, so the token limit meters what was really used."""
        for bucket in self.buckets:
            if bucket.kind == "tokens":
                bucket.used = max(0.0, bucket.used - max(0, unused))

    def fault(self) -> Reply | None:
        """A random 500/503 (--error-rate); hangs and malformed bodies are decided later."""
        if self.rng.random() < self.knobs.error_rate:
            status = self.rng.choice((500, 503))
            return json_reply(status, error_body(f"The server had an error ({status}, fake server).",
                                                 "server_error", None))
        return None

    def completion(self, request: dict[str, Any], messages: list[dict[str, Any]],
                   prompt_tokens: int, max_tokens: int | None) -> Reply:
        """A chat.completion whose text depends only on (messages, seed)."""
        seed = request.get("seed")
        digest = hashlib.sha256(orjson.dumps([messages, seed], option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]
        text = self.knobs.reply.format(seed=seed, n_messages=len(messages), hash=digest)
        text, words, truncated = truncate_words(text, max_tokens)
        self.give_back_unused_tokens((DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens) - words)
        self.completions += 1
        if any(isinstance(m, dict) and m.get("role") == "assistant" and set(m) & set(REASONING_FIELDS)
               for m in messages):
            self.reasoning_received += 1
        message: dict[str, Any] = {"role": "assistant", "content": text}
        usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": words,
                                 "total_tokens": prompt_tokens + words,
                                 "prompt_tokens_details": {"cached_tokens": int(prompt_tokens * self.knobs.cached_share)}}
        shape = self.knobs.reasoning_shape
        if shape != "none":
            trace = self.knobs.reasoning.format(seed=seed, n_messages=len(messages), hash=digest)
            if shape == "inline":
                message["content"] = f"<think>\n{trace}\n</think>\n\n{text}"
            else:
                usage["completion_tokens_details"] = {"reasoning_tokens": len(WORD.findall(trace))}
            if shape in REASONING_FIELDS:
                message[shape] = trace
        body = orjson.dumps({
            "id": f"chatcmpl-fake{self.completions}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", MODEL),
            "choices": [{"index": 0, "message": message, "finish_reason": "length" if truncated else "stop"}],
            "usage": usage,
        })
        if self.rng.random() < self.knobs.malformed_rate:
            body = body[: len(body) // 2]
        return Reply(200, body)


class HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 with keep-alive and Content-Length bodies; one request at a time.

    Bytes that arrive while an answer is delayed wait in the buffer, so pipelined requests
    are answered in order.
    """

    def __init__(self, app: App, conns: set[HttpProtocol]):
        self.app = app
        self.conns = conns
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: tuple[asyncio.TimerHandle, Reply] | None = None
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conns.discard(self)
        if self.pending:
            handle, reply = self.pending
            handle.cancel()
            self.finished(reply)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.drain()

    def drain(self) -> None:
        """Handle every complete request in the buffer unless an answer is pending."""
        while self.pending is None and not self.close_after:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                lines = self.buf[:end].decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                size = int(headers.get("content-length", 0))
            except ValueError:
                self.transport.close()
                return
            if len(self.buf) < end + 4 + size:
                return
            body = bytes(self.buf[end + 4:end + 4 + size])
            del self.buf[:end + 4 + size]
            self.close_after = headers.get("connection", "").lower() == "close"
            self.dispatch(method, target, headers, body)

    def dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        reply = self.app.handle(method, target, headers, body)
        if reply.delay > 0:
            handle = asyncio.get_running_loop().call_later(reply.delay, self.send, reply)
            self.pending = (handle, reply)
        else:
            self.send(reply)

    def finished(self, reply: Reply) -> None:
        self.pending = None
        if reply.chat:
            self.app.in_flight -= 1

    def send(self, reply: Reply) -> None:
        self.finished(reply)
        if reply.status == 0:  # raw bytes: a broken HTTP answer
            self.transport.write(reply.body)
            self.transport.close()
            return
        extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers)
        head = (f"HTTP/1.1 {reply.status} {REASONS[reply.status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(reply.body)}\r\n{extra}\r\n")
        self.transport.write(head.encode("latin-1") + reply.body)
        if self.close_after:
            self.transport.close()
        else:
            self.drain()


async def serve(knobs: Knobs, port: int) -> None:
    """Listen, announce the port, and serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    app, conns = App(knobs), set()
    server = await loop.create_server(lambda: HttpProtocol(app, conns), "127.0.0.1", port)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for conn in list(conns):
        conn.transport.close()


def parse_args(argv: list[str] | None = None) -> tuple[Knobs, int]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each chat answer")
    parser.add_argument("--jitter", type=float, default=0.0, help="uniform +- seconds around --latency")
    parser.add_argument("--rpm", type=float, help="requests per minute (bucket of one second's worth)")
    parser.add_argument("--tpm", type=float, help="tokens per minute, charging prompt + max_tokens")
    parser.add_argument("--error-rate", type=float, default=0.0, help="probability of a 500/503")
    parser.add_argument("--hang-rate", type=float, default=0.0, help="probability of never answering")
    parser.add_argument("--malformed-rate", type=float, default=0.0, help="probability of truncated JSON")
    parser.add_argument("--bad-seeds", type=parse_seeds, default=frozenset(), help="e.g. 3,7: answer 400")
    parser.add_argument("--quota-exceeded", action="store_true", help="every chat gets insufficient_quota")
    parser.add_argument("--require-key", help="answer 401 without 'Authorization: Bearer KEY'")
    parser.add_argument("--seed", type=int, help="random seed for fault draws")
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="str.format template: seed, n_messages, hash")
    parser.add_argument("--echo-key", default="", help="echo the Authorization header: 429/500/400/401/200/http")
    parser.add_argument("--fixed-window", type=float, help="rpm/tpm count per clock-aligned window of S seconds")
    parser.add_argument("--litellm-429", action="store_true", help="429s carry only llm_provider-retry-after")
    parser.add_argument("--no-limit-headers", dest="limit_headers", action="store_false",
                        help="send no x-ratelimit-* headers")
    parser.add_argument("--cached-share", type=float, default=0.0,
                        help="share of prompt tokens reported as cached (usage.prompt_tokens_details)")
    parser.add_argument("--batch-step-s", type=float, default=0.3, help="Batch API: seconds per lifecycle step")
    parser.add_argument("--batch-outcome", default="completed", choices=["completed", "failed", "expired", "cancelled"],
                        help="how new batches end")
    parser.add_argument("--batch-create-hang", default="", choices=["", "before", "after", "refuse"],
                        help="POST /v1/batches never answers, before or after creating the batch (refuse: 400)")
    parser.add_argument("--reasoning-shape", choices=REASONING_SHAPES, default="none",
                        help="a reasoning model: its trace in this message field, or only a token count (tokens)")
    parser.add_argument("--reasoning", default=DEFAULT_TRACE, help="the trace: str.format template like --reply")
    args = vars(parser.parse_args(argv))
    port = args.pop("port")
    return Knobs(**args), port


def main(argv: list[str] | None = None) -> None:
    knobs, port = parse_args(argv)
    asyncio.run(serve(knobs, port))


# --- test helper -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def knob_flags(knobs: dict[str, Any]) -> list[str]:
    """latency=0.4 -> --latency 0.4; bad_seeds=[3, 7] -> --bad-seeds 3,7; True -> bare flag;
    False for a knob that defaults to True (limit_headers) -> --no-limit-headers."""
    flags: list[str] = []
    for name, value in knobs.items():
        flag = "--" + name.replace("_", "-")
        if value is False and getattr(Knobs, name, None) is True:
            flags.append("--no-" + name.replace("_", "-"))
        elif value is True:
            flags.append(flag)
        elif isinstance(value, (list, tuple, set, frozenset)):
            flags += [flag, ",".join(str(v) for v in value)]
        elif value is not None and value is not False:
            flags += [flag, str(value)]
    return flags


class FakeServer:
    """Starts `python -m tests.fakeserver` as a subprocess, waits for LISTENING, exposes base_url.

    Knobs map to CLI flags (see `knob_flags`). A subprocess rather than a thread keeps the
    server's CPU use out of the client's event loop and GIL, as in a real deployment.
    """

    def __init__(self, **knobs: Any):
        self.flags = knob_flags(knobs)
        self.proc: subprocess.Popen[str] | None = None
        self.client: httpx.Client | None = None
        self.base_url = ""

    def __enter__(self) -> FakeServer:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fakeserver", "--port", "0", *self.flags],
                                     cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            port = self._wait_listening(timeout=10.0)
        except BaseException:
            self.__exit__()
            raise
        root = f"http://127.0.0.1:{port}"
        self.base_url = f"{root}/v1"
        self.client = httpx.Client(base_url=root, timeout=10.0)
        return self

    def _wait_listening(self, timeout: float) -> int:
        assert self.proc and self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"fake server did not start (exit code {self.proc.poll()}, said {line!r})")
        return int(line.split()[1])

    def __exit__(self, *exc: object) -> None:
        if self.client:
            self.client.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self.client, "use FakeServer as a context manager"
        response = self.client.request(method, path, **kwargs)
        response.raise_for_status()
        return response

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_stats").json()

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def configure(self, **knobs: Any) -> None:
        """Change knobs at run time (same names as the constructor, plus all_429_for_s)."""
        self._call("POST", "/_config", json=knobs)


if __name__ == "__main__":
    main()
