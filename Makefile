# rlkd-bench: every target installs what it needs into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OUT ?= outputs
CONFIG ?= recipes/configs/gsrm_tiny.yaml
NUM_GPUS ?= 1
PYTEST_ARGS ?=

.PHONY: install demo test lint fmt train-gsrm bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/rlkd-bench build-gsrm-data --out $(OUT)/gsrm-data

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check rlkd_bench recipes tests bench

fmt: install
	$(VENV)/bin/ruff format rlkd_bench recipes tests bench

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
