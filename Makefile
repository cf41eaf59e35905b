# `make run` and `make test` set up .venv on first use (torch pinned to the build this
# project's CI uses; on a GPU machine pick yours: `make run TORCH="torch torchvision"`).
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.14.1 torchvision==0.29.1
ARGS  ?=

.PHONY: run test test-all test-fast golden lint clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $@

run: $(VENV)/.installed  ## the default experiment (embedded MNIST subset, 5 steps); extra overrides via ARGS="..."
	$(VENV)/bin/cl-run $(ARGS)

test: $(VENV)/.installed  ## every test CI runs: the slow end-to-end runs included, the `long` ones not
	$(PY) -m pytest -q -m "(slow or not slow) and not long"

test-all: $(VENV)/.installed  ## every test, the `long` end-to-end runs too (CI's time cannot hold them)
	$(PY) -m pytest -q -m "slow or not slow or long"

test-fast: $(VENV)/.installed  ## skip the end-to-end runs marked slow (plain `pytest` does the same)
	$(PY) -m pytest -q

golden: $(VENV)/.installed  ## rerun the golden cases and print what moved; ARGS=--update rewrites tests/golden.json
	$(PY) -m tests.golden $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check cl_runner tests scripts

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
