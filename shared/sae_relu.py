"""Standard ReLU SAE (Bricken et al. 2023; SAELens "standard"): latents = relu(pre-activations).

Inference only: loaded SAELens "standard" SAEs (e.g. gpt2-small-res-jb). Training one needs an L1
sparsity penalty (with its coefficient warm-up), which is not written yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .sae import Latents, SAEConfig, SparseAutoencoder, register


@dataclass
class ReLUConfig(SAEConfig):
    """An SAEConfig for the standard ReLU SAE."""

    architecture: str = "relu"


@register("relu", ReLUConfig)
class ReLUSAE(SparseAutoencoder):
    """Dense ReLU activation over all d_sae latents."""

    cfg: ReLUConfig
    trainable = False  # without the L1 penalty, plain fvu training would learn no sparsity

    def activation(self, pre: Tensor) -> Latents:
        return Latents(F.relu(pre))
