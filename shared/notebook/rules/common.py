"""The rules nearly every notebook uses: the model and its layers, where it runs (devices, dtype), how much it
feeds a forward or generates, what it writes and uploads, the seed. Named first in every notebook's
check_parameters: MODEL_ID is checked before the layer rules that read its config."""
from __future__ import annotations

from ... import runtime
from ...model import loading
from ..parameters import (NON_NEGATIVE, POSITIVE, Rule, choice, device, flag, folder, layers, number_list,
                          repo_id, text)


def _model_id(v, ctx):
    text()(v, ctx)
    loading.load_config(v)  # one-line ModelUnavailable: not on the Hub, gated, offline and not cached
    return v.strip()


def _several_layers(v, ctx):
    """LAYERS: one or more layers; at least 2 where the notebook spans layers (a crosscoder, 17, has a
    SPARSITY; a sparse feature circuit, 15, has SAE_IDS)."""
    found = layers()(v, ctx)
    if len(found) < 2 and ("SPARSITY" in ctx.params or "SAE_IDS" in ctx.params):
        what = "a crosscoder reads and writes" if "SPARSITY" in ctx.params else "a sparse feature circuit spans"
        raise ValueError(f"{what} at least 2 layers: give 2 or more block indices, e.g. [6, 12, 18]")
    return found


def _dtype(v, ctx):
    choice(*runtime.DTYPES)(v, ctx)
    return None if v == "auto" else runtime.resolve_dtype(v)  # "auto": load_model decides per device


def _hf_repo(v, ctx):
    text(empty_ok=True)(v, ctx)
    return repo_id(v) if v.strip() else ""


RULES: dict[str, Rule] = {
    # the model and its layers (MODEL_ID first: the layer rules read its config)
    "MODEL_ID": _model_id,
    "LAYER": layers(),
    "LAYERS": _several_layers,
    "SWEEP_LAYERS": layers(allow_empty=True),
    # where it runs
    "MODEL_DEVICE": device("first"), "SAE_DEVICE": device("last"), "DEVICE": device("first", empty_ok=True),
    "MODEL_DTYPE": _dtype,
    # how much a forward reads, what a generation writes
    "BATCH_SIZE": POSITIVE, "MODEL_BATCH_SIZE": POSITIVE, "PROMPT": text(), "N_PROMPTS": POSITIVE,
    "MAX_NEW_TOKENS": POSITIVE, "ALPHAS": number_list, "TOP_K": POSITIVE,
    # where things go
    "OUTPUT_DIR": folder, "SEED": NON_NEGATIVE, "HF_REPO": _hf_repo, "HF_PRIVATE": flag,
}
