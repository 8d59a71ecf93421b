"""The sparse autoencoder base class, its config and the pieces every architecture shares.

One file per architecture subclasses `SparseAutoencoder` and registers itself (`registry`): topk.py
(TopK + AuxK), batchtopk.py / matryoshka.py (BatchTopK and Matryoshka BatchTopK on TopK's pass),
jumprelu.py (JumpReLU + L0), relu.py (ReLU + decoder-norm-weighted L1); `architectures` imports them
all; load.py loads published SAEs into the same classes. The sparse autograd kernels they train with
live in kernels.py. state_dict() uses the SAELens 6 names and shapes (W_enc [d_in, d_sae], b_enc
[d_sae], W_dec [d_sae, d_in], b_dec [d_in]) so an export is a plain state_dict copy; inside, the
encoder is held latent-major as W_enc_T [d_sae, d_in], the layout its sparse gradient comes in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from .kernels import all_finite, centered_sq_sum, loss_precision, squared_error

Normalization = Literal["none", "expected_average_only_in"]
BDecInit = Literal["geometric_median", "mean", "zeros"]
DtypeName = Literal["float32", "bfloat16", "float16", "float64"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
B_DEC_INITS: tuple[str, ...] = get_args(BDecInit)
DTYPES = {name: getattr(torch, name) for name in get_args(DtypeName)}  # the name -> its torch dtype


@dataclass
class SAEConfig:
    """What every SAE shares (serialisable with to_dict); an architecture subclasses it with its own
    typed fields and sets `architecture`'s default to its registered name. d_in may stay None in a
    config written before the model is known (a TrainConfig's); build_sae needs it filled."""

    d_in: int | None = None
    """Width of the activations it reads (the model's d_model); None until the model is known."""

    d_sae: int = 16384
    """Number of latents (the dictionary's size)."""

    architecture: str = ""
    """The registered architecture name (`registry.register`); each architecture's config fixes it to its
    own, a Literal."""

    dead_tokens_threshold: int = 10_000_000
    """Tokens a latent may go without firing before it counts as dead (TopK's AuxK trains the dead ones)."""

    normalize_activations: Normalization = "none"
    """Either "none" or "expected_average_only_in" (SAELens' names): scale the inputs so that E||x|| =
    sqrt(d_in) (`estimate_norm_scale`), a scale folded into the weights before export."""

    dtype: DtypeName = "float32"
    """The dtype of the SAE's parameters (a key of DTYPES)."""

    apply_b_dec_to_input: bool = True
    """Subtract b_dec from the input before encoding, as SAELens' standard SAE does."""

    b_dec_init: BDecInit = "geometric_median"
    """What the trainer sets b_dec to from its first sample: its geometric median, its mean, or zeros."""

    seed: int = 0
    """Seed of the initial weights (a training run gives layer L's SAE cfg.seed + L)."""

    def __post_init__(self):
        if (self.d_in is not None and self.d_in <= 0) or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}.")
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(f"normalize_activations={self.normalize_activations!r}: use one of {NORMALIZATIONS}.")
        if self.b_dec_init not in B_DEC_INITS:
            raise ValueError(f"b_dec_init={self.b_dec_init!r}: use one of {B_DEC_INITS}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: use one of {tuple(DTYPES)}.")
        if self.dead_tokens_threshold <= 0:
            raise ValueError("dead_tokens_threshold must be a positive number of tokens.")

    def to_dict(self) -> dict:
        return asdict(self)


class Latents(NamedTuple):
    """Latent values of a batch: sparse (vals [N, m] at indices idx [N, m], zeros allowed) or
    dense (vals [N, d_sae], idx None)."""

    vals: Tensor
    idx: Tensor | None = None


class Reconstruction(NamedTuple):
    """What an architecture's training pass returns: x_hat [N, d_in] in the normalised space, the
    latents, and whatever its extra losses need (e.g. AuxK's decode of the dead latents)."""

    x_hat: Tensor
    latents: Latents
    extras: dict


