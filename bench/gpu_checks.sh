#!/usr/bin/env bash
# Every GPU check and benchmark the open issues ask for, in one short run that writes under $OUT
# (the device tool's output folder; ./gpu-out otherwise). Prepared for a lent H100/H200: no network
# there, so missing Python packages are installed from ./.whl (make it here with bench/wheelhouse.sh
# and pass it with the run's `carry`). Each step has its own time limit; one failing step does not
# stop the others. Results: step.json (SAE step vs peers, gradients checked), loop-*.json (whole
# trainer: tokens/s and peak GiB next to shared/tiers.py's prediction), and a log per step.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
for pkg in transformers safetensors tokenizers huggingface_hub sparsify; do
  $PY -c "import $pkg" 2>/dev/null || $PY -m pip install -q --no-index --find-links .whl \
    "$( [ "$pkg" = sparsify ] && echo eai-sparsify || echo "$pkg")" >> "$OUT/install.log" 2>&1
done
step() {  # step NAME SECONDS CMD...: run one check with its own limit, log and exit code
  local name=$1 limit=$2; shift 2
  echo "== $name" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "   rc=$?" | tee -a "$OUT/summary.txt"
}
step step 120 $PY bench/train_step.py --device cuda --check-grads --warmup 3 --steps 10 --rounds 3 \
  --impls matmul-floor,matmul-floor-bf16,ours,ours-bf16,ours-dense-ref,sparsify,sae-lens --json "$OUT/step.json"
step loop-tier1 90 $PY bench/train_loop.py --device cuda --model gemma-2-2b --tokens 3000000 \
  --json "$OUT/loop-tier1.json"
step loop-tier2 120 $PY bench/train_loop.py --device cuda --model qwen3.5-4b --d-sae 40960 --k 128 \
  --tokens 2000000 --json "$OUT/loop-tier2.json"
# 27B + three 65k SAEs: ~55 GB of bf16 weights + ~32 GB of fp32 SAEs, grads and Adam: an H200, not an H100.
step loop-tier3 200 $PY bench/train_loop.py --device cuda --model qwen3.6-27b --layers 11,31,55 \
  --d-sae 65536 --k 128 --model-batch 2 --tokens 1000000 --json "$OUT/loop-tier3.json"
cat "$OUT/summary.txt"
