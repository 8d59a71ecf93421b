#!/usr/bin/env bash
# Wheels that bench/gpu_checks.sh installs on a lent GPU machine without network (into ./.whl,
# git-ignored, carried with the run under its 64 MiB limit): EleutherAI sparsify and SAELens (for
# bench/whole_pipeline.py) and the packages they import that the machine's image lacks (its package
# list: the device library's KINDS.md). Pure-Python wheels for its Python 3.12. Not here: torch,
# transformers, accelerate, einops, jaxtyping, pandas (the image has them: its own CUDA torch and a
# transformers with qwen3_5); wandb, which SAELens imports at load but calls only when logging to W&B
# (off in the bench) and whose dependency tree (pydantic, opentelemetry, ...) the image lacks:
# bench/stubs/wandb stands in; transformers-stream-generator, which TransformerLens lists but never
# imports on this path, and which has no wheel (the install is --no-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$@"; }
dl eai-sparsify==1.3.3 natsort schedulefree simple-parsing docstring-parser datasets dill multiprocess
dl sae-lens==6.54.12 transformer-lens==3.9.0 plotly plotly-express "babe==0.0.7" nltk python-dotenv tenacity \
  beartype better-abc fancy-einsum typeguard
du -sh .whl
