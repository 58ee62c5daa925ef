# cvinw: one command per job. Every target that needs Python depends on `install`, so a fresh clone needs nothing else.
SHELL := /bin/bash
PYTHON_SYS ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cvinw-installed
PRESET ?= tiny
DATA ?=
PYTEST_ARGS ?=
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1

.PHONY: help install lock test test-fast lint mlflow-ui reproduce-polyhistor reproduce-st-adapter reproduce-conv-adapter reproduce-vificlip reproduce-maskclip pretrain clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-24s\033[0m %s\n", $$1, $$2}'
	@echo "  variables: PRESET=smoke|tiny|paper (default tiny)  DATA=/path/to/dataset  PYTEST_ARGS=..."

$(VENV)/bin/python:
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-installs only when pyproject.toml or requirements.lock changes. torch/torchvision are pinned (the pair that
# installs here); every other dependency is held at the version in requirements.lock (pip constraints), so a fresh
# clone installs what CI tested. `make lock` refreshes the lock from a fresh resolution.
$(STAMP): pyproject.toml requirements.lock | $(VENV)/bin/python
	@echo "[install] torch 2.14.1 + torchvision 0.29.1 and the project (editable, with dev extras, versions from requirements.lock) into $(VENV)"
	$(PY) -m pip install -q -c requirements.lock torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the project (idempotent; fast when nothing changed)

lock: ## re-resolve every dependency at its newest allowed version in a scratch venv and write requirements.lock
	rm -rf .venv-lock && $(PYTHON_SYS) -m venv .venv-lock && .venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	.venv-lock/bin/python -m pip install -q -e '.[dev]'
	@{ echo "# Exact versions make install uses (pip constraints). Refresh with: make lock"; \
	   .venv-lock/bin/python -m pip freeze --exclude-editable | LC_ALL=C sort; } > requirements.lock
	rm -rf .venv-lock
	@echo "requirements.lock: $$(grep -vc '^#' requirements.lock) pinned packages"

test: install ## run the whole test suite (offline, temporary MLflow store)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install ## tests without the slow (DDP, server, pretraining) ones
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check .

mlflow-ui: install ## serve the MLflow store (sqlite:///mlflow.db) on http://127.0.0.1:5000 and print each experiment's runs address
	$(PY) -m common.mlflow_ui --host 127.0.0.1 --port 5000

pretrain: install ## build the four ShapesWorld-pretrained tiny backbones into outputs/pretrained/
	$(PY) -m common.data.synth pretrain --all

reproduce-polyhistor: install ## Polyhistor's PASCAL-Context table (PRESET=tiny|smoke|paper, DATA=path/to/PASCAL_MT)
	$(PY) -m benchmarks.reproduce polyhistor --preset $(PRESET) $(if $(DATA),--data $(DATA),)

reproduce-st-adapter: install ## ST-Adapter's K400/SSv2 rows (PRESET=tiny|smoke|paper, DATA=path)
	$(PY) -m benchmarks.reproduce st_adapter --preset $(PRESET) $(if $(DATA),--data $(DATA),)

reproduce-conv-adapter: install ## Conv-Adapter's VTAB-like + few-shot rows (PRESET=tiny|smoke|paper, DATA=path)
	$(PY) -m benchmarks.reproduce conv_adapter --preset $(PRESET) $(if $(DATA),--data $(DATA),)

reproduce-vificlip: install ## ViFi-CLIP's tables: fully supervised, base-to-novel, cross-dataset zero-shot (PRESET=tiny|smoke|paper, DATA=folder with kinetics400/ [hmdb51/ ucf101/ ssv2/ kinetics600/])
	$(PY) -m benchmarks.reproduce vificlip --preset $(PRESET) $(if $(DATA),--data $(DATA),)

reproduce-maskclip: install ## MaskCLIP's rows: trivial, crop-and-classify, no-RMA, MaskCLIP; PQ/SQ/RQ, novel PQ, mIoU (PRESET=tiny|smoke|paper, DATA=path/to/coco)
	$(PY) -m benchmarks.reproduce maskclip --preset $(PRESET) $(if $(DATA),--data $(DATA),)

clean: ## remove caches (keeps .venv, outputs/ and the MLflow store)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
