# `make demo` sets up and runs the Frozen Lake comparison; `make test` sets up and runs the tests.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install demo test test-fast bench

install:
	# torch 2.13.0 first: it is a local CPU wheel; any other request may pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]" -c constraints.txt

demo: install
	ift frozen-lake --out runs/frozen_lake

test: install
	WANDB_MODE=disabled HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -p no:cacheprovider

test-fast: install
	WANDB_MODE=disabled HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m "not slow"

bench: install
	$(PYTHON) benchmarks/step_cost.py
