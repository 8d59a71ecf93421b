"""Standard ReLU SAE (Bricken et al. 2023; SAELens "standard"): latents = relu(pre-activations),
sparsity from an L1 penalty weighted by each latent's decoder norm.

As SAELens 6's standard training SAE: loss adds l1_coefficient * mean over tokens of
sum_j |z_j| * ||W_dec[j]||, and the decoder rows are not renormalised (the weighting already stops
the penalty being dodged by shrinking z and growing W_dec). Also loads SAELens "standard" SAEs
(e.g. gpt2-small-res-jb, see load.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from .base import Latents, Reconstruction, ReconstructionError, SAEConfig, SparseAutoencoder
from .registry import register


@dataclass
class ReLUConfig(SAEConfig):
    """An SAEConfig plus the L1 coefficient.

    l1_coefficient multiplies the penalty against our fvu (SAELens weighs it against the mse,
    ||x - x_hat||^2, so its coefficient is ours times the batch's mean centred squared norm).
    """

    architecture: Literal["relu"] = "relu"
    """The registered name."""

    l1_coefficient: float = 1e-3
    """Weight of the decoder-norm-weighted L1 penalty against the FVU (see above for SAELens' scale)."""

    def __post_init__(self):
        super().__post_init__()
        if self.l1_coefficient < 0:
            raise ValueError(f"l1_coefficient={self.l1_coefficient} must be >= 0.")


@register("relu", ReLUConfig)
class ReLUSAE(SparseAutoencoder):
    """Dense ReLU activation over all d_sae latents; decoder-norm-weighted L1."""

    cfg: ReLUConfig
    normalize_decoder = False  # SAELens' standard SAE: the L1 is weighted by the row norms instead

    def activation(self, pre: Tensor) -> Latents:
        return Latents(F.relu(pre))

    def extra_losses(self, xn: Tensor, rec: Reconstruction, err: ReconstructionError) -> dict[str, Tensor]:
        """{"l1": l1_coefficient * mean over the batch's tokens of sum_j |z_j| ||W_dec[j]||} (under torchrun each
        rank's share of it, batch_mean)."""
        weighted = rec.latents.vals * self.W_dec.norm(dim=1)
        return {"l1": self.cfg.l1_coefficient * self.batch_mean(weighted.abs().sum(1))}
