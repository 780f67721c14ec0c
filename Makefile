# rlkd-bench: every target installs what it needs into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OUT ?= outputs
CONFIG ?=
NUM_GPUS ?= 1
# A config's `output_dir: outputs/NAME` becomes $(OUT)/NAME (TRAIN_ARGS="output_dir=..." still wins).
# Exit codes: make itself exits 2 whenever a target fails; the command's own code (65 data, 70 runtime,
# 130 interrupted) is the N of make's "Error N" line, and the command make echoes (set -x) returns it.
CONFIG_OUT = od=$$(sed -n 's/^output_dir:[[:space:]]*//p' "$(CONFIG_FILE)" | sed 's/[[:space:]]*\#.*//' | tr -d "\"'" | head -n 1); \
	case "$$od" in outputs/*) set -- "$$@" output_dir="$(OUT)/$${od\#outputs/}";; esac
DATA ?=
ACCELERATE_CONFIG ?= recipes/accelerate/zero3.yaml
TRAIN_ARGS ?=
PYTEST_ARGS ?=
SEEDS ?=
QUICK ?=
STUDY_ARGS ?=

.PHONY: install demo test lint fmt train-gsrm train-rlkd mini-study bench clean

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
train-gsrm: CONFIG_FILE = $(or $(CONFIG),recipes/configs/gsrm_tiny.yaml)
train-gsrm: install
	@data="$(DATA)"; \
	if [ -z "$$data" ]; then \
	  data="$(OUT)/gsrm-data"; \
	  if [ ! -f "$$data/sft/dataset_dict.json" ]; then \
	    $(VENV)/bin/rlkd-bench build-gsrm-data --out "$$data" || exit $$?; \
	  fi; \
	fi; \
	set --; $(CONFIG_OUT); \
	if [ "$(NUM_GPUS)" -gt 1 ]; then \
	  set -x; $(VENV)/bin/accelerate launch --config_file $(ACCELERATE_CONFIG) --num_processes $(NUM_GPUS) \
	    recipes/train_gsrm.py --config $(CONFIG_FILE) data="$$data" "$$@" $(TRAIN_ARGS); \
	else \
	  set -x; $(PY) recipes/train_gsrm.py --config $(CONFIG_FILE) data="$$data" "$$@" $(TRAIN_ARGS); \
	fi

# RLKD and its baselines (recipes/train_rlkd.py; the config's `mode` picks rlkd, grpo or sft).
# Default: RLKD on the tiny offline model, CPU, under a minute; a config that reads outputs/rlkd-data
# gets $(OUT)/rlkd-data, built first (heuristic decomposer) when missing. DATA=DIR trains on DIR.
# NUM_GPUS > 1 launches with accelerate + DeepSpeed ZeRO-3 (pip install -e ".[gpu]"); the paper's
# configs need their vLLM servers up first (recipes/README.md):
#   make train-rlkd CONFIG=recipes/configs/rlkd_r1distill7b.yaml NUM_GPUS=5
# TRAIN_ARGS takes overrides (key=value or --key value), e.g. TRAIN_ARGS="max_steps=50 output_dir=outputs/r".
train-rlkd: CONFIG_FILE = $(or $(CONFIG),recipes/configs/rlkd_tiny.yaml)
train-rlkd: install
	@data="$(DATA)"; \
	if [ -z "$$data" ] && grep -Eq '^dataset:[[:space:]]*outputs/rlkd-data[[:space:]]*(#.*)?$$' "$(CONFIG_FILE)"; then \
	  data="$(OUT)/rlkd-data"; \
	  if [ ! -f "$$data/dataset/dataset_dict.json" ]; then \
	    $(VENV)/bin/rlkd-bench build-rlkd-data --out "$$data" --no-progress || exit $$?; \
	  fi; \
	fi; \
	set -- --config "$(CONFIG_FILE)"; \
	if [ -n "$$data" ]; then set -- "$$@" dataset="$$data"; fi; \
	$(CONFIG_OUT); \
	if [ "$(NUM_GPUS)" -gt 1 ]; then \
	  set -x; $(VENV)/bin/accelerate launch --config_file $(ACCELERATE_CONFIG) --num_processes $(NUM_GPUS) \
	    recipes/train_rlkd.py "$$@" $(TRAIN_ARGS); \
	else \
	  set -x; $(PY) recipes/train_rlkd.py "$$@" $(TRAIN_ARGS); \
	fi

# RLKD in miniature: the world's teacher -> traces -> GSRM data -> make train-gsrm -> rlkd-data ->
# warm start -> SFT / GRPO / RLKD arms per seed -> lm-eval tasks on held-out problems -> report.
# CPU, offline, about 50 minutes on 2 cores (measured with two studies side by side); writes $(OUT)/mini-study (REPORT.md first). A rerun
# reuses what is built. QUICK=1: one seed, a few steps (a few minutes). Sizes and steps:
#   make mini-study SEEDS="1 2 3 4" STUDY_ARGS="arm_steps=100 train_problems=1200"
mini-study: install
	$(PY) recipes/mini_study.py --config recipes/configs/mini_study.yaml out=$(OUT)/mini-study \
	  $(if $(SEEDS),"seeds=[$(shell echo $(SEEDS) | tr ' ' ',')]") $(if $(QUICK),quick=true) $(STUDY_ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check rlkd_bench recipes tests bench

fmt: install
	$(VENV)/bin/ruff format rlkd_bench recipes tests bench

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
