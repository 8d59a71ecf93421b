"""JumpReLU (Rajamanoharan et al. 2024, "Jumping Ahead"; Gemma Scope): a latent fires only when its
pre-activation clears its own learned threshold, then keeps its full value: relu(pre) * (pre > threshold).

Trained as SAELens 6's JumpReLU training SAE ("step" sparsity mode): the threshold gets its gradient
from a straight-through estimator with a rectangle kernel of bandwidth eps, and the loss adds
l0_coefficient * L0, L0 the same step function summed over latents. As SAELens 6.54 (its issue
#494) the threshold is the parameter itself, kept >= 0 after each step, not exp(log_threshold):
Adam moves a parameter by ~lr a step, which barely moves a log-threshold from a small start.
Also loads Gemma Scope and SAELens jumprelu / BatchTopK / Matryoshka SAEs (see load.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .base import Latents, Reconstruction, ReconstructionError, SAEConfig, SparseAutoencoder
from .registry import register


def rectangle(u: Tensor) -> Tensor:
    """The kernel K(u) = 1 on (-1/2, 1/2), 0 elsewhere."""
    return ((u > -0.5) & (u < 0.5)).to(u)


class Step(torch.autograd.Function):
    """H(pre - threshold); d/d threshold = -(1/eps) K((pre - threshold)/eps), none to pre (DeepMind)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        ste = rectangle((pre - threshold) / eps) / eps * grad
        return None, -ste.reshape(-1, threshold.shape[-1]).sum(0), None


class JumpReLU(torch.autograd.Function):
    """relu(pre) * H(pre - threshold); d/d pre = H(pre - threshold) (where pre > 0),
    d/d threshold = -(threshold/eps) K((pre - threshold)/eps) (the paper's eq. 11)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre.clamp_min(0) * (pre > threshold).to(pre)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        ste = (threshold / eps) * rectangle((pre - threshold) / eps) * grad
        pass_through = ((pre > threshold) & (pre > 0)).to(grad) * grad
        return pass_through, -ste.reshape(-1, threshold.shape[-1]).sum(0), None


@dataclass
class JumpReLUConfig(SAEConfig):
    """An SAEConfig plus the JumpReLU training knobs (SAELens' defaults for bandwidth and threshold).

    l0_coefficient multiplies the mean L0 against our fvu (SAELens weighs it against the mse,
    ||x - x_hat||^2, so its 1.0 is ours times the batch's mean centred squared norm).
    """

    architecture: Literal["jumprelu"] = "jumprelu"
    """The registered name."""

    l0_coefficient: float = 1e-3
    """Weight of the mean L0 against the FVU (see above for SAELens' scale)."""

    bandwidth: float = 0.05
    """eps, the width of the rectangle kernel that gives the thresholds their straight-through gradient."""

    init_threshold: float = 0.01
    """Every latent's threshold at initialisation."""

    def __post_init__(self):
        super().__post_init__()
        if self.l0_coefficient < 0 or self.bandwidth <= 0 or self.init_threshold < 0:
            raise ValueError(f"JumpReLUConfig needs l0_coefficient >= 0, bandwidth > 0 and init_threshold >= 0, "
                             f"got {self.l0_coefficient}, {self.bandwidth}, {self.init_threshold}.")


@register("jumprelu", JumpReLUConfig)
class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU activation with a per-latent `threshold` [d_sae] (SAELens 6 names it the same)."""

    cfg: JumpReLUConfig

    def __init__(self, cfg: JumpReLUConfig, device=None):
        super().__init__(cfg, device=device)
        self.threshold = nn.Parameter(torch.full((cfg.d_sae,), float(cfg.init_threshold), device=device,
                                                 dtype=self.dtype))

    def activation(self, pre: Tensor) -> Latents:
        return Latents(JumpReLU.apply(pre, self.threshold.to(pre.dtype), self.cfg.bandwidth))

    def reconstruct(self, xn: Tensor, dead_mask: Tensor | None = None) -> Reconstruction:
        pre = self.encode_pre(xn)
        lat = self.activation(pre)
        return Reconstruction(self._decode_latents(lat) + self.b_dec, lat, {"pre": pre})

    def extra_losses(self, xn: Tensor, rec: Reconstruction, err: ReconstructionError) -> dict[str, Tensor]:
        """{"l0": l0_coefficient * mean over the batch's tokens of sum_j H(pre_j - threshold_j)} (Step's STE;
        under torchrun each rank's share of it, batch_mean)."""
        pre = rec.extras["pre"]
        l0 = self.batch_mean(Step.apply(pre, self.threshold.to(pre.dtype), self.cfg.bandwidth).sum(1))
        return {"l0": self.cfg.l0_coefficient * l0}

    @torch.no_grad()
    def constrain_weights(self) -> None:
        """Unit-norm decoder rows (the paper) and thresholds >= 0 (below 0 the gate passes negatives)."""
        super().constrain_weights()
        self.threshold.clamp_(min=0.0)
