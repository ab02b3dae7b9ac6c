import signal
import sys

try:
    # A Ctrl-C while DuckDB's extension module initialises aborts the process ("Critical nanobind
    # error", exit -6): Ctrl-C waits until the modules are loaded, then interrupts as usual.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        from pipeline.cli import main
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    code = main()
except KeyboardInterrupt:   # Ctrl-C while the modules load or the arguments are parsed: no traceback
    print("\ninterrupted", file=sys.stderr)
    code = 130
raise SystemExit(code)
