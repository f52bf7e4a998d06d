# Quick start (README): `make verify` and `make test` each set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup verify proofs test test-full lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m engine.warmup
	touch $(STAMP)

setup: $(STAMP)

verify: $(STAMP)
	$(PY) -m verify

proofs: $(STAMP)
	$(PY) -m proofs

lint: $(STAMP)
	$(PY) -m ruff check engine verify proofs tests benchmarks

test: $(STAMP) lint
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q

test-full: $(STAMP) lint
	HYPOTHESIS_PROFILE=dev $(PY) -m pytest -q -m '' 

bench: $(STAMP)
	$(PY) -m pip install -q regioncam || echo "regioncam not installed: bench_partition.py skips it"
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
