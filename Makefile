# Every target does its own set-up: a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tradebot run --config config.toml

test: $(STAMP)
	$(BIN)/python -m pytest -q

LINT_STAMP := $(VENV)/.lint-installed
$(LINT_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(LINT_STAMP)

# ruff and mypy over the production packages (CI runs it next to make test).
lint: $(LINT_STAMP)
	$(BIN)/ruff check core adapters supervision actors tradebot
	$(BIN)/mypy

# The dashboard screenshots in docs/, taken by the browser tests (needs chromium + chromium-driver).
screenshots: $(STAMP)
	DASHBOARD_SHOTS_DIR=docs $(BIN)/python -m pytest -q tests/test_dashboard_browser.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis var
