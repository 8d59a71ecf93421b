"""Matryoshka BatchTopK (Bussmann et al. 2025; Nabeshima 2024): BatchTopK whose nested prefixes of
the dictionary (latents [0, w) for each width w) must each reconstruct the input on their own, so
the first latents learn the general features and later ones refine them instead of absorbing them.

The loss adds, for each inner width, the fvu of the reconstruction from that prefix alone (a plain
sum, as SAELens' matryoshka_batchtopk adds its inner MSE losses; the full width is the base fvu).
Inference and export are BatchTopK's: JumpReLU with the global threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from .base import Reconstruction, ReconstructionError
from .batchtopk import BatchTopKConfig, BatchTopKSAE
from .kernels import sparse_decode
from .registry import register


@dataclass
class MatryoshkaConfig(BatchTopKConfig):
    """A BatchTopKConfig plus the prefix widths (SAELens' matryoshka_widths): strictly increasing,
    the last d_sae (appended when missing, as SAELens does); None -> d_sae/8, /4, /2, 1."""

    architecture: Literal["matryoshka_batchtopk"] = "matryoshka_batchtopk"
    """The registered name."""

    matryoshka_widths: list[int] | None = None
    """The nested prefixes' widths, strictly increasing up to d_sae; None -> d_sae/8, /4, /2, 1."""

    def __post_init__(self):
        super().__post_init__()
        widths = self.matryoshka_widths
        if widths is None:
            widths = sorted({max(1, self.d_sae // f) for f in (8, 4, 2, 1)})
        widths = [int(w) for w in widths]
        if widths and widths[-1] != self.d_sae:
            widths.append(self.d_sae)
        if not widths or any(w <= 0 for w in widths) or any(a >= b for a, b in zip(widths, widths[1:])):
            raise ValueError(f"matryoshka_widths={self.matryoshka_widths}: give strictly increasing positive "
                             f"widths up to d_sae={self.d_sae}, e.g. [{self.d_sae // 4}, {self.d_sae}].")
        self.matryoshka_widths = widths


@register("matryoshka_batchtopk", MatryoshkaConfig)
class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    """BatchTopK plus one reconstruction term per inner prefix, "prefix_fvu_<width>"."""

    cfg: MatryoshkaConfig

    def prefix_reconstruction(self, rec: Reconstruction, width: int) -> Tensor:
        """x_hat [N, d_in] from the latents below `width` alone (differentiable)."""
        vals, idx = rec.latents
        return sparse_decode(vals * (idx < width).to(vals.dtype), idx, self.W_dec) + self.b_dec

    def extra_losses(self, xn: Tensor, rec: Reconstruction, err: ReconstructionError) -> dict[str, Tensor]:
        losses = super().extra_losses(xn, rec, err)
        for width in self.cfg.matryoshka_widths[:-1]:
            losses[f"prefix_fvu_{width}"] = self._reconstruction_error(self.prefix_reconstruction(rec, width), xn).fvu
        return losses
