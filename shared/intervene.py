"""Edit the residual stream in flight: one hook helper shared by splicing, steering and ablation.

Every notebook that changes what a decoder block writes into the residual stream (an SAE's
reconstruction spliced in, a steering vector added, a layer zero-ablated) goes through
`edit_residual`, so the tuple-or-tensor output conventions of each architecture live in one place.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from .hooks import resolve_layers
from .models import decoder_layers

ResidualEdit = Callable[[torch.Tensor], torch.Tensor]


def _replace_hidden(output, new_hidden: torch.Tensor):
    """Return the block output with its hidden state swapped, keeping the architecture's container."""
    if isinstance(output, torch.Tensor):
        return new_hidden
    if isinstance(output, tuple):
        return (new_hidden,) + tuple(output[1:])
    if isinstance(output, list):
        return [new_hidden] + list(output[1:])
    raise TypeError(f"unexpected decoder block output type {type(output).__name__}")


def block_hidden(output) -> torch.Tensor:
    """The residual-stream tensor inside a decoder block's output (tensor, tuple or list)."""
    return output if isinstance(output, torch.Tensor) else output[0]


@contextmanager
def edit_residual(model, edits: dict[int, ResidualEdit]) -> Iterator[None]:
    """Within the block, replace the output h of decoder block L by ``edits[L](h)`` for each L.

    The edit sees the block's residual output [batch, seq, d_model] and must return a tensor of
    the same shape; dtype and device are restored to the model's.
    """
    layers = decoder_layers(model)
    handles = []
    for layer, edit in edits.items():
        layer = resolve_layers(int(layer), len(layers))[0]  # negatives count from the end

        def hook(_module, _inputs, output, _edit=edit):
            hidden = block_hidden(output)
            new_hidden = _edit(hidden)
            if new_hidden.shape != hidden.shape:
                raise ValueError(
                    f"a residual edit returned shape {tuple(new_hidden.shape)} for a hidden state of "
                    f"shape {tuple(hidden.shape)}; it must keep the shape"
                )
            return _replace_hidden(output, new_hidden.to(dtype=hidden.dtype, device=hidden.device))

        handles.append(layers[layer].register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def keep_positions(edit: ResidualEdit, keep: torch.Tensor) -> ResidualEdit:
    """Wrap an edit so positions where ``keep`` [batch, seq] is False (BOS, pad) stay untouched."""

    def masked(hidden: torch.Tensor) -> torch.Tensor:
        edited = edit(hidden)
        mask = keep.to(hidden.device)[..., None]
        return torch.where(mask, edited, hidden)

    return masked
