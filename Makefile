# One entry point for the CPU test environment and the checks CI runs.
#   make test    create/reuse .venv, install requirements/test.lock exactly, create/reuse .venv-verl (the CPU
#                verl trainer environment), lint, install Chromium if missing (for tests/test_web_ui.py), run the
#                whole suite
#   make test-fast  the inner loop: lint, then every test not marked `slow` (no Ray launch, no vLLM engine, no
#                notebook kernel); times in docs/testing.md
#   make venv-verl  .venv-verl only: services/verl/requirements-cpu.lock (the verl image's CPU variant), for
#                `N_GPUS=0 PYTHON=.venv-verl/bin/python bash scripts/run_ppo.sh` and the CPU training tests
#   make lint    ruff + shellcheck only
#   make lock    re-resolve requirements/test.lock from requirements/test.in
#   make bench   print the benchmarks' numbers (reward, SFT packing, evaluation on vLLM vs HF, vLLM's compile cache)
#   make test-stack   the stack on a real container engine (tests/test_compose_engine.py): uses the Docker engine that
#                answers, else installs and starts podman (root, apt); unless the machine has GPUs, the CPU variant
#                through its air-gapped option (CPU_BASE_IMAGE, WHEELHOUSE below: their scripts build them, cached);
#                builds, starts and tests the stack; removes it
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
VERL_VENV := .venv-verl
VERL_LOCK := services/verl/requirements-cpu.lock
UV_VERSION := 0.13.9
# torch==2.13.0+cpu: from the local wheel cache where this machine has one, else PyTorch's CPU index.
TORCH_SOURCE := $(if $(wildcard /opt/wheels/torch-2.13.0*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
PYTEST_ARGS ?= --durations=30  # the slowest tests, with their times, at the end of every run (CI keeps them)
# test-stack's CPU variant builds FROM the local base and installs from the local wheelhouse (docs/cpu.md: the
# air-gapped option; CI here has no registry). `make test-stack CPU_BASE_IMAGE= WHEELHOUSE=` builds it as a
# laptop does: FROM the registry's python:3.11-slim-bookworm (docker-compose.cpu.yml), wheels from PyPI.
CPU_BASE_IMAGE ?= gsm8k-posttrain/cpu-base:bookworm
WHEELHOUSE ?= gsm8k-posttrain/wheelhouse:cpu
# Any of these (or $CHROMIUM) lets tests/test_web_ui.py drive a headless browser; they skip themselves without one.
BROWSERS := chromium chromium-browser google-chrome google-chrome-stable

.PHONY: test test-fast lint browser lock bench venv venv-verl clean test-stack

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: requirements/test.lock pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip sync --python $(BIN)/python $(TORCH_SOURCE) requirements/test.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

venv: $(VENV)/.synced

# One environment per image: the verl image's packages (TRL 0.27, TransferQueue) differ from the notebook's.
$(VERL_VENV)/.synced: $(VERL_LOCK) | $(BIN)/uv
	[ -x $(VERL_VENV)/bin/python ] || $(PYTHON) -m venv $(VERL_VENV)
	$(BIN)/uv pip sync --python $(VERL_VENV)/bin/python $(TORCH_SOURCE) $(VERL_LOCK)
	touch $@

venv-verl: $(VERL_VENV)/.synced

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	find . -name '*.sh' -not -path './.venv/*' -not -path './.venv-verl/*' -not -path './models/*' -print0 | xargs -0 $(BIN)/shellcheck .ci/run

# Chromium for the browser tests: when none is on PATH, install Debian's package if we are root with apt-get
# (about a minute); otherwise, or if that fails, say so and go on (those tests then skip, with the reason).
browser:
	@if [ -n "$${CHROMIUM:-}" ] || command -v $(BROWSERS) >/dev/null; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "browser: installing chromium with apt-get for tests/test_web_ui.py"; \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; } \
			|| echo "browser: WARNING: apt-get could not install chromium; tests/test_web_ui.py will skip"; \
	else \
		echo "browser: notice: no Chromium ($(BROWSERS)) on PATH and no root apt-get to install it;" \
			"tests/test_web_ui.py will skip. Install chromium or set CHROMIUM=/path/to/chrome"; \
	fi

test: lint browser venv-verl
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# DOCKER_HOST comes from scripts/engine/podman.sh (empty: the engine `docker` already talks to).
test-stack: venv browser
	@set -e; host=$$(bash scripts/engine/podman.sh); if [ -n "$$host" ]; then export DOCKER_HOST=$$host; fi; \
	if [ "$${STACK_VARIANT:-}" = cpu ] || ! nvidia-smi --list-gpus >/dev/null 2>&1; then \
		export CPU_BASE_IMAGE=$(CPU_BASE_IMAGE) WHEELHOUSE=$(WHEELHOUSE); \
		if [ -n "$$CPU_BASE_IMAGE" ]; then bash scripts/engine/cpu_base_image.sh; fi; \
		if [ -n "$$WHEELHOUSE" ]; then bash scripts/engine/wheelhouse.sh; fi; \
	fi; \
	$(BIN)/python -m pytest -m docker -s tests/test_compose_engine.py $(PYTEST_ARGS)

lock: | $(BIN)/uv
	$(BIN)/uv pip compile requirements/test.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		$(TORCH_SOURCE) --no-header -o requirements/test.lock

bench: venv venv-verl
	$(BIN)/python -m scripts.bench.reward
	$(BIN)/python -m scripts.bench.sft_packing
	$(VERL_VENV)/bin/python -m scripts.bench.eval_backends
	$(VERL_VENV)/bin/python -m scripts.bench.compile_cache

clean:
	rm -rf $(VENV) $(VERL_VENV) .pytest_cache .ruff_cache
