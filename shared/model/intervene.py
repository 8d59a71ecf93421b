"""Interventions on the residual stream: edits that splicing and ablation hand to hooks.edit_residual.

`hooks.edit_residual` is the one hook that replaces a block's output; `keep_positions` makes an
edit leave BOS/pad positions untouched (evaluate's SAE splicing and zero-ablation). Steering along
a direction is `steer`.
"""
from __future__ import annotations

import torch

from .hooks import ResidualEdit


def keep_positions(edit: ResidualEdit, keep: torch.Tensor) -> ResidualEdit:
    """Wrap an edit so positions where ``keep`` [batch, seq] is False (BOS, pad) stay untouched."""

    def masked(hidden: torch.Tensor) -> torch.Tensor:
        edited = edit(hidden)
        mask = keep.to(hidden.device)[..., None]
        return torch.where(mask, edited, hidden)

    return masked
