# Set-up and everyday commands. `make demo` and `make test` create .venv in the repository root on first use.
PYTHON ?= python3
VENV ?= .venv
# The tested CPU build of PyTorch. On a GPU machine use e.g. TORCH_SPEC='torch>=2.5'.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo test lint bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[video,parquet]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## demo: install into .venv and run the main job (embed a small mixed corpus, print similarities)
demo: install
	$(BIN)/unite demo

## test: install the test dependencies into .venv and run the whole test suite
test: install-dev
	$(BIN)/ruff check src tests
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check src tests benchmarks

## bench: measure encoding throughput on the CPU (benchmarks/encode_throughput.py)
bench: install-dev
	$(BIN)/python benchmarks/encode_throughput.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
