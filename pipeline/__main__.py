import sys

try:
    from pipeline.cli import main

    code = main()
except KeyboardInterrupt:   # Ctrl-C while the modules load or the arguments are parsed: no traceback
    print("\ninterrupted", file=sys.stderr)
    code = 130
raise SystemExit(code)
