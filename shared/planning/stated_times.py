"""The catalog's stated times against the model: every "<time> on <GPU>" a GPU notebook's
expected_time states, next to the model's prediction for its default run on that GPU, and notebook
01's time as the anchor notebook 07 prints."""

from __future__ import annotations

import re
from typing import Callable, Mapping

from ..notebook.catalog import NOTEBOOKS
from .gpus import GPU_CLASSES, accelerator_classes
from .models import MODELS
from .throughput import forward_flops_per_token, sae_flops_per_token, setup_minutes, tokens_per_second
from .workloads import notebook_estimate


_TIME = re.compile(r"(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?\s*(min|h)\b(?:\s+on\s+([^,;()]+))?")
TIME_TOLERANCE = 0.25  # a stated time agrees with the model when the prediction is within 25 % of it (or its range)


def stated_times(expected_time: str, accelerator: str) -> list[tuple[float, float, str]]:
    """(low, high minutes, GPU class) of each "<time> on <GPU>" in a catalog expected_time ("about 3 h
    on a T4", "15-24 h on a 96 GB card"); with none, its first time on the accelerator's first class."""
    found = []
    for match in _TIME.finditer(expected_time):
        scale = 60 if match.group(3) == "h" else 1
        low = float(match.group(1)) * scale
        high = float(match.group(2) or match.group(1)) * scale
        found.append((low, high, match.group(4)))
    if not found:
        raise ValueError(f"expected_time {expected_time!r} states no time such as '5 min' or '2.5 h'")
    named = [(lo, hi, _gpu_named(where)) for lo, hi, where in found if where and _gpu_named(where)]
    return named or [(found[0][0], found[0][1], accelerator_classes(accelerator)[0])]


def _gpu_named(text: str) -> str | None:
    """The GPU class a phrase such as "a T4 for 2M tokens" or "Kaggle 2xT4" names, or None."""
    low = text.lower()
    if re.search(r"2\s*x\s*t4", low):
        return "2xT4"
    hits = [(low.find(p), key) for key, g in GPU_CLASSES.items() if key not in ("cpu", "2xT4")
            for p in (*g.patterns, key.lower(), key.lower().replace("-", " ")) if p in low]
    return min(hits)[1] if hits else None


def catalog_times(params_of: Callable[[str], Mapping]) -> list[dict]:
    """Every time a GPU notebook of the catalog states, next to this model's prediction for its default
    parameters on the GPU the statement names. `params_of(notebook_id)` gives those parameters."""
    rows = []
    for nb in NOTEBOOKS:
        if not accelerator_classes(nb["accelerator"]):
            continue
        for low, high, gpu in stated_times(nb["expected_time"], nb["accelerator"]):
            est = notebook_estimate(nb["id"], params_of(nb["id"]), gpu)
            rows.append({"notebook": nb["id"], "gpu": gpu, "stated": nb["expected_time"], "stated_minutes": (low, high),
                         "predicted_minutes": round(est.minutes, 1), "basis": est.basis,
                         "agrees": low * (1 - TIME_TOLERANCE) <= est.minutes <= high * (1 + TIME_TOLERANCE)})
    return rows


def catalog_anchor_check() -> dict:
    """Notebook 01's stated time next to this model's prediction for its defaults on a T4 (what 07 prints)."""
    m = MODELS["google/gemma-2-2b"]
    g = GPU_CLASSES["T4"]
    tps = tokens_per_second(m, g, m.layers, m.d_sae)
    stated = next(n["expected_time"] for n in NOTEBOOKS if n["id"] == m.notebook)
    flops = forward_flops_per_token(m, max(m.layers)) + sae_flops_per_token(m.d_model, m.d_sae)
    return {"notebook": m.notebook, "stated": stated, "tokens": m.total_tokens, "gflop_per_token": flops / 1e9,
            "model_tokens_per_s": tps, "model_minutes": setup_minutes(m.shape) + m.total_tokens / tps / 60,
            "assumed_mfu": g.mfu, "basis": g.basis}
