"""Sparse autoencoders behind one interface, TopK (+AuxK) first.

state_dict() uses the SAELens 6 names and shapes (W_enc [d_in, d_sae], b_enc [d_sae],
W_dec [d_sae, d_in], b_dec [d_in]) so an export is a plain state_dict copy; inside, the encoder
is held latent-major as W_enc_T [d_sae, d_in], the layout its sparse gradient comes in.

Training is sparse end to end: one dense encoder matmul picks the active latents, then decode
and every gradient touch only the k (and k_aux) selected latents per token. The custom autograd
functions below do that; `SparseAutoencoder.sparse_kernels = False` switches to a plain dense
autograd reference (used by the tests to check the gradients).

Siblings (BatchTopK, JumpReLU, ReLU+L1, Gated, Matryoshka) subclass SparseAutoencoder, override
`select` / `activate` (the activation), and register themselves with `@register("name")`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMALIZATIONS = ("none", "expected_average_only_in")
B_DEC_INITS = ("geometric_median", "mean", "zeros")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


@dataclass
class SAEConfig:
    """Everything that defines an SAE's shape and training objective (serialisable with asdict)."""

    d_in: int
    d_sae: int
    architecture: str = "topk"
    k: int = 64
    k_aux: int | None = None            # None -> d_in // 2 (Gao et al. 2024, App. B.1)
    aux_coef: float = 1 / 32
    dead_tokens_threshold: int = 10_000_000
    normalize_activations: str = "none"  # "none" | "expected_average_only_in"
    dtype: str = "float32"
    apply_b_dec_to_input: bool = True
    b_dec_init: str = "geometric_median"  # what the trainer does with its first sample
    seed: int = 0
    extra: dict = field(default_factory=dict)  # architecture-specific knobs for siblings

    def __post_init__(self):
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}.")
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"k={self.k} must be in 1..d_sae={self.d_sae}: lower k or raise d_sae.")
        if self.k_aux is not None and self.k_aux <= 0:
            raise ValueError(f"k_aux={self.k_aux} must be positive (or None for d_in // 2).")
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(f"normalize_activations={self.normalize_activations!r}: use one of {NORMALIZATIONS}.")
        if self.b_dec_init not in B_DEC_INITS:
            raise ValueError(f"b_dec_init={self.b_dec_init!r}: use one of {B_DEC_INITS}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: use one of {tuple(DTYPES)}.")
        if self.dead_tokens_threshold <= 0:
            raise ValueError("dead_tokens_threshold must be a positive number of tokens.")

    @property
    def k_aux_eff(self) -> int:
        return self.k_aux if self.k_aux is not None else max(1, self.d_in // 2)

    def to_dict(self) -> dict:
        return asdict(self)


class SAEOutput(NamedTuple):
    """What a training step needs. Metrics are in the SAE's (normalised) input space.

    loss = fvu + aux_loss (aux_loss already includes aux_coef); mse_loss = mean over tokens of
    the squared error summed over d_in; l0 = mean number of non-zero latents per token.
    """

    x_hat: Tensor          # [N, d_in] reconstruction, in the caller's (raw) space
    latent_vals: Tensor    # [N, m] values of the selected latents (zeros allowed)
    latent_idx: Tensor     # [N, m] their indices
    loss: Tensor
    mse_loss: Tensor
    aux_loss: Tensor
    fvu: Tensor
    l0: Tensor


# --------------------------------------------------------------------------- sparse kernels

class LatentPlan:
    """The (token, slot) entries of idx [N, m] regrouped by latent (a CSR of the transposed pattern).

    Built lazily, once per step, and shared by every sparse gradient of that step (encoder and
    decoder, main and AuxK): one stable int32 sort of N*m keys instead of one per gradient.
    order[i]: position in idx.flatten() of the i-th entry by latent; offsets[c]: first entry of
    latent c; tokens(group_rows): the row each entry reads, optionally offset per slot group.
    """

    def __init__(self, idx: Tensor, d_sae: int):
        self.idx, self.d_sae = idx, d_sae
        self._order = None

    def _build(self):
        flat = self.idx.reshape(-1)
        key = flat.to(torch.int32) if self.d_sae < 2 ** 31 else flat
        self._order = torch.sort(key, stable=True).indices  # stable: same sums, bit for bit, on resume
        counts = torch.bincount(flat, minlength=self.d_sae)
        self._offsets = torch.zeros(self.d_sae, dtype=torch.long, device=flat.device)
        self._offsets[1:] = counts.cumsum(0)[:-1]

    @property
    def order(self) -> Tensor:
        if self._order is None:
            self._build()
        return self._order

    @property
    def offsets(self) -> Tensor:
        self.order
        return self._offsets

    def tokens(self, splits: tuple[int, ...] | None = None) -> Tensor:
        """Row of each entry (by-latent order); with slot groups `splits`, group g's rows are + g*N."""
        n, m = self.idx.shape
        tok = torch.div(self.order, m, rounding_mode="floor")
        if splits and len(splits) > 1:
            group = torch.bucketize(self.order % m, torch.tensor(list(_cumsum(splits))[:-1],
                                                                   device=tok.device), right=True)
            tok = tok + group * n
        return tok

    def scatter(self, rows: Tensor, weights: Tensor, splits=None) -> Tensor:
        """out[c] = sum over entries (n, j) of latent c of weights[n, j] * rows[row(n, j)] -> [d_sae, d].

        One embedding_bag (CPU) or CSR SpMM (CUDA) over the by-latent pattern: O(N*m*d), no
        [N, d_sae] intermediate.
        """
        w = weights.reshape(-1)[self.order].to(rows.dtype)
        if rows.is_cuda:  # cuSPARSE SpMM balances long bags; CUDA embedding_bag gives one block per bag
            crow = torch.cat([self.offsets, self.offsets.new_full((1,), w.numel())])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a = torch.sparse_csr_tensor(crow, self.tokens(splits), w, (self.d_sae, rows.shape[0]))
                return a @ rows
        return F.embedding_bag(self.tokens(splits), rows, self.offsets, mode="sum", per_sample_weights=w)


def _cumsum(xs):
    t = 0
    for x in xs:
        t += x
        yield t


def _gather_dot(a: Tensor, W: Tensor, idx: Tensor, chunk: int = 1 << 20) -> Tensor:
    """out[n, j] = a[n] . W[idx[n, j]]  for a [N, d], W [d_sae, d], idx [N, m] -> [N, m].

    A sampled dense-dense matmul (a @ W.T evaluated only on the pattern idx) where torch has
    one; otherwise chunked gather + bmm so the [rows, m, d] temporary stays below `chunk` * d.
    """
    n, m = idx.shape
    if a.dtype == W.dtype and a.dtype in (torch.float32, torch.float64):
        try:
            crow = torch.arange(0, n * m + 1, m, device=idx.device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pattern = torch.sparse_csr_tensor(crow, idx.reshape(-1), torch.ones(n * m, dtype=a.dtype,
                                                  device=a.device), (n, W.shape[0]))
                return torch.sparse.sampled_addmm(pattern, a, W.t(), beta=0.0).values().view(n, m)
        except (RuntimeError, NotImplementedError):
            pass
    out = torch.empty(n, m, dtype=a.dtype, device=a.device)
    step = max(1, chunk // max(m, 1))
    for s in range(0, n, step):
        rows = W[idx[s:s + step]]                                  # [r, m, d]
        out[s:s + step] = torch.bmm(rows, a[s:s + step, :, None].to(W.dtype)).squeeze(-1).to(a.dtype)
    return out


class SparseDecode(torch.autograd.Function):
    """Grouped sparse decode: for each slot group g of (vals, idx) [N, m] (splits = widths),
    out_g = sum_{j in g} vals[:, j] * W_dec[idx[:, j]]  -> one [N, d_in] output per group;
    with a dense block (z [N, n_cols] on the decoder rows `cols`), one more output z @ W_dec[cols].

    Backward: grad vals[n, j] = g_g[n] . W_dec[idx[n, j]] (a sampled matmul on the pattern);
    grad W_dec[c] = sum over entries of latent c of vals * g_g[n] (one embedding_bag via the plan);
    the dense block adds grad z = g @ W_dec[cols].T and grad W_dec[cols] += z.T @ g (two matmuls).
    """

    @staticmethod
    def forward(ctx, vals, idx, W_dec, splits, plan, z=None, cols=None):
        ctx.save_for_backward(vals, idx, W_dec, z, cols)
        ctx.splits, ctx.plan = splits, plan
        outs, s = [], 0
        for w in splits:
            outs.append(F.embedding_bag(idx[:, s:s + w], W_dec, mode="sum",
                                        per_sample_weights=vals[:, s:s + w].to(W_dec.dtype)))
            s += w
        if z is not None:
            outs.append(z.to(W_dec.dtype) @ W_dec.index_select(0, cols))
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        vals, idx, W_dec, z, cols = ctx.saved_tensors
        grads = [g.contiguous() for g in grads]
        g_z = None
        if z is not None:
            *grads, g_z = grads
            g_z = g_z.to(W_dec.dtype)
        d_vals = d_W = d_z = None
        if ctx.needs_input_grad[0]:
            parts, s = [], 0
            for w, g in zip(ctx.splits, grads):
                parts.append(_gather_dot(g, W_dec, idx[:, s:s + w]))
                s += w
            d_vals = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if z is not None and ctx.needs_input_grad[5]:
            d_z = (g_z @ W_dec.index_select(0, cols).t()).to(z.dtype)
        if ctx.needs_input_grad[2]:
            plan = ctx.plan or LatentPlan(idx, W_dec.shape[0])
            d_W = plan.scatter(torch.cat(grads, 0).to(W_dec.dtype) if len(grads) > 1 else grads[0].to(W_dec.dtype),
                               vals, ctx.splits)
            if z is not None:
                d_W.index_copy_(0, cols, torch.addmm(d_W.index_select(0, cols), z.to(W_dec.dtype).t(), g_z))
        return d_vals, None, d_W, None, None, d_z, None


def sparse_decode(vals: Tensor, idx: Tensor, W_dec: Tensor, splits=None, plan=None, dense=None):
    """Differentiable sparse decode; returns one tensor, or a tuple when `splits` groups slots.

    dense=(z, cols): also decode the dense block z [N, len(cols)] on decoder rows cols (appended
    to the returned tuple).
    """
    z, cols = dense if dense is not None else (None, None)
    outs = SparseDecode.apply(vals, idx, W_dec, tuple(splits or (idx.shape[1],)), plan, z, cols)
    return outs if (splits or dense is not None) else outs[0]


class SparseEncodeSelect(torch.autograd.Function):
    """pre[n, j] = (x[n] - b_dec) . W_enc_T[idx[n, j]] + b_enc[idx[n, j]] for the chosen idx only.

    W_enc_T is the encoder stored latent-major ([d_sae, d_in], one row per latent). The forward
    receives the values already computed by the dense encoder matmul (no recompute); the backward
    touches only the chosen rows: grad W_enc_T[c] = sum_{idx[n,j]=c} g[n,j] xc[n], grad b_enc[c] =
    sum g, grad b_dec = -W_enc_T.T @ grad b_enc (when b_dec is subtracted), and grad x (only when x
    needs it) = sum_j g[n, j] W_enc_T[idx[n, j]].

    With a dense block on the latents `cols` (e.g. the dead ones for AuxK) it also returns
    z [N, n_cols] = relu of each token's chosen pre-activations in that block (cols_top [N, m_c] at
    block positions cols_local [N, m_c], or all of the block when None), zero elsewhere. Its gradient, masked
    where z is 0 (relu, and the entries not chosen), adds the dense matmuls
    grad W_enc_T[cols] += g_c.T @ xc, grad b_enc[cols] += sum_n g_c, grad x += g_c @ W_enc_T[cols].
    """

    @staticmethod
    def forward(ctx, x, b_dec, W_enc_T, b_enc, idx, pre_sel, apply_b_dec: bool, plan,
                cols_top=None, cols_local=None, cols=None):
        ctx.apply_b_dec, ctx.plan = apply_b_dec, plan
        if cols is None:
            ctx.save_for_backward(x, b_dec, W_enc_T, idx, None, None)
            return pre_sel.clone()
        if cols_local is None:  # every column chosen
            z = F.relu(cols_top)
        else:
            z = torch.zeros(cols_top.shape[0], cols.numel(), dtype=cols_top.dtype, device=cols_top.device)
            z.scatter_(1, cols_local, F.relu(cols_top))
        ctx.save_for_backward(x, b_dec, W_enc_T, idx, cols, z)
        return pre_sel.clone(), z

    @staticmethod
    def backward(ctx, g, g_c=None):
        x, b_dec, W_enc_T, idx, cols, z = ctx.saved_tensors
        d_sae, dtype = W_enc_T.shape[0], W_enc_T.dtype
        g = g.contiguous()
        if cols is not None:  # relu's mask; also zero for the entries that were not chosen
            g_c = torch.ops.aten.threshold_backward(g_c.contiguous(), z, 0).to(dtype)
        need_x, need_bdec, need_W, need_benc = (ctx.needs_input_grad[i] for i in range(4))
        d_x = d_bdec = d_W = d_benc = None
        col_sum = None
        if need_benc or need_bdec:
            col_sum = torch.zeros(d_sae, dtype=dtype, device=g.device)  # accumulate in param dtype
            col_sum.index_add_(0, idx.reshape(-1), g.reshape(-1).to(dtype))
            if cols is not None:
                col_sum.index_add_(0, cols, g_c.sum(0))
            d_benc = col_sum if need_benc else None
        if need_W:
            xc = (x - b_dec if ctx.apply_b_dec else x).to(dtype)
            plan = ctx.plan or LatentPlan(idx, d_sae)
            d_W = plan.scatter(xc, g)                          # [d_sae, d_in]: the parameter's layout
            if cols is not None:
                d_W.index_copy_(0, cols, torch.addmm(d_W.index_select(0, cols), g_c.t(), xc))  # cols unique
        if need_bdec and ctx.apply_b_dec:
            d_bdec = -(col_sum @ W_enc_T)
        if need_x:
            d_x = _gather_rows_sum(W_enc_T, idx, g)
            if cols is not None:
                d_x = d_x.addmm_(g_c, W_enc_T.index_select(0, cols))
            d_x = d_x.to(x.dtype)
        return d_x, d_bdec, d_W, d_benc, None, None, None, None, None, None, None


def _gather_rows_sum(Wt: Tensor, idx: Tensor, w: Tensor) -> Tensor:
    """out[n] = sum_j w[n, j] * Wt[idx[n, j]]  (Wt [d_sae, d]) -> [N, d]."""
    return F.embedding_bag(idx, Wt.contiguous(), mode="sum", per_sample_weights=w.to(Wt.dtype))


def topk_indices(pre: Tensor, k: int, block: int = 32) -> Tensor:
    """Indices [N, k] of each row's k largest entries: torch.topk's set, in no particular order.

    On CPU, in two stages: the k blocks of `block` adjacent columns with the largest maxima hold
    every top-k entry (an entry in any other block is beaten by k block maxima), so one pass for
    the block maxima and a top-k over those k * block candidates give the exact answer, about
    1.5-2x faster than a top-k over the whole d_sae-wide row. Elsewhere (and for narrow rows) topk.
    """
    n, d = pre.shape
    n_blocks = d // block
    if pre.device.type != "cpu" or d % block or n_blocks < 4 * k or not pre.is_contiguous():
        return pre.topk(k, dim=1, sorted=False).indices
    blocks = pre.view(n * n_blocks, block)
    top_blocks = blocks.view(n, n_blocks, block).amax(2).topk(k, dim=1, sorted=False).indices  # [n, k]
    rows = top_blocks + torch.arange(n, device=pre.device)[:, None] * n_blocks
    slot = blocks.index_select(0, rows.view(-1)).view(n, k * block).topk(k, dim=1, sorted=False).indices
    return top_blocks.gather(1, torch.div(slot, block, rounding_mode="floor")) * block + slot % block


class _SquaredError(torch.autograd.Function):
    """||a - target||^2 (float32 or wider) from their precomputed difference diff = a - target (detached):
    the value is one reduction over diff, the gradient 2 g diff goes to a. Saves the passes and the
    temporaries of mse_loss when the caller needs the difference anyway."""

    @staticmethod
    def forward(ctx, a, diff):
        ctx.save_for_backward(diff)
        ctx.a_dtype = a.dtype
        return diff.square().sum()  # a cascade sum: torch's vector_norm and BLAS dot drift ~1e-4 here

    @staticmethod
    def backward(ctx, g):
        diff, = ctx.saved_tensors
        return (diff * (2 * g)).to(ctx.a_dtype), None


def _loss_precision(x: Tensor) -> Tensor:
    """x in at least float32 (losses of bf16 / fp16 runs are summed in float32; float64 stays)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _squared_error(a: Tensor, target: Tensor | None, diff: Tensor) -> Tensor:
    """sum((a - target)^2) in float32 or wider, differentiable in a (and in target when it needs a gradient)."""
    if target is not None and target.requires_grad:
        return F.mse_loss(_loss_precision(a), _loss_precision(target), reduction="sum")
    return _SquaredError.apply(a, diff)


def _centered_sq_sum(x: Tensor) -> Tensor:
    """sum over rows and columns of (x - mean over rows)^2, in float32 or wider like the losses."""
    xf = _loss_precision(x)
    return F.mse_loss(xf, xf.mean(0, keepdim=True).expand_as(xf), reduction="sum")


def _all_finite(x: Tensor) -> bool:
    """torch.isfinite(x).all(), mostly as one reduction: a NaN/inf makes the sum non-finite; only a
    non-finite sum (NaN/inf present, or an overflow of finite values) pays the exact check."""
    if x.is_floating_point() and bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


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


# --------------------------------------------------------------------------- the SAE

ARCHITECTURES: dict[str, type] = {}


def register(name: str):
    """Class decorator: make `build_sae` know the architecture `name`."""

    def deco(cls):
        ARCHITECTURES[name] = cls
        cls.architecture = name
        return cls

    return deco


def build_sae(cfg: SAEConfig, device=None) -> "SparseAutoencoder":
    """Instantiate the SAE class registered for cfg.architecture."""
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown SAE architecture {cfg.architecture!r}; available: {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[cfg.architecture](cfg, device=device)


class SparseAutoencoder(nn.Module):
    """Linear encoder -> sparse activation -> linear decoder with unit-norm decoder rows.

    Subclasses change only the activation: `select(pre)` picks which latents of each token may be
    non-zero (no gradient), `activate(pre_sel)` maps their pre-activations to latent values
    (differentiable). Everything else (sparse decode, AuxK, metrics, normalisation) is shared.
    """

    architecture = "base"
    sparse_kernels = True  # False: dense autograd reference path (tests, debugging)

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

    # ---- activation: the only part siblings override
    def select(self, pre: Tensor) -> Tensor:
        """Indices [N, m] of the latents each token may activate (no gradient)."""
        raise NotImplementedError

    def activate(self, pre_sel: Tensor) -> Tensor:
        """Latent values from the selected pre-activations (differentiable)."""
        return F.relu(pre_sel)

    # ---- plumbing
    @property
    def device(self) -> torch.device:
        return self.W_enc_T.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc_T.dtype

    def _check_input(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"SAE expects inputs with last dim d_in={self.cfg.d_in}, got shape {tuple(x.shape)}: "
                             "check the layer / model the activations come from.")
        if not _all_finite(x):
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

    def _pre(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        xc = x - self.b_dec if self.cfg.apply_b_dec_to_input else x
        if out is not None:
            return torch.addmm(self.b_enc, xc, self.W_enc_T.t(), out=out)
        return torch.addmm(self.b_enc, xc, self.W_enc_T.t())

    # ---- inference API (SAELens semantics: dense latents)
    def encode(self, x: Tensor) -> Tensor:
        """Raw activations [..., d_in] -> dense latents [..., d_sae] (same as sae_lens' encode)."""
        self._check_input(x)
        lead = x.shape[:-1]
        x2 = self._normalize(x.reshape(-1, self.cfg.d_in))
        pre = self._pre(x2)
        idx = self.select(pre.detach())
        vals = self.activate(pre.gather(1, idx))
        z = torch.zeros_like(pre).scatter(1, idx, vals)
        return z.reshape(*lead, self.cfg.d_sae)

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw activations [N, d_in] -> (values [N, m], indices [N, m]) of the active latents."""
        self._check_input(x)
        with torch.no_grad():
            pre = self._pre(self._normalize(x.reshape(-1, self.cfg.d_in)))
            idx = self.select(pre)
            return self.activate(pre.gather(1, idx)), idx

    def decode(self, latents: Tensor) -> Tensor:
        """Dense latents [..., d_sae] -> reconstruction [..., d_in] in the raw input space."""
        return self._denormalize(latents.to(self.dtype) @ self.W_dec + self.b_dec)

    # ---- training forward
    # AuxK runs on the dead columns as small dense matmuls (pre-activations [N, n_dead] masked to
    # each token's top k_aux) while n_dead <= aux_dense_ratio * k_aux; above that, as sparse slots
    # like the main top-k. On 2 CPU cores a dense multiply-add costs ~1/8 of a gathered one.
    aux_dense_ratio = 6.0

    def forward(self, x: Tensor, dead_mask: Tensor | None = None) -> SAEOutput:
        """One training forward on x [N, d_in]; AuxK runs when dead_mask has any True."""
        self._check_input(x)
        if x.ndim != 2:
            x = x.reshape(-1, self.cfg.d_in)
        xn = self._normalize(x)
        with torch.no_grad():
            pre = self._pre(xn, out=self._pre_buffer(xn))  # the one dense matmul
            idx = self.select(pre)
            aux = self._dead_topk(pre, dead_mask)         # (dead, local, pre_dead) or None
        m = idx.shape[1]
        dense_aux = aux is not None and self.sparse_kernels and \
            aux[0].numel() <= self.aux_dense_ratio * aux[2].shape[1]
        aux_idx = None
        if aux is not None and not dense_aux:
            dead, local, _ = aux
            aux_idx = dead.expand(idx.shape[0], -1) if local is None else dead[local]
        aux_vals = e_hat = None
        if not self.sparse_kernels:
            pre_sel = self._pre(xn).gather(1, idx if aux_idx is None else torch.cat([idx, aux_idx], 1))
            del pre
            vals = self.activate(pre_sel[:, :m])
            decoded = [self._dense_decode(vals, idx)]
            if aux_idx is not None:
                decoded.append(self._dense_decode(F.relu(pre_sel[:, m:]), aux_idx))
                e_hat = decoded[1]
        elif dense_aux:
            dead, local, top = aux
            plan = LatentPlan(idx, self.cfg.d_sae)
            # z [N, n_dead]: relu of each token's top-k_aux dead pre-activations, zero elsewhere
            pre_sel, z = SparseEncodeSelect.apply(xn, self.b_dec, self.W_enc_T, self.b_enc, idx,
                                                  pre.gather(1, idx), self.cfg.apply_b_dec_to_input,
                                                  plan, top, local, dead)
            del pre
            vals = self.activate(pre_sel)
            decoded = sparse_decode(vals, idx, self.W_dec, plan=plan, dense=(z, dead))
            e_hat = decoded[1]
        else:
            all_idx = idx if aux_idx is None else torch.cat([idx, aux_idx], dim=1)
            splits = (m,) if aux_idx is None else (m, aux_idx.shape[1])
            plan = LatentPlan(all_idx, self.cfg.d_sae)
            pre_sel = SparseEncodeSelect.apply(xn, self.b_dec, self.W_enc_T, self.b_enc, all_idx,
                                               pre.gather(1, all_idx), self.cfg.apply_b_dec_to_input, plan)
            del pre
            vals = self.activate(pre_sel[:, :m])
            if aux_idx is not None:
                aux_vals = F.relu(pre_sel[:, m:])
                decoded = sparse_decode(torch.cat([vals, aux_vals], 1), all_idx, self.W_dec, splits, plan)
                e_hat = decoded[1]
            else:
                decoded = sparse_decode(vals, idx, self.W_dec, splits, plan)
        x_hat = decoded[0] + self.b_dec

        with torch.no_grad():
            resid = _loss_precision(x_hat) - _loss_precision(xn)  # the reconstruction error, one pass; reused by AuxK
            total_var = _centered_sq_sum(xn)
        sq = _squared_error(x_hat, xn, resid)
        fvu = sq / total_var.clamp_min(1e-12)
        mse = sq / xn.shape[0]

        if e_hat is not None:  # AuxK predicts the residual e = x - x_hat (a target: no gradient)
            with torch.no_grad():
                e_var = _centered_sq_sum(resid)  # e = -resid: the same spread
                aux_diff = _loss_precision(e_hat) + resid  # e_hat - e
            aux = _squared_error(e_hat, None, aux_diff) / e_var.clamp_min(1e-12)
            aux_loss = self.cfg.aux_coef * aux
        else:
            aux_loss = fvu.new_zeros(())
        l0 = (vals > 0).sum(1).float().mean()
        return SAEOutput(self._denormalize(x_hat), vals, idx, fvu + aux_loss, mse.detach(),
                         aux_loss, fvu, l0.detach())

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

    def _dense_decode(self, vals: Tensor, idx: Tensor) -> Tensor:
        z = torch.zeros(vals.shape[0], self.cfg.d_sae, dtype=vals.dtype, device=vals.device).scatter(1, idx, vals)
        return z @ self.W_dec

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

    def _few_positive(self, pre_dead: Tensor) -> bool:
        """True when no token has more than k_aux positive dead pre-activations (on CPU, while AuxK
        stays dense): then relu of the whole dead block equals relu of each token's top k_aux, and
        the [N, n_dead] top-k can be skipped. Dead latents are dead because their pre-activations
        stay low, so real runs often take this path (a random dead mask, as in the bench, does not)."""
        if pre_dead.device.type != "cpu" or not self.sparse_kernels or \
                pre_dead.shape[1] > self.aux_dense_ratio * self.cfg.k_aux_eff or pre_dead.shape[0] == 0:
            return False
        return int((pre_dead > 0).sum(1).max()) <= self.cfg.k_aux_eff

    # ---- training utilities
    @torch.no_grad()
    def update_dead_tracking(self, latent_idx: Tensor, n_tokens: int, latent_vals: Tensor | None = None) -> Tensor:
        """Add n_tokens to every latent's tokens_since_fired, zero those that fired; -> dead mask.

        A latent fired when it is in latent_idx (with a positive value when latent_vals is given).
        """
        fired = latent_idx[latent_vals > 0] if latent_vals is not None else latent_idx.reshape(-1)
        self.tokens_since_fired += int(n_tokens)
        self.tokens_since_fired[fired.to(self.tokens_since_fired.device)] = 0
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


@register("topk")
class TopKSAE(SparseAutoencoder):
    """TopK activation (Gao et al. 2024): keep each token's k largest pre-activations, then ReLU."""

    def select(self, pre: Tensor) -> Tensor:
        return topk_indices(pre, self.cfg.k)
