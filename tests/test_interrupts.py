"""One signal handler for a whole run: the first signal goes to the innermost handler, a signal
that came before a handler is entered reaches it on entry, and the process's own SIGINT
handling is back afterwards."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import anyio
import pytest

from pipeline.sampling.interrupts import handle_interrupts
from pipeline.store.connection import stop_waiting


@pytest.fixture(autouse=True)
def clear_stop_waiting() -> Iterator[None]:
    """A signal sets the process-wide `stop_waiting`; later tests in this process wait for locks."""
    yield
    assert stop_waiting.is_set()   # every test here delivers a signal: waits must give up
    stop_waiting.clear()


async def _deliver(signum: signal.Signals) -> None:
    signal.raise_signal(signum)
    await anyio.sleep(0.05)   # the loop reads its wake-up pipe and calls the handler


def test_first_signal_goes_to_the_default_then_back_to_python() -> None:
    seen: list[str] = []

    async def main() -> None:
        with handle_interrupts(default=lambda signum: seen.append(signum.name)) as interrupts:
            await _deliver(signal.SIGTERM)
            assert interrupts.count == 1

    anyio.run(main)
    assert seen == ["SIGTERM"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_innermost_handler_takes_the_signal() -> None:
    seen: list[str] = []

    async def main() -> None:
        with handle_interrupts(default=lambda signum: seen.append("default")) as interrupts:
            with interrupts.handled_by(lambda signum: seen.append("outer")):
                with interrupts.handled_by(lambda signum: seen.append("inner")):
                    pass
                await _deliver(signal.SIGINT)

    anyio.run(main)
    assert seen == ["outer"]


def test_a_signal_that_came_first_reaches_a_handler_entered_later() -> None:
    seen: list[str] = []

    async def main() -> None:
        with handle_interrupts(default=lambda signum: seen.append("default")) as interrupts:
            await _deliver(signal.SIGINT)
            with interrupts.handled_by(lambda signum: seen.append("engine")):
                pass

    anyio.run(main)
    assert seen == ["default", "engine"]


def test_a_signal_during_a_thread_step_waits_for_the_step() -> None:
    """The run's steps run in threads; the signal is handled on the loop while the thread
    works, never raised inside it or inside another task."""
    seen: list[str] = []

    def step() -> str:
        signal.raise_signal(signal.SIGINT)   # as if Ctrl-C came while DuckDB worked
        return "stored"

    async def main() -> str:
        with handle_interrupts(default=lambda signum: seen.append("default")):
            value = await anyio.to_thread.run_sync(step)
            await anyio.sleep(0.05)
        return value

    assert anyio.run(main) == "stored"
    assert seen == ["default"]
