"""Steering: add a scaled unit direction to the residual stream at one layer, and sweep its strength.

`steering_hook` is an edit through hooks.edit_residual; `generate_steered` runs greedy continuations
for each alpha (RepE reading vectors today; SAE feature directions use the same hook). Directions
are checked like every probe direction (probes.unit_direction).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from .hooks import edit_residual
from .models import model_device
from .probes import unit_direction


@contextmanager
def steering_hook(model, layer: int, direction, alpha: float, scale: float = 1.0) -> Iterator[None]:
    """Within the block, add alpha * scale * unit(direction) to the residual output of decoder block `layer`.

    scale: pass typical_norm(acts) to express alpha in units of the layer's usual residual norm.
    """
    u = torch.as_tensor(unit_direction(direction), dtype=torch.float32)
    delta = float(alpha) * float(scale) * u

    def add_direction(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[-1] != delta.shape[0]:
            raise ValueError(f"steering direction has {delta.shape[0]} dims but layer {layer} has {hidden.shape[-1]}")
        return hidden + delta.to(device=hidden.device, dtype=hidden.dtype)

    with edit_residual(model, {int(layer): add_direction}):
        yield


@torch.no_grad()
def generate_steered(model, tokenizer, prompt: str, layer: int, direction, alphas: Sequence[float],
                     max_new_tokens: int = 30, seed: int = 0, scale: float = 1.0) -> dict[float, str]:
    """Greedy continuation of prompt for each alpha, steering along direction at layer: {alpha: text}."""
    if not isinstance(prompt, str):
        raise ValueError("prompt must be a single string")
    enc = tokenizer(prompt, return_tensors="pt").to(model_device(model))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts = {}
    for alpha in alphas:
        torch.manual_seed(seed)
        with steering_hook(model, layer, direction, alpha, scale=scale):
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
        texts[float(alpha)] = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts
