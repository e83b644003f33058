# dense: `make train` (main job on built-in data), `make test` (whole suite), `make bench`.
# The venv is made with plain venv + pip: torch / torchvision come from this machine's wheel store
# (uv or poetry would download gigabytes).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.14.1 torchvision==0.29.1
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
PYTEST_ARGS ?=
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# This machine's pip config names extra local indexes that may be absent: drop that noise only.
QUIET := 2>&1 | { grep -v "is ignored: it is neither" || true; }

.PHONY: venv test test-fast train train-segment bench lint clean

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; a second `make venv` takes a second.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -U pip setuptools wheel $(QUIET)
	$(PIP) install $(TORCH) $(QUIET)
	$(PIP) install -e '.[dev,export,sweep]' $(QUIET)
	$(BIN)/python -c "import torch, torchvision, lightning, hydra, timm, albumentations, pycocotools, \
	  faster_coco_eval, torchmetrics, cityscapesscripts, onnxruntime, dense"
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -n 2 --durations=10 $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

train: venv
	$(BIN)/python tools/train.py task=detect backbone=v3_large

train-segment: venv
	$(BIN)/python tools/train.py task=segment backbone=v3_large

bench: venv
	$(BIN)/python tools/benchmark.py --paper --speed --detect --segment --out bench.json

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
