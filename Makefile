# Everything a fresh machine needs: `make demo` and `make test` create the venv,
# install the project (torch pinned by constraints/dev.txt) and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints/dev.txt

.PHONY: install dev demo test quality style docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install --quiet -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/fastmtp-export demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

quality: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python scripts/gen_docs.py --check

style: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/python scripts/gen_docs.py --update

docs: style

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_export.py
	$(BIN)/python bench/bench_token_maps.py
	$(BIN)/python bench/bench_lang.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
