# Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
N ?= 5
DB ?= data/results.duckdb
EXPERIMENT ?= scenarios/experiments/default.toml

.PHONY: venv test sample grade report status bench serve model clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

sample: venv
	$(PY) -m pipeline sample --experiment $(EXPERIMENT) --n $(N) --db $(DB)

grade: venv
	$(PY) -m pipeline grade --db $(DB)

report: venv
	$(PY) -m pipeline grade --db $(DB)
	$(PY) -m pipeline report --db $(DB) --out data/report

bench: venv
	$(PY) -m benchmarks.bench

serve: venv
	$(PY) -m pipeline serve

model: venv
	$(PY) -c 'from pipeline.local_model.server import ensure_model; print(ensure_model())'

status: venv
	$(PY) -m pipeline status --db $(DB)

clean:
	rm -rf $(VENV) .pytest_cache
