# Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
N ?= 5
DB ?= data/results.duckdb
EXPERIMENT ?= scenarios/experiments/default.toml

.PHONY: venv lock lint test test-fast sample grade report status bench bench-peers serve model view clean gateway browser

# Installs the locked versions (requirements.lock), then the project itself without resolving again.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# Re-resolve pyproject.toml's ranges in a scratch venv and pin what it got.
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv && .lockvenv/bin/pip install --quiet '.[dev]'
	{ echo "# Exact versions the test suite passed with (Python 3.11). Regenerate with \`make lock\` after"; \
	  echo "# changing dependencies in pyproject.toml, which keeps the honest ranges."; \
	  .lockvenv/bin/pip freeze --all --exclude-editable | grep -v -e '^refusal-pipeline' -e '^pip=='; } > requirements.lock
	rm -rf .lockvenv

# The real LiteLLM proxy for tests/test_litellm_gateway.py, in a venv of its own so that its
# dependencies never move the project's locked pins (version: pyproject's `gateway` extra).
# Measured here: ~50 s from a clean cache. The test finds it through LITELLM_BIN.
GATEWAY_VENV := .venv-gateway
GATEWAY_PIN := litellm[proxy]==1.106.2
$(GATEWAY_VENV)/.installed:
	$(PYTHON) -m venv $(GATEWAY_VENV)
	$(GATEWAY_VENV)/bin/python -m pip install --quiet '$(GATEWAY_PIN)'
	touch $@

gateway: $(GATEWAY_VENV)/.installed

export LITELLM_BIN ?= $(if $(wildcard $(GATEWAY_VENV)/bin/litellm),$(CURDIR)/$(GATEWAY_VENV)/bin/litellm,)

# Debian's chromium for the browser test in tests/test_view.py (Playwright drives it; its own
# browser download is never used). Needs root and apt; where it cannot be had, one line and the
# test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium; } >/dev/null 2>&1 || echo "chromium not installed (needs root and apt): the browser test in tests/test_view.py will be skipped"; }

lint: venv
	$(PY) -m ruff check pipeline tests benchmarks
	$(PY) -m mypy

test: lint browser
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

sample: venv
	$(PY) -m pipeline sample --experiment $(EXPERIMENT) --n $(N) --db $(DB)

grade: venv
	$(PY) -m pipeline grade --db $(DB)

report: venv
	$(PY) -m pipeline grade --db $(DB)
	$(PY) -m pipeline report --db $(DB) --out data/report

bench: venv
	$(PY) -m benchmarks.bench

# Bench case 1's workload through the pipeline and through Inspect AI, side by side
# (benchmarks/peers.py; REQUESTS=1000 by default). Inspect runs from .venv-peers, which the
# script builds on first use from benchmarks/peers-requirements.txt: never from .venv.
bench-peers: venv
	$(PY) -m benchmarks.peers $(if $(REQUESTS),--requests $(REQUESTS))

serve: venv
	$(PY) -m pipeline serve

model: venv
	$(PY) -c 'from pipeline.local_model.server import ensure_model; print(ensure_model())'

status: venv
	$(PY) -m pipeline status --db $(DB)

# The web viewer (README "Reading and labelling in the browser"); PORT=8000 for a fixed port.
view: venv
	$(PY) -m pipeline view --db $(DB) $(if $(PORT),--port $(PORT))

clean:
	rm -rf $(VENV) .pytest_cache
