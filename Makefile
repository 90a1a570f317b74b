# canny's two Quick start commands, plus helpers. Every target installs what it needs.
# `make` alone (or `make help`) lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Two install stamps: the demo needs only canny and its core dependencies; the rest also
# the dev group (pytest, mypy, ruff, psycopg ...). A changed pyproject.toml reinstalls.
CORE   := $(VENV)/.core-$(HASH)
STAMP  := $(VENV)/.installed-$(HASH)
PIP    := $(BIN)/python -m pip install --disable-pip-version-check
# pip's own lines, cut to what shows progress: each package fetched, then the summary
SHOW   := sed -un 's/^\(Collecting .*\|Successfully installed .*\)/  \1/p'
SHELL  := bash
.SHELLFLAGS := -o pipefail -ec

.PHONY: help demo test lint typecheck bench compat clean
.DEFAULT_GOAL := help

## help: list these targets
help:
	@echo "make TARGET, where TARGET is one of:"
	@sed -n 's/^## \([a-z]*\): /  \1\t/p' Makefile | expand -t 14

$(CORE): pyproject.toml
	@echo "make: installing canny and its core dependencies into $(VENV) (first run only; about 30 s)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) --quiet --upgrade "pip>=25.1"
	@$(PIP) -e . | $(SHOW)
	@rm -f $(VENV)/.core-* && touch $@

$(STAMP): $(CORE)
	@echo "make: installing the test and lint tools (pytest, mypy, ruff, psycopg ...) into $(VENV) (first run only)"
	@$(PIP) -e . --group dev | $(SHOW)
	@rm -f $(VENV)/.installed-* && touch $@

## demo: stream an answer from the embedded emulator (no key, no network)
demo: $(CORE)
	@$(BIN)/canny ask --offline "Hello! What can canny do for my API bill?"

## test: lint, type-check and run the whole test suite (a throwaway PostgreSQL; Chromium for the HTML report)
test: $(STAMP)
	@bash scripts/ensure-chromium.sh
	@$(BIN)/ruff check src tests benchmarks examples docs compat
	@$(BIN)/ruff format --check src tests benchmarks examples docs compat
	@$(BIN)/mypy
	@bash scripts/pg-test-server.sh run $(BIN)/pytest -q -p no:cacheprovider

## lint: ruff check and ruff format --check
lint: $(STAMP)
	@$(BIN)/ruff check src tests benchmarks examples docs compat && $(BIN)/ruff format --check src tests benchmarks examples docs compat

## typecheck: mypy --strict
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

## clean: remove the virtual environment and caches
clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
