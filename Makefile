# Set-up and everyday commands. `make demo` and `make test` create .venv in the repository root on first use.
PYTHON ?= python3
VENV ?= .venv
# The tested CPU build of PyTorch. On a GPU machine use e.g. TORCH_SPEC='torch>=2.5'.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo test lint bench install install-dev clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[video,parquet,index]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## demo: install into .venv and run the main job (index a small corpus of photos, clips and notes; search it)
demo: install
	$(BIN)/unite demo

## test: install the test dependencies into .venv and run the whole test suite
test: install-dev system-deps
	$(BIN)/ruff check src tests
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

## system-deps: Debian's headless Chromium and its driver for the web page tests, installed when missing (as root)
system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }

lint: install-dev
	$(BIN)/ruff check src tests benchmarks

## bench: measure encoding throughput on the CPU (benchmarks/encode_throughput.py)
bench: install-dev
	$(BIN)/python benchmarks/encode_throughput.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
