# Set-up and the two everyday commands. `make demo` and `make test` install everything they need
# into .venv first (torch 2.13.0 CPU build when no torch is present; a GPU user's own torch stays).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test lint
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/dcnn-train

lint: install
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/pytest -q
