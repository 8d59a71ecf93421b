"""TopK + AuxK (Gao et al. 2024): each token keeps its k largest pre-activations (then ReLU), and
the dead latents learn to predict the residual error (AuxK) so they come back to life.

Trained with the sparse kernels of kernels.py: one dense encoder matmul picks the latents,
then encode gradients, decode and AuxK touch only the k (and k_aux) chosen latents per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Latents, Reconstruction, ReconstructionError, SAEConfig, SparseAutoencoder
from .kernels import (LatentPlan, SparseEncodeSelect, loss_precision, masked_dead_topk, sparse_decode,
                      squared_error, topk_indices)
from .registry import register


@dataclass
class TopKConfig(SAEConfig):
    """An SAEConfig plus the TopK and AuxK knobs."""

    architecture: Literal["topk"] = "topk"
    """The registered name."""

    k: int = 64
    """Latents each token keeps (its k largest pre-activations)."""

    k_aux: int | None = None
    """Dead latents AuxK reconstructs the residual error with; None -> d_in // 2 (Gao et al. 2024, App. B.1)."""

    aux_coef: float = 1 / 32
    """Weight of the AuxK loss against the FVU; 0 turns AuxK off."""

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"k={self.k} must be in 1..d_sae={self.d_sae}: lower k or raise d_sae.")
        if self.k_aux is not None and self.k_aux <= 0:
            raise ValueError(f"k_aux={self.k_aux} must be positive (or None for d_in // 2).")

    @property
    def k_aux_eff(self) -> int:
        return self.k_aux if self.k_aux is not None else max(1, self.d_in // 2)


@register("topk", TopKConfig)
class TopKSAE(SparseAutoencoder):
    """TopK activation: keep each token's k largest pre-activations, then ReLU; AuxK on dead latents."""

    cfg: TopKConfig

    def activation(self, pre: Tensor) -> Latents:
        idx = topk_indices(pre.detach(), self.cfg.k)
        return Latents(F.relu(pre.gather(1, idx)), idx)

    def select(self, pre: Tensor) -> tuple[Tensor, Tensor | None]:
        """The training pass's latents from the pre-activations [N, d_sae] (no gradient): indices
        [N, m] and a keep mask [N, m] (None: keep all), so a sibling selection (BatchTopK) reuses
        this class's sparse pass and AuxK."""
        return topk_indices(pre, self.cfg.k), None

    # AuxK runs on the dead columns as small dense matmuls (pre-activations [N, n_dead] masked to
    # each token's top k_aux) while n_dead <= aux_dense_ratio * k_aux; above that, as sparse slots
    # like the main top-k. On 2 CPU cores a dense multiply-add costs ~1/8 of a gathered one.
    aux_dense_ratio = 6.0

    # AuxK can pick each token's top k_aux dead latents from the pre-activations with the live ones
    # masked out, over all d_sae columns: no dead-latent count read on the host (`dead_mask.nonzero()`
    # syncs a GPU every step), at the price of a second full-width top-k, run even while no latent is
    # dead. Same AuxK up to float rounding, on the dense path (a GPU under bf16 autocast) and the sparse
    # one (CPU, a T4's fp32) alike (tests/test_host_syncs.py). Off until a GPU measures it
    # (bench/train_step.py ours-bf16-syncfree, whole_pipeline.py ours+syncfree; BENCHMARKS.md).
    sync_free_aux = False

    def reconstruct(self, xn: Tensor, dead_mask: Tensor | None = None) -> Reconstruction:
        """The training pass; AuxK's decode of the dead latents (extras["e_hat"]) when dead_mask has any True."""
        sparse = self.use_sparse_kernels(xn)
        pre_grad = None
        if sparse:
            with torch.no_grad():
                pre = self.encode_pre(xn, out=self._pre_buffer(xn))  # the one dense matmul
        else:  # the dense path differentiates through the same matmul
            pre_grad = self.encode_pre(xn)
            pre = pre_grad.detach()
        with torch.no_grad():
            idx, keep = self.select(pre)
            if self.sync_free_aux:
                aux, masked = None, self._masked_dead_topk(pre, dead_mask)  # (aux_idx, is_dead, any_dead)
            else:
                aux, masked = self._dead_topk(pre, dead_mask), None  # (dead, local, pre_dead) or None
        m = idx.shape[1]
        dense_aux = aux is not None and sparse and \
            aux[0].numel() <= self.aux_dense_ratio * aux[2].shape[1]
        aux_idx, aux_keep, extras = None, None, {}
        if aux is not None and not dense_aux:
            dead, local, _ = aux
            aux_idx = dead.expand(idx.shape[0], -1) if local is None else dead[local]
        if masked is not None:
            aux_idx, aux_keep, extras["aux_on"] = masked
        e_hat = None
        if not sparse:
            pre_sel = pre_grad.gather(1, idx if aux_idx is None else torch.cat([idx, aux_idx], 1))
            del pre, pre_grad
            vals = _kept(F.relu(pre_sel[:, :m]), keep)
            decoded = [self._decode_latents(Latents(vals, idx))]
            if aux_idx is not None:
                aux_vals = _kept(F.relu(pre_sel[:, m:]), aux_keep)
                decoded.append(self._decode_latents(Latents(aux_vals, aux_idx)))
                e_hat = decoded[1]
        elif dense_aux:
            dead, local, top = aux
            plan = LatentPlan(idx, self.cfg.d_sae)
            # z [N, n_dead]: relu of each token's top-k_aux dead pre-activations, zero elsewhere
            pre_sel, z = SparseEncodeSelect.apply(xn, self.b_dec, self.W_enc_T, self.b_enc, idx,
                                                  pre.gather(1, idx), self.cfg.apply_b_dec_to_input,
                                                  plan, top, local, dead)
            del pre
            vals = _kept(F.relu(pre_sel), keep)
            decoded = sparse_decode(vals, idx, self.W_dec, plan=plan, dense=(z, dead))
            e_hat = decoded[1]
        else:
            all_idx = idx if aux_idx is None else torch.cat([idx, aux_idx], dim=1)
            splits = (m,) if aux_idx is None else (m, aux_idx.shape[1])
            plan = LatentPlan(all_idx, self.cfg.d_sae)
            pre_sel = SparseEncodeSelect.apply(xn, self.b_dec, self.W_enc_T, self.b_enc, all_idx,
                                               pre.gather(1, all_idx), self.cfg.apply_b_dec_to_input, plan)
            del pre
            vals = _kept(F.relu(pre_sel[:, :m]), keep)
            if aux_idx is not None:
                aux_vals = _kept(F.relu(pre_sel[:, m:]), aux_keep)
                decoded = sparse_decode(torch.cat([vals, aux_vals], 1), all_idx, self.W_dec, splits, plan)
                e_hat = decoded[1]
            else:
                decoded = sparse_decode(vals, idx, self.W_dec, splits, plan)
        return Reconstruction(decoded[0] + self.b_dec, Latents(vals, idx), {"e_hat": e_hat, **extras})

    def extra_losses(self, xn: Tensor, rec: Reconstruction, err: ReconstructionError) -> dict[str, Tensor]:
        """{"aux": aux_coef * ||e_hat - e||^2 / sum (e - mean e)^2}: AuxK's decode e_hat predicts the
        residual e = x - x_hat (a target: no gradient); 0 without dead latents."""
        e_hat = rec.extras.get("e_hat")
        if e_hat is None:
            return {"aux": err.fvu.new_zeros(())}
        with torch.no_grad():
            e_var = self.centered_sq_sum(err.resid)  # e = -resid: the same spread
            aux_diff = loss_precision(e_hat) + err.resid  # e_hat - e
        aux = squared_error(e_hat, None, aux_diff) / e_var.clamp_min(1e-12)
        if "aux_on" in rec.extras:  # the masked selection ran without knowing whether any latent is dead
            aux = aux * rec.extras["aux_on"]
        return {"aux": self.cfg.aux_coef * aux}

    def _dead_topk(self, pre: Tensor, dead_mask: Tensor | None):
        """(dead [n_dead], local [N, k_aux], top [N, k_aux]): the dead latents, each token's
        top-k_aux among them (positions in dead) and their pre-activations; None when AuxK is off.
        When the top k_aux holds every positive one (k_aux >= n_dead, or few positives), local is
        None and top is all their pre-activations (relu then gives the same AuxK input)."""
        if dead_mask is None or self.cfg.aux_coef == 0:
            return None
        dead = dead_mask.to(pre.device).nonzero().squeeze(1)
        n_dead = dead.numel()
        if n_dead == 0:
            return None
        pre_dead = pre.index_select(1, dead)
        if self.cfg.k_aux_eff >= n_dead or self._few_positive(pre_dead):
            return dead, None, pre_dead
        top, local = pre_dead.topk(self.cfg.k_aux_eff, dim=1, sorted=False)
        return dead, local, top

    def _masked_dead_topk(self, pre: Tensor, dead_mask: Tensor | None):
        """kernels.masked_dead_topk at k_aux (aux_idx, is_dead, any_dead: nothing read on the host); None when
        AuxK is off."""
        if dead_mask is None or self.cfg.aux_coef == 0:
            return None
        return masked_dead_topk(pre, dead_mask, self.cfg.k_aux_eff)

    def _few_positive(self, pre_dead: Tensor) -> bool:
        """True when no token has more than k_aux positive dead pre-activations (on CPU, while AuxK
        stays dense): then relu of the whole dead block equals relu of each token's top k_aux, and
        the [N, n_dead] top-k can be skipped. Dead latents are dead because their pre-activations
        stay low, so real runs often take this path (a random dead mask, as in the bench, does not)."""
        if pre_dead.device.type != "cpu" or self.sparse_kernels is False or \
                pre_dead.shape[1] > self.aux_dense_ratio * self.cfg.k_aux_eff or pre_dead.shape[0] == 0:
            return False
        return int((pre_dead > 0).sum(1).max()) <= self.cfg.k_aux_eff


def _kept(vals: Tensor, keep: Tensor | None) -> Tensor:
    """vals with the slots `keep` drops zeroed (no gradient through them); vals itself when keep is None."""
    return vals if keep is None else vals * keep.to(vals.dtype)
