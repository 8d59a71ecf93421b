"""JumpReLU (Rajamanoharan et al. 2024; Gemma Scope): a latent fires only when its pre-activation
clears its own learned threshold, then keeps its full value: relu(pre) * (pre > threshold).

Inference only: loaded SAEs (Gemma Scope, SAELens jumprelu, and SAELens BatchTopK / Matryoshka,
which SAELens saves for inference as JumpReLU with one global threshold). Training needs the
straight-through threshold gradient and the L0 penalty, which are not written yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sae import Latents, SAEConfig, SparseAutoencoder, register


@dataclass
class JumpReLUConfig(SAEConfig):
    """An SAEConfig for JumpReLU; the thresholds are weights (state_dict "threshold"), not config."""

    architecture: str = "jumprelu"


@register("jumprelu", JumpReLUConfig)
class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU activation with a per-latent `threshold` [d_sae] (SAELens 6 names it the same)."""

    cfg: JumpReLUConfig
    trainable = False  # no threshold estimator yet: our trainer refuses it

    def __init__(self, cfg: JumpReLUConfig, device=None):
        super().__init__(cfg, device=device)
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, device=device, dtype=self.dtype))

    def activation(self, pre: Tensor) -> Latents:
        return Latents(F.relu(pre) * (pre > self.threshold).to(pre.dtype))
