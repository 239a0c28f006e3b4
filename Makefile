# One entry point for the CPU test environment and the checks CI runs.
#   make test    create/reuse .venv, install requirements/test.lock exactly, lint, run the whole suite
#   make lint    ruff + shellcheck only
#   make lock    re-resolve requirements/test.lock from requirements/test.in
#   make bench   print the benchmarks' numbers
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# torch==2.13.0+cpu: from the local wheel cache where this machine has one, else PyTorch's CPU index.
TORCH_SOURCE := $(if $(wildcard /opt/wheels/torch-2.13.0*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
PYTEST_ARGS ?=

.PHONY: test lint lock bench venv clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: requirements/test.lock | $(BIN)/uv
	$(BIN)/uv pip sync --python $(BIN)/python $(TORCH_SOURCE) requirements/test.lock
	touch $@

venv: $(VENV)/.synced

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	find . -name '*.sh' -not -path './.venv/*' -not -path './models/*' -print0 | xargs -0 $(BIN)/shellcheck .ci/run

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lock: | $(BIN)/uv
	$(BIN)/uv pip compile requirements/test.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		$(TORCH_SOURCE) --no-header -o requirements/test.lock

bench: venv
	$(BIN)/python scripts/bench_reward.py
	$(BIN)/python scripts/bench_sft_packing.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
