# `make run`: set up .venv and train + evaluate the default model. `make test`: run the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RECIPE ?= fast
RUN_DIR ?= runs/$(RECIPE)
# Machines without internet: use the shared copy of CIFAR-10 beside the project when present.
SHARED_DATA := $(abspath ../shared/cifar10)
ifneq ($(wildcard $(SHARED_DATA)/cifar-10-python.tar.gz),)
export CIFAR_CNN_DATA ?= $(SHARED_DATA)
endif

.PHONY: run test install install-test chromium bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: its CPU wheel lies on these machines; a bare range would pull CUDA.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Browser tests drive Debian's chromium with Playwright (playwright cannot download browsers here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: install chromium to run the browser tests"; fi; }

install-test: $(VENV)/.installed-test chromium

run: install
	$(BIN)/cifar-cnn train --recipe $(RECIPE) --out $(RUN_DIR) --overwrite
	$(BIN)/cifar-cnn evaluate $(RUN_DIR)

test: install-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/python -m pytest

bench: install
	$(BIN)/cifar-cnn bench --recipe fast --seeds 5

clean:
	rm -rf $(VENV) runs .pytest_cache
