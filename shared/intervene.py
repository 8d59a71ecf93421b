"""Interventions on the residual stream: the edits that splicing, steering and ablation hand to hooks.edit_residual.

`hooks.edit_residual` is the one hook that replaces a block's output; this module builds the edits:
`keep_positions` leaves BOS/pad untouched (evaluate's splicing and ablation), `steering_hook` adds
a scaled unit direction at one layer and `generate_steered` sweeps its strength alpha over greedy
continuations (RepE reading vectors today, SAE features next).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from .hooks import ResidualEdit, edit_residual
from .models import model_device
from .probes import unit_direction


def keep_positions(edit: ResidualEdit, keep: torch.Tensor) -> ResidualEdit:
    """Wrap an edit so positions where ``keep`` [batch, seq] is False (BOS, pad) stay untouched."""

    def masked(hidden: torch.Tensor) -> torch.Tensor:
        edited = edit(hidden)
        mask = keep.to(hidden.device)[..., None]
        return torch.where(mask, edited, hidden)

    return masked


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
