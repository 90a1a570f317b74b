# canny's two Quick start commands, plus helpers. Every target installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck bench compat clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e . --group dev
	@rm -f $(VENV)/.installed-* && touch $@

## demo: stream an answer from the embedded emulator (no key, no network)
demo: $(STAMP)
	@$(BIN)/canny ask --offline "Hello! What can canny do for my API bill?"

## test: lint, type-check and run the whole test suite (a throwaway PostgreSQL; Chromium for the HTML report)
test: $(STAMP)
	@bash scripts/ensure-chromium.sh
	@$(BIN)/ruff check src tests benchmarks examples docs compat
	@$(BIN)/ruff format --check src tests benchmarks examples docs compat
	@$(BIN)/mypy
	@bash scripts/pg-test-server.sh run $(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	@$(BIN)/ruff check src tests benchmarks examples docs compat && $(BIN)/ruff format --check src tests benchmarks examples docs compat

typecheck: $(STAMP)
	@$(BIN)/mypy

## bench: canny vs the raw anthropic SDK on the emulator, as ratios; then reports and budgets
bench: $(STAMP)
	@$(BIN)/python benchmarks/targets.py --reset
	@$(BIN)/python benchmarks/run.py $(BENCH_ARGS)
	@$(BIN)/python benchmarks/bench_report.py
	@$(BIN)/python benchmarks/bench_budget.py $(BENCH_ARGS)
	@$(BIN)/python benchmarks/bench_lost.py $(BENCH_ARGS)
	@$(BIN)/python benchmarks/targets.py

## compat: real clients (anthropic 2.x/1.x, TypeScript, llm, LiteLLM, pydantic-ai, LangChain) vs the emulator
compat: $(STAMP)
	@$(BIN)/python compat/run.py $(COMPAT_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
