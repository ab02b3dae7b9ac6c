"""Ctrl-C and SIGTERM for a whole command, through one handler installed once.

Why once: asyncio's `remove_signal_handler` puts Python's default SIGINT handler back, so a
handler opened and closed around each step leaves gaps; a Ctrl-C in a gap raises
KeyboardInterrupt inside whichever task runs at that moment, it escapes the event loop, and
asyncio prints that task's traceback at shutdown. Here the handler stays for the whole run and
the innermost part that can stop gracefully (the engine: stop sending, store what is finished)
decides what the first signal does; the second exits at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio
import structlog

from pipeline.store.connection import stop_waiting

log = structlog.get_logger()
SIGNALS = (signal.SIGTERM, signal.SIGINT)   # removed in this order: SIGINT's removal may raise
Handler = Callable[[signal.Signals], None]
T = TypeVar("T")


class Interrupts:
    """What the signals so far asked for; the first goes to the innermost handler."""

    def __init__(self, default: Handler) -> None:
        self.count = 0
        self._handlers = [default]

    @contextmanager
    def handled_by(self, handler: Handler) -> Iterator[None]:
        """Let `handler` take the first signal while inside (at once, if it already came)."""
        self._handlers.append(handler)
        try:
            if self.count:
                handler(signal.SIGINT)
            yield
        finally:
            self._handlers.remove(handler)

    def received(self, signum: signal.Signals) -> None:
        self.count += 1
        stop_waiting.set()   # a thread waiting for the database gives up (connection.retry_on_lock)
        if self.count > 1:
            print("\nsecond interrupt: exiting now; finished results are in the journal and are "
                  "imported by the next run", file=sys.stderr, flush=True)
            os._exit(130)
        self._handlers[-1](signum)


@contextmanager
def handle_interrupts(default: Handler) -> Iterator[Interrupts]:
    """SIGINT and SIGTERM go to an `Interrupts` until the block ends; `default` takes the first
    signal when no inner handler does. A Ctrl-C in the last instant, as the handler is removed,
    raises KeyboardInterrupt in the calling task (Python checks pending signals then)."""
    loop = asyncio.get_running_loop()
    interrupts = Interrupts(default)
    for signum in SIGNALS:
        loop.add_signal_handler(signum, interrupts.received, signum)
    try:
        yield interrupts
    finally:
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)


async def until_interrupted(command: Callable[[Interrupts], Awaitable[T]]) -> T:
    """Run a whole command under one handler: a signal that no inner handler takes cancels it
    (its waits for the database give up), and KeyboardInterrupt is raised once it has unwound."""
    with anyio.CancelScope() as scope, handle_interrupts(default=lambda signum: scope.cancel()) as interrupts:
        return await command(interrupts)
    raise KeyboardInterrupt   # reached only when the scope was cancelled by a signal
