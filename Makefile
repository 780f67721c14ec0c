# rlkd-bench: every target installs what it needs into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OUT ?= outputs
CONFIG ?= recipes/configs/gsrm_tiny.yaml
NUM_GPUS ?= 1
DATA ?=
ACCELERATE_CONFIG ?= recipes/accelerate/zero3.yaml
TRAIN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install demo test lint fmt train-gsrm bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/rlkd-bench build-gsrm-data --out $(OUT)/gsrm-data

# GSRM SFT. Default: the tiny offline config on CPU (about a minute); without DATA it first builds
# $(OUT)/gsrm-data with the offline annotator. NUM_GPUS > 1 launches with accelerate + DeepSpeed:
#   make train-gsrm CONFIG=recipes/configs/gsrm_qwen7b.yaml NUM_GPUS=8 DATA=outputs/gsrm-data
# TRAIN_ARGS takes config overrides, e.g. TRAIN_ARGS="output_dir=outputs/gsrm max_steps=100".
train-gsrm: install
	@data="$(DATA)"; \
	if [ -z "$$data" ]; then \
	  data="$(OUT)/gsrm-data"; \
	  if [ ! -f "$$data/sft/dataset_dict.json" ]; then \
	    $(VENV)/bin/rlkd-bench build-gsrm-data --out "$$data" || exit $$?; \
	  fi; \
	fi; \
	if [ "$(NUM_GPUS)" -gt 1 ]; then \
	  set -x; $(VENV)/bin/accelerate launch --config_file $(ACCELERATE_CONFIG) --num_processes $(NUM_GPUS) \
	    recipes/train_gsrm.py --config $(CONFIG) data="$$data" $(TRAIN_ARGS); \
	else \
	  set -x; $(PY) recipes/train_gsrm.py --config $(CONFIG) data="$$data" $(TRAIN_ARGS); \
	fi

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check rlkd_bench recipes tests bench

fmt: install
	$(VENV)/bin/ruff format rlkd_bench recipes tests bench

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
