"""BatchTopK (Bussmann et al. 2024): the batch of B tokens keeps its k*B largest activations
between them, so k is the average number of latents per token and each token takes as many as it
needs. Inference has no batch: a latent fires when its pre-activation clears one global threshold,
a running average of the smallest kept activation (JumpReLU with that threshold for every latent,
which is how SAELens saves a trained BatchTopK, and how export.py writes this one).

Trained on TopK's sparse pass and AuxK (topk.py) with a different selection (`select`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Latents, Reconstruction
from .registry import register
from .topk import TopKConfig, TopKSAE


@dataclass
class BatchTopKConfig(TopKConfig):
    """A TopKConfig whose k is the average latents per token over a batch (a float, as SAELens),
    plus the rate of the threshold's moving average (SAELens' topk_threshold_lr)."""

    architecture: Literal["batchtopk"] = "batchtopk"
    """The registered name."""

    k: float = 64
    """Average latents per token over a batch: the batch keeps its k * B largest activations."""

    topk_threshold_lr: float = 0.01
    """Rate of the moving average that sets the inference threshold (the smallest kept activation), in (0, 1]."""

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.topk_threshold_lr <= 1:
            raise ValueError(f"topk_threshold_lr={self.topk_threshold_lr} must be in (0, 1].")


@register("batchtopk", BatchTopKConfig)
class BatchTopKSAE(TopKSAE):
    """Training: top k*B activations over the batch (then AuxK as TopK). Inference: JumpReLU with
    the global `threshold` buffer ([d_sae], every entry the same; SAELens' saved name and shape)."""

    cfg: BatchTopKConfig

    def __init__(self, cfg: BatchTopKConfig, device=None):
        super().__init__(cfg, device=device)
        # float64 as SAELens' topk_threshold (a float32 moving average drifts)
        self.register_buffer("threshold", torch.zeros(cfg.d_sae, dtype=torch.float64, device=device))

    def activation(self, pre: Tensor) -> Latents:
        """Inference: relu(pre) where pre > threshold (SAELens' JumpReLU)."""
        return Latents(F.relu(pre) * (pre > self.threshold).to(pre.dtype))

    def select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """The k*N largest relu(pre) of the batch (SAELens' BatchTopK), as each token's largest
        few: indices [N, m] of each token's m largest (m: the most any token keeps), sorted, and
        keep[n, j] = j < the number token n keeps."""
        n = pre.shape[0]
        n_keep = min(int(self.cfg.k * n), pre.numel())
        flat = pre.reshape(-1).topk(n_keep, sorted=False).indices
        counts = torch.bincount(torch.div(flat, pre.shape[1], rounding_mode="floor"), minlength=n)
        m = max(int(counts.max()), 1)
        idx = pre.topk(m, dim=1, sorted=True).indices
        keep = torch.arange(m, device=pre.device) < counts[:, None]
        return idx, keep

    def reconstruct(self, xn: Tensor, dead_mask: Tensor | None = None) -> Reconstruction:
        """TopK's training pass with the batch selection; in training mode it also moves the threshold."""
        rec = super().reconstruct(xn, dead_mask)
        if self.training:
            self.update_threshold(rec.latents.vals)
        return rec

    @torch.no_grad()
    def update_threshold(self, vals: Tensor) -> None:
        """threshold <- (1 - lr) threshold + lr * (smallest positive kept activation), in float64
        (SAELens' update_topk_threshold); unchanged when nothing fired. Under a reducer (the trainer's,
        under torchrun) the smallest is taken over every rank's batch (`reducer.min`, a MIN all-reduce), so
        all ranks keep one and the same threshold."""
        smallest = torch.where(vals > 0, vals, math.inf).min().double().reshape(1)  # inf: nothing fired
        if self.reducer is not None:
            smallest = self.reducer.min(smallest)
        lr = self.cfg.topk_threshold_lr
        moved = self.threshold * (1 - lr) + lr * smallest
        self.threshold.copy_(torch.where(torch.isfinite(smallest), moved, self.threshold))  # no host sync
