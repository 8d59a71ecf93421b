#!/usr/bin/env bash
# Wheels that bench/gpu_checks.sh installs on a lent GPU machine without network (into ./.whl,
# git-ignored, carried with the run under its 64 MiB limit): EleutherAI sparsify and the packages it
# imports that the machine's image lacks. Pure-Python wheels for its Python 3.12; no torch and no
# transformers (the image has its own CUDA torch and a transformers with qwen3_5). sae-lens is left
# out: its dependency tree is far over the limit.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
  -d .whl eai-sparsify==1.3.3 natsort schedulefree simple-parsing docstring-parser datasets dill multiprocess
du -sh .whl
