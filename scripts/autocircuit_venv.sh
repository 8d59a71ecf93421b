#!/usr/bin/env bash
# Build .venv-autocircuit: AutoCircuit (auto-circuit 1.0.1) as an independent verifier of
# shared/circuits/acdc.py (tests/test_circuits_acdc.py's cross-check). It needs TransformerLens < 3
# (HookedTransformer), which clashes with our core pins, so it lives in its own venv.
# CPU torch 2.13.0 is installed first and pinned through a constraints file, so no dependency can
# replace it with a CUDA build. auto-circuit is installed without its dependencies: of those, only
# plotly, ordered-set, einops, blobfile and attrs are imported by the modules we use (tracr, word2word,
# kaleido and the vscode-tqdm fork serve its tracr models, plots and notebooks). pyarrow < 20: the newest
# needs NumPy 2, which TransformerLens 2 excludes.
# Usage: scripts/autocircuit_venv.sh [VENV_DIR]  (default .venv-autocircuit; PYTHON=python3.11 to pick)
set -euo pipefail
VENV="${1:-.venv-autocircuit}"
PYTHON="${PYTHON:-python3}"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  $PIP install --quiet "torch==2.13.0"
fi
CONSTRAINTS="$VENV/torch-constraint.txt"
"$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$CONSTRAINTS"
$PIP install --quiet -c "$CONSTRAINTS" "transformer-lens>=2.0,<3" "plotly>=5.18" "ordered-set>=4.1" \
  "einops>=0.6.1" "blobfile>=2.0.2" attrs "pyarrow<20"
$PIP install --quiet --no-deps "auto-circuit==1.0.1"
"$VENV/bin/python" -c "import auto_circuit.prune_algos.ACDC, auto_circuit.utils.graph_utils, transformer_lens; from importlib.metadata import version; print('autocircuit venv ok: transformer-lens', version('transformer-lens'))"
