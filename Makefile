# dense: `make train` (main job on built-in data), `make test` (whole suite), `make bench`.
# The venv is made with plain venv + pip, so pip's own settings apply: PIP_INDEX_URL /
# PIP_FIND_LINKS point it at another index or a local folder of wheels.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The torch / torchvision pair the test suite runs with; any release the pyproject ranges allow
# works too (e.g. make test TORCH="torch torchvision").
TORCH ?= torch==2.14.1 torchvision==0.29.1
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
PYTEST_ARGS ?=
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

.PHONY: venv test test-fast train train-segment side-by-side sweep bench lint clean

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; a second `make venv` takes a second.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -U pip setuptools wheel
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[dev,export,sweep]'
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

# dense's SSDLite and torchvision's ssdlite320_mobilenet_v3_large trained on the same data, batches,
# optimizer, schedule and time budget (9.5 min each), scored alike (~20 minutes).
side-by-side: venv
	$(BIN)/python tools/side_by_side.py

# The four MobileNetV3 LR-ASPP variants, short schedule (~8 minutes on 2 cores): summary.md, pareto.png
# in multirun/<date>/<time>/ (docs/sweeps.md).
sweep: venv
	$(BIN)/python tools/train.py -m sweep=mnv3_lraspp

# bench.json and BENCHMARKS.md (the tables, with date, CPU model, threads and versions).
bench: venv
	$(BIN)/python tools/benchmark.py --paper --speed --detect --segment --deploy --out bench.json

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
