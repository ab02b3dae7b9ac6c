"""The fake server behaves like the OpenAI API the pipeline is tested against."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.fakeserver import FakeServer, knob_flags, parse_args


def chat_body(seed: int | None = 1, max_tokens: int | None = None, text: str = "Hello there") -> dict[str, Any]:
    body: dict[str, Any] = {"model": "fake-model", "seed": seed,
                            "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": text}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def post_chat(server: FakeServer, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", json=body, headers=headers, timeout=5)


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeServer]:
    """One default server for tests that only reconfigure knobs (subprocess start is slow)."""
    with FakeServer(seed=0) as server:
        yield server


@pytest.fixture()
def server(shared: FakeServer) -> FakeServer:
    shared.configure(rpm=None, tpm=None, bad_seeds=[], error_rate=0, hang_rate=0, malformed_rate=0)
    shared.reset()
    return shared


def test_completion_is_valid_and_deterministic(server: FakeServer) -> None:
    first = post_chat(server, chat_body(seed=3)).json()
    again = post_chat(server, chat_body(seed=3)).json()
    other = post_chat(server, chat_body(seed=4)).json()

    assert first["object"] == "chat.completion"
    choice = first["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    text = choice["message"]["content"]
    assert text.startswith("Reasoning: I weigh the request (seed 3).\nOutput: Reply #")
    usage = first["usage"]
    assert usage["prompt_tokens"] == 5  # ceil((9 + 11) / 4)
    assert usage["completion_tokens"] == len(text.split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert again["choices"][0]["message"]["content"] == text
    assert other["choices"][0]["message"]["content"] != text


def test_max_tokens_truncates_with_finish_reason_length(server: FakeServer) -> None:
    reply = post_chat(server, chat_body(max_tokens=3)).json()

    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["choices"][0]["message"]["content"] == "Reasoning: I weigh"
    assert reply["usage"]["completion_tokens"] == 3


def test_rpm_burst_gets_429_with_retry_headers() -> None:
    with FakeServer(rpm=120) as server:  # bucket of 2 requests, one more every 0.5 s
        statuses = [post_chat(server, chat_body()) for _ in range(4)]

    assert [r.status_code for r in statuses[:2]] == [200, 200]
    limited = statuses[-1]
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert 0 < int(limited.headers["retry-after-ms"]) <= 500
    assert limited.headers["x-ratelimit-limit-requests"] == "120"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"


def test_bad_seed_gets_400(server: FakeServer) -> None:
    server.configure(bad_seeds=[3, 7])

    response = post_chat(server, chat_body(seed=7))

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid request: seed 7 is not allowed (fake server)"
    assert post_chat(server, chat_body(seed=4)).status_code == 200


def test_stats_count_calls_per_job_and_call(server: FakeServer) -> None:
    post_chat(server, chat_body(), **{"X-Pipeline-Job-Id": "job1", "X-Pipeline-Call": "turn1"})
    post_chat(server, chat_body(), **{"X-Pipeline-Job-Id": "job1", "X-Pipeline-Call": "turn1"})
    post_chat(server, chat_body(), **{"X-Pipeline-Job-Id": "job2", "X-Pipeline-Call": "turn2"})
    post_chat(server, chat_body())

    stats = server.stats()

    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 4}
    assert stats["calls"] == {"job1/turn1": {"200": 2}, "job2/turn2": {"200": 1}, "-/-": {"200": 1}}
    assert stats["max_in_flight"] == 1


def test_all_429_window_then_recovers(server: FakeServer) -> None:
    server.configure(all_429_for_s=0.5)

    limited = post_chat(server, chat_body())
    time.sleep(0.6)
    recovered = post_chat(server, chat_body())

    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert recovered.status_code == 200


def test_faults_error_malformed_and_hang(server: FakeServer) -> None:
    server.configure(error_rate=1)
    assert post_chat(server, chat_body()).status_code in (500, 503)

    server.configure(error_rate=0, malformed_rate=1)
    malformed = post_chat(server, chat_body())
    assert malformed.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(malformed.content)

    server.configure(malformed_rate=0, hang_rate=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/chat/completions", json=chat_body(), timeout=0.3)
    assert httpx.get(f"{server.base_url}/models").status_code == 200  # still serving


def test_require_key_gives_401_without_key() -> None:
    with FakeServer(require_key="sk-test") as server:
        missing = post_chat(server, chat_body())
        right = post_chat(server, chat_body(), Authorization="Bearer sk-test")

    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert right.status_code == 200


def test_quota_exceeded_gets_insufficient_quota() -> None:
    with FakeServer(quota_exceeded=True) as server:
        response = post_chat(server, chat_body())

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"


def test_knobs_map_to_cli_flags() -> None:
    flags = knob_flags({"latency": 0.4, "bad_seeds": [3, 7], "quota_exceeded": True, "rpm": None})

    assert flags == ["--latency", "0.4", "--bad-seeds", "3,7", "--quota-exceeded"]
    knobs, port = parse_args(["--port", "0", *flags])
    assert (knobs.latency, knobs.bad_seeds, knobs.quota_exceeded, port) == (0.4, {3, 7}, True, 0)
