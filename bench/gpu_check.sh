#!/usr/bin/env bash
# GPU check for the GSRM and RLKD recipes (issues 4 and 7), one prepared run on a machine with a CUDA GPU:
#   1. the tiny GSRM SFT recipe on the GPU in bf16 (recipes/train_gsrm.py, TRL SFTTrainer),
#   2. the checkpoint loaded on the GPU with transformers and the decomposer run through it,
#   3. the decomposer through vLLM in-process (engine "vllm") where vllm is installed, and whether
#      its greedy replies match the transformers engine's.
#   4. (issue 7) the tiny RLKD GRPO recipe on the GPU in bf16 with the four rewards.
# Needs: torch (CUDA), transformers, trl, datasets in $PY (default: .venv/bin/python, else python3);
# nothing is downloaded. Writes under $OUT (default outputs/gpu-check) and prints what it did.
#   bash bench/gpu_check.sh
# A CPU rehearsal of the script's plumbing (no GPU claims):
#   ALLOW_CPU=1 EPOCHS=0.1 PRECISION="use_cpu=true bf16=false dtype=float32" bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT="${OUT:-outputs/gpu-check}"
EPOCHS="${EPOCHS:-3}"
PRECISION="${PRECISION:-use_cpu=false bf16=true dtype=bfloat16}"
export ALLOW_CPU="${ALLOW_CPU:-0}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RLKD_CACHE_DIR="$OUT/cache"

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
"$PY" - <<'PY' || { echo "missing packages: cannot run the GPU check (see above)"; exit 3; }
import importlib
ok = True
for name in ("torch", "transformers", "trl", "datasets", "click", "rich", "math_verify"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')}")
    except Exception as e:  # report every missing piece at once
        ok = False
        print(f"{name}: NOT importable ({type(e).__name__}: {e})")
import torch
print("cuda available:", torch.cuda.is_available(), "| bf16:", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
import os
raise SystemExit(0 if ok and (torch.cuda.is_available() or os.environ["ALLOW_CPU"] == "1") else 1)
PY

echo "== 1. GSRM data (bundled traces, offline annotator)"
t0=$(date +%s)
"$PY" -m rlkd_bench.cli build-gsrm-data --out "$OUT/gsrm-data" --overwrite --no-progress || exit 4
echo "built in $(( $(date +%s) - t0 )) s"

echo "== 2. tiny GSRM SFT on the GPU, bf16"
# hidden 256 / 4 heads = head dim 64: vLLM's attention kernels do not take the default tiny's 16
t0=$(date +%s)
"$PY" recipes/train_gsrm.py --config recipes/configs/gsrm_tiny.yaml data="$OUT/gsrm-data" \
  output_dir="$OUT/gsrm-tiny-gpu" $PRECISION num_train_epochs=$EPOCHS tiny.hidden_size=256 \
  logging_steps=5 2>&1 | grep -v "it/s\]\|examples/s\]" | tail -25
status=${PIPESTATUS[0]}
echo "recipe exit $status in $(( $(date +%s) - t0 )) s"
[ "$status" -eq 0 ] || exit 5

echo "== 3. checkpoint on the GPU (transformers) and the gsrm decomposer through it"
"$PY" - "$OUT/gsrm-tiny-gpu" <<'PY' || exit 6
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
ckpt = sys.argv[1]
m = json.load(open(f"{ckpt}/manifest.json"))
print("train metrics:", {k: m["params"]["metrics"].get(k) for k in ("train_loss", "eval_loss", "global_step")})
log = json.load(open(f"{ckpt}/train_log.json"))
losses = [h["loss"] for h in log if "loss" in h]
print("logged losses:", [round(x, 3) for x in losses])
device = "cuda" if torch.cuda.is_available() else "cpu"
model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16).to(device)
print("weights dtype on GPU:", next(model.parameters()).dtype, next(model.parameters()).device)
from rlkd_bench.decompose.gsrm import GSRMDecomposer
from rlkd_bench.llm.base import EngineOptions
from rlkd_bench.sources import load_traces
rows = load_traces(None, limit=8).rows
t = time.time()
res = GSRMDecomposer(ckpt, options=EngineOptions(use_cache=False, progress=False), max_new_tokens=64).decompose(rows)
print(f"transformers engine: {len(res)} traces in {time.time() - t:.1f} s; ok {sum(r.ok for r in res)}, "
      f"failed {sum(not r.ok for r in res)} (a tiny model's replies are expected to fail validation)")
print("first reply:", repr(res[0].raw[:120]), "| error:", (res[0].error or "")[:120])
json.dump([r.raw for r in res], open(f"{ckpt}/../transformers_replies.json", "w"))
PY

echo "== 4. the gsrm decomposer through vLLM"
if "$PY" -c "import vllm" 2>/dev/null; then
  "$PY" - "$OUT/gsrm-tiny-gpu" <<'PY' || exit 7
import json, sys, time
from rlkd_bench.decompose.gsrm import GSRMDecomposer
from rlkd_bench.llm.base import EngineOptions
from rlkd_bench.sources import load_traces
ckpt = sys.argv[1]
import vllm
print("vllm", vllm.__version__)
rows = load_traces(None, limit=8).rows
t = time.time()
dec = GSRMDecomposer(ckpt, engine="vllm", options=EngineOptions(use_cache=False, progress=False), max_new_tokens=64)
res = dec.decompose(rows)
print(f"vllm engine: {len(res)} traces in {time.time() - t:.1f} s (load included); ok {sum(r.ok for r in res)}, "
      f"failed {sum(not r.ok for r in res)}")
print("every failure keeps its reply and a reason:", all(r.ok or (r.error and r.raw is not None) for r in res))
ref = json.load(open(f"{ckpt}/../transformers_replies.json"))
same = sum(a == b.raw for a, b in zip(ref, res))
print(f"greedy replies equal to the transformers engine's: {same}/{len(res)} (bf16 kernels may differ)")
PY
else
  echo "vllm is not installed in $PY: skipped (pip install 'rlkd-bench[vllm]' on a GPU machine)"
fi
echo "== 5. RLKD on the GPU, bf16: tiny GRPO with the four rewards (recipes/train_rlkd.py)"
t0=$(date +%s)
"$PY" -m rlkd_bench.cli build-rlkd-data --out "$OUT/rlkd-data" --no-progress || exit 8
RL_PRECISION="${RL_PRECISION:-use_cpu=false bf16=true}"
"$PY" recipes/train_rlkd.py --config recipes/configs/rlkd_tiny.yaml dataset="$OUT/rlkd-data" \
  output_dir="$OUT/rlkd-tiny-gpu" $RL_PRECISION max_steps=5 2>&1 | grep -v "it/s\]" | tail -15
status=${PIPESTATUS[0]}
echo "recipe exit $status in $(( $(date +%s) - t0 )) s"
[ "$status" -eq 0 ] || exit 9
"$PY" - "$OUT/rlkd-tiny-gpu" <<'PY' || exit 10
import json, sys
h = json.load(open(f"{sys.argv[1]}/trainer_state.json"))["log_history"]
keys = sorted({k for e in h for k in e if k.startswith("rewards/") and k.endswith("/mean")})
print("reward components logged:", keys)
print("last step:", {k: h[-2].get(k) for k in keys} if len(h) > 1 else h)
PY

echo "== done: outputs in $OUT"
