#!/usr/bin/env bash
# Wheels that bench/gpu_checks.sh installs on a GPU machine without network (into ./.whl, git-ignored,
# under the device tool's 64 MiB carry limit): the model stack and sparsify, no torch (the GPU
# machine has its own CUDA build). sae-lens is left out: its dependency tree is far over the limit.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 -d .whl \
  transformers tokenizers safetensors huggingface_hub hf-xet eai-sparsify natsort schedulefree
du -sh .whl