class ReconstructionError(NamedTuple):
    """The reconstruction terms every architecture pays: resid = x_hat - x (float32 or wider, no
    gradient), fvu = ||resid||^2 / sum (x - mean x)^2, mse = ||resid||^2 / N."""

    resid: Tensor
    fvu: Tensor
    mse: Tensor


class SAEOutput(NamedTuple):
    """What a training step needs. Metrics are in the SAE's (normalised) input space.

    loss = the sum of `losses` (fvu first, then the architecture's named terms); aux_loss =
    losses["aux"] (already times its coefficient; 0 without one); mse_loss = mean over tokens of
    the squared error summed over d_in; l0 = mean number of non-zero latents per token.
    """

    x_hat: Tensor          # [N, d_in] reconstruction, in the caller's (raw) space
    latent_vals: Tensor    # [N, m] values of the selected latents (zeros allowed); [N, d_sae] if dense
    latent_idx: Tensor | None  # [N, m] their indices; None for dense latents
    loss: Tensor
    mse_loss: Tensor
    aux_loss: Tensor
    fvu: Tensor
    l0: Tensor
    losses: dict           # name -> term of loss, e.g. {"fvu": ..., "aux": ...}


# --------------------------------------------------------------------------- geometric median

@torch.no_grad()
def geometric_median(points: Tensor, eps: float = 1e-6, max_iter: int = 200) -> Tensor:
    """Point minimising the sum of Euclidean distances to `points` [N, d] (Weiszfeld, float64).

    Robust centre for b_dec: unlike the mean it is not dragged by the few huge-norm outliers
    (e.g. attention-sink tokens) that residual streams carry.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"geometric_median needs a non-empty [N, d] tensor, got shape {tuple(points.shape)}.")
    if not torch.isfinite(points).all():
        raise ValueError("geometric_median: points contain NaN/inf; clean the activation sample first.")
    p = points.to(torch.float64)
    y = p.mean(0)
    scale = p.norm(dim=1).mean().clamp_min(1e-12)
    for _ in range(max_iter):
        dist = (p - y).norm(dim=1).clamp_min(1e-12 * scale)
        w = 1.0 / dist
        y_new = (w[:, None] * p).sum(0) / w.sum()
        done = (y_new - y).norm() <= eps * scale
        y = y_new
        if done:
            break
    return y.to(points.dtype)


# --------------------------------------------------------------------------- the base class

class SparseAutoencoder(nn.Module):
    """Linear encoder -> sparse activation -> linear decoder with unit-norm decoder rows.

    The base holds what every architecture shares: the parameters (W_enc_T / its SAELens view
    W_enc, b_enc, W_dec, b_dec), input checks and normalisation (and its folding), encode /
    decode with SAELens semantics, the reconstruction loss, dead-latent tracking, the unit-norm
    decoder with its parallel-gradient removal and the b_dec initialisation. An architecture is
    one short subclass, registered with `@register(name, ItsConfig)`, that overrides some of:

    - `activation(pre) -> Latents`: pre-activations [N, d_sae] of `encode_pre` to latents, sparse
      or dense (differentiable). Enough on its own for a plain dense-autograd training pass.
    - `encode_latents(xn) -> Latents`: normalised input to latents; by default
      activation(encode_pre(xn)). Override when the encoder itself differs.
    - `reconstruct(xn, dead_mask) -> Reconstruction`: the training pass to x_hat (override to
      train with the sparse kernels, as TopK does).
    - `extra_losses(xn, rec, err) -> {name: term}`: loss terms beside fvu (each already times its
      coefficient); their sum with fvu is the loss.

    - `constrain_weights()`: after each optimizer step (by default the unit-norm decoder rows,
      when `normalize_decoder`); `constrain_grads()` before it (the parallel-gradient removal).

    An architecture whose training terms are not written yet sets `trainable = False` (the
    trainer refuses it; encode / decode work). One whose penalty is weighted by the decoder norms
    (ReLU + L1, as SAELens) sets `normalize_decoder = False`: its decoder rows are left free.

    How the planned siblings fit (sketches, not implemented):
    - Gated: a second encoder path from the same W_enc, with SAELens 6's b_gate, r_mag, b_mag
      [d_sae] parameters: encode_latents = H(gate pre) * relu(magnitude pre) (W_enc * exp(r_mag)
      + b_mag); reconstruct keeps relu(gate pre) in extras, and extra_losses adds {"aux": its
      reconstruction through a detached decoder}.
    """

    architecture = "base"
    trainable = True  # False: inference only (loaded SAEs); the trainer refuses to train it
    # The training pass's kernels: True the sparse ones (kernels.py), False the plain dense autograd
    # path (the tests' gradient reference), None automatic: see `use_sparse_kernels`.
    sparse_kernels: bool | None = None
    normalize_decoder = True  # False: the trainer leaves decoder row norms free (see constrain_weights)
    # Data-parallel training (distributed.Group) sets this: each rank sees a slice of the batch, and
    # the batch statistics (centred variances, latents fired) are then taken over every rank's rows.
    reducer = None

    def __init__(self, cfg: SAEConfig, device=None):
        super().__init__()
        self.cfg = cfg
        dtype = DTYPES[cfg.dtype]
        gen = torch.Generator().manual_seed(cfg.seed)
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen, dtype=torch.float32)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        # Encoder starts as the decoder's transpose (Gao et al. 2024). It is stored latent-major,
        # W_enc_T [d_sae, d_in] (one row per latent, contiguous): the sparse backward produces its
        # gradient rows per latent, so gradient, parameter and fused-Adam state share one layout
        # and no step pays a 37 MB transpose copy. `W_enc` ([d_in, d_sae], SAELens) is its view;
        # state_dict() / load_state_dict() speak W_enc.
        self.W_enc_T = nn.Parameter(W_dec.clone().to(device=device, dtype=dtype))
        self.W_dec = nn.Parameter(W_dec.to(device=device, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, device=device, dtype=dtype))
        self.register_buffer("tokens_since_fired", torch.zeros(cfg.d_sae, dtype=torch.long, device=device))
        # Input scale for normalize_activations="expected_average_only_in" (1 = off / folded).
        self.register_buffer("norm_scale", torch.ones((), dtype=torch.float32, device=device))
        self.register_state_dict_post_hook(self._state_dict_saelens_names)
        self.register_load_state_dict_pre_hook(self._load_saelens_names)

    @property
    def W_enc(self) -> Tensor:
        """The encoder in SAELens' shape [d_in, d_sae]: a view of W_enc_T (in-place edits go through)."""
        return self.W_enc_T.t()

    @staticmethod
    def _state_dict_saelens_names(module, state_dict, prefix, local_metadata):
        if prefix + "W_enc_T" in state_dict:
            state_dict[prefix + "W_enc"] = state_dict.pop(prefix + "W_enc_T").t()

    @staticmethod
    def _load_saelens_names(module, state_dict, prefix, *args):
        if prefix + "W_enc" in state_dict and prefix + "W_enc_T" not in state_dict:
            W_enc = state_dict.pop(prefix + "W_enc")
            state_dict[prefix + "W_enc_T"] = W_enc.t() if W_enc.ndim == 2 else W_enc

    # ---- the extension points (see the class docstring)
    def activation(self, pre: Tensor) -> Latents:
        """Latents from the pre-activations [N, d_sae] (differentiable)."""
        raise NotImplementedError

    def encode_latents(self, xn: Tensor) -> Latents:
        """Latents of a normalised input [N, d_in]."""
        return self.activation(self.encode_pre(xn))

    def reconstruct(self, xn: Tensor, dead_mask: Tensor | None = None) -> Reconstruction:
        """The training pass on a normalised input [N, d_in]: plain dense autograd by default."""
        lat = self.encode_latents(xn)
        return Reconstruction(self._decode_latents(lat) + self.b_dec, lat, {})

    def extra_losses(self, xn: Tensor, rec: Reconstruction, err: ReconstructionError) -> dict[str, Tensor]:
        """Named loss terms beside fvu (none by default)."""
        return {}

    def constrain_grads(self) -> None:
        """Before the optimizer step: drop the decoder gradient along its unit rows (if normalize_decoder)."""
        if self.normalize_decoder:
            self.remove_parallel_decoder_grad()

    def constrain_weights(self) -> None:
        """After the optimizer step: decoder rows back to unit norm (if normalize_decoder)."""
        if self.normalize_decoder:
            self.set_decoder_unit_norm()

    # ---- plumbing
    @property
    def device(self) -> torch.device:
        return self.W_enc_T.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc_T.dtype

    def _check_input(self, x: Tensor, finite: bool = True) -> Tensor:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"SAE expects inputs with last dim d_in={self.cfg.d_in}, got shape {tuple(x.shape)}: "
                             "check the layer / model the activations come from.")
        if finite and not all_finite(x):
            raise ValueError("SAE input contains NaN or inf activations. Check the model dtype (fp16 overflow: "
                             "use bf16 or fp32) and the capture; drop such tokens before training.")
        return x

    def _normalize(self, x: Tensor) -> Tensor:
        x = x.to(self.dtype)
        if self.cfg.normalize_activations != "none":
            x = x * self.norm_scale.to(x.dtype)
        return x

    def _denormalize(self, x: Tensor) -> Tensor:
        if self.cfg.normalize_activations != "none":
            x = x / self.norm_scale.to(x.dtype)
        return x

    def encode_pre(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Pre-activations [N, d_sae] of a normalised input [N, d_in]: (x - b_dec) W_enc + b_enc."""
        xc = x - self.b_dec if self.cfg.apply_b_dec_to_input else x
        if out is not None:
            return torch.addmm(self.b_enc, xc, self.W_enc_T.t(), out=out)
        return torch.addmm(self.b_enc, xc, self.W_enc_T.t())

    def use_sparse_kernels(self, x: Tensor) -> bool:
        """Whether the training pass on x takes the sparse kernels: `sparse_kernels` when set; else yes,
        except on a GPU whose encoder matmul runs in bf16 / fp16 (autocast or half weights), where
        tensor-core matmuls over all d_sae latents beat the gathers (H200: 4.2 vs 5.5 ms a step,
        BENCHMARKS.md). On CPU, and in fp32 on a GPU, the sparse kernels are the faster ones."""
        if self.sparse_kernels is not None:
            return self.sparse_kernels
        if x.device.type == "cpu":
            return True
        half, kind = (torch.float16, torch.bfloat16), x.device.type
        try:
            autocast_half = torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) in half
        except RuntimeError:  # a device type autocast does not know
            autocast_half = False
        return not (autocast_half or self.dtype in half)

    def _pre_buffer(self, x: Tensor) -> Tensor | None:
        """A reused [N, d_sae] output for the training matmul on CPU (saves re-faulting ~N*d_sae*4 bytes
        of fresh pages every step); None elsewhere (CUDA's caching allocator already reuses)."""
        if x.device.type != "cpu" or torch.is_autocast_enabled("cpu") or x.dtype != self.dtype:
            return None
        shape = (x.shape[0], self.cfg.d_sae)
        buf = getattr(self, "_pre_buf", None)
        if buf is None or buf.shape != shape or buf.dtype != x.dtype:
            buf = self._pre_buf = torch.empty(shape, dtype=x.dtype)
        return buf

    def _dense(self, lat: Latents) -> Tensor:
        """Latents as a dense [N, d_sae] tensor."""
        if lat.idx is None:
            return lat.vals
        z = torch.zeros(lat.vals.shape[0], self.cfg.d_sae, dtype=lat.vals.dtype, device=lat.vals.device)
        return z.scatter(1, lat.idx, lat.vals)

    def _decode_latents(self, lat: Latents) -> Tensor:
        """Dense-autograd decode without b_dec: latents @ W_dec -> [N, d_in]."""
        return self._dense(lat) @ self.W_dec

    # ---- inference API (SAELens semantics: dense latents)
    def encode(self, x: Tensor) -> Tensor:
        """Raw activations [..., d_in] -> dense latents [..., d_sae] (same as sae_lens' encode)."""
        self._check_input(x)
        lead = x.shape[:-1]
        z = self._dense(self.encode_latents(self._normalize(x.reshape(-1, self.cfg.d_in))))
        return z.reshape(*lead, self.cfg.d_sae)

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw activations [N, d_in] -> (values [N, m], indices [N, m]) of the active latents
        (dense latents: each token's m largest, m the most any token has; zeros pad)."""
        self._check_input(x)
        with torch.no_grad():
            lat = self.encode_latents(self._normalize(x.reshape(-1, self.cfg.d_in)))
            if lat.idx is not None:
                return lat.vals, lat.idx
            m = int((lat.vals != 0).sum(1).max()) if lat.vals.shape[0] else 0
            return lat.vals.topk(m, dim=1)

    def decode(self, latents: Tensor) -> Tensor:
        """Dense latents [..., d_sae] -> reconstruction [..., d_in] in the raw input space."""
        return self._denormalize(latents.to(self.dtype) @ self.W_dec + self.b_dec)

    # ---- training forward
    def forward(self, x: Tensor, dead_mask: Tensor | None = None, *, check_finite: bool = True) -> SAEOutput:
        """One training forward on x [N, d_in]; dead_mask: the latents counted dead (for AuxK & co).
        check_finite=False skips the NaN/inf check of x, for rows already checked (the trainer's, at
        capture): on a GPU the check is a host sync that stalls every step."""
        self._check_input(x, finite=check_finite)
        if x.ndim != 2:
            x = x.reshape(-1, self.cfg.d_in)
        xn = self._normalize(x)
        rec = self.reconstruct(xn, dead_mask)
        err = self._reconstruction_error(rec.x_hat, xn)
        losses = {"fvu": err.fvu, **self.extra_losses(xn, rec, err)}
        loss = err.fvu
        for name, term in losses.items():
            if name != "fvu":
                loss = loss + term
        aux_loss = losses.get("aux")
        if aux_loss is None:
            aux_loss = err.fvu.new_zeros(())
        vals, idx = rec.latents
        l0 = (vals > 0).sum(1).float().mean()
        return SAEOutput(self._denormalize(rec.x_hat), vals, idx, loss, err.mse.detach(), aux_loss, err.fvu,
                         l0.detach(), losses)

    def batch_mean(self, per_token: Tensor) -> Tensor:
        """The mean over the batch's tokens of a per-token term [N]. Under a reducer this rank holds 1/world
        of the batch (equal slices: training.config.check_world), so it returns its share, sum / (N * world): the
        ranks' terms, their gradients summed by sum_grads and their logged values add up to the mean over
        the whole batch, as one process computes it."""
        if self.reducer is None:
            return per_token.mean()
        return per_token.sum() / (per_token.shape[0] * self.reducer.world)

    def centered_sq_sum(self, x: Tensor) -> Tensor:
        """sum of (x - row mean)^2 over the batch: this process's rows, or every rank's under a reducer."""
        return centered_sq_sum(x) if self.reducer is None else self.reducer.centered_sq_sum(x)

    def _reconstruction_error(self, x_hat: Tensor, xn: Tensor) -> ReconstructionError:
        with torch.no_grad():
            resid = loss_precision(x_hat) - loss_precision(xn)  # the reconstruction error, one pass; reusable
            total_var = self.centered_sq_sum(xn)
        sq = squared_error(x_hat, xn, resid)
        return ReconstructionError(resid, sq / total_var.clamp_min(1e-12), sq / xn.shape[0])

    # ---- training utilities
    @torch.no_grad()
    def update_dead_tracking(self, latent_idx: Tensor | None, n_tokens: int,
                             latent_vals: Tensor | None = None) -> Tensor:
        """Add n_tokens to every latent's tokens_since_fired, zero those that fired; -> dead mask.

        A latent fired when it is in latent_idx (with a positive value when latent_vals is given);
        with dense latents (latent_idx None), when its column of latent_vals has a positive value.
        Under a reducer, n_tokens is this rank's and a latent fired when it fired on any rank.
        """
        if latent_idx is None:
            fired = (latent_vals > 0).any(0)
        else:  # a mask built without reading it on the host (no GPU sync): unfired slots hit a spare entry
            flat = latent_idx.reshape(-1)
            if latent_vals is not None:
                flat = torch.where(latent_vals.reshape(-1) > 0, flat, self.cfg.d_sae)
            fired = torch.zeros(self.cfg.d_sae + 1, dtype=torch.bool, device=flat.device)
            fired = fired.index_fill_(0, flat, True)[:-1]
        fired = fired.to(self.tokens_since_fired.device)
        if self.reducer is not None:
            fired = self.reducer.any(fired)
            n_tokens = int(n_tokens) * self.reducer.world
        self.tokens_since_fired += int(n_tokens)
        self.tokens_since_fired.masked_fill_(fired, 0)
        return self.dead_mask()

    def dead_mask(self) -> Tensor:
        return self.tokens_since_fired >= self.cfg.dead_tokens_threshold

    @torch.no_grad()
    def set_decoder_unit_norm(self) -> None:
        """Rescale every decoder row to norm 1 (call after each optimizer step)."""
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True)
                        .clamp_min_(torch.finfo(self.W_dec.dtype).eps))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each (unit) decoder row (call before the optimizer step)."""
        g = self.W_dec.grad
        if g is None:
            return
        parallel = torch.einsum("ij,ij->i", g, self.W_dec).unsqueeze(1)  # a batched dot: no [d_sae, d_in] temporary
        g.addcmul_(parallel, self.W_dec, value=-1)

    @torch.no_grad()
    def init_b_dec_geometric_median(self, sample: Tensor, max_iter: int = 200) -> None:
        """b_dec <- geometric median of a [N, d_in] sample of raw activations (after normalisation)."""
        self._check_input(sample)
        self.b_dec.copy_(geometric_median(self._normalize(sample.reshape(-1, self.cfg.d_in)).float(),
                                          max_iter=max_iter))

    @torch.no_grad()
    def init_b_dec(self, sample: Tensor) -> None:
        """Initialise b_dec as cfg.b_dec_init says ("geometric_median" | "mean" | "zeros")."""
        if self.cfg.b_dec_init == "geometric_median":
            self.init_b_dec_geometric_median(sample)
        elif self.cfg.b_dec_init == "mean":
            self._check_input(sample)
            self.b_dec.copy_(self._normalize(sample.reshape(-1, self.cfg.d_in)).float().mean(0))
        else:
            self.b_dec.zero_()

    @torch.no_grad()
    def estimate_norm_scale(self, sample: Tensor) -> float:
        """Set the input scale so that E||x * scale|| = sqrt(d_in) on `sample` (raw activations).

        No-op (returns 1.0) when cfg.normalize_activations == "none".
        """
        if self.cfg.normalize_activations == "none":
            return 1.0
        self._check_input(sample)
        mean_norm = sample.reshape(-1, self.cfg.d_in).float().norm(dim=1).mean().item()
        if mean_norm == 0:
            raise ValueError("estimate_norm_scale: the sample has zero norm; pass real activations.")
        self.norm_scale.fill_(math.sqrt(self.cfg.d_in) / mean_norm)
        return float(self.norm_scale)

    @torch.no_grad()
    def fold_normalization(self) -> None:
        """Fold the input scale into the weights so the SAE takes and returns raw activations.

        encode((s x) - b) W + c == (x - b/s)(s W) + c ; decode: (z W_dec + b)/s. Afterwards
        norm_scale = 1 and cfg.normalize_activations = "none" (decoder rows are then norm 1/s).
        """
        if self.cfg.normalize_activations == "none":
            return
        s = self.norm_scale.to(self.dtype)
        self.W_enc_T.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.div_(s)
        self.norm_scale.fill_(1.0)
        self.cfg.normalize_activations = "none"
