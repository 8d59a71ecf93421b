"""The sparse training kernels behind the SAEs: custom autograd functions and their CPU tuning.

Training is sparse end to end: one dense encoder matmul picks the active latents, then decode
and every gradient touch only the selected latents per token (k, plus k_aux for AuxK). The
functions here do that; an SAE's `sparse_kernels = False` switches to a plain dense autograd
reference (used by the tests to check these gradients), which is also what a GPU runs under bf16
autocast, where tensor-core matmuls beat gathers (`SparseAutoencoder.use_sparse_kernels`).

- LatentPlan: the by-latent regrouping of a step's indices, shared by every sparse gradient.
- SparseEncodeSelect / SparseDecode: the encoder gather and the decoder, sparse both ways.
- topk_indices: an exact two-stage top-k, 1.5-2x torch.topk over wide rows on CPU.
- squared_error & co: the losses in float32 or wider, with one pass over the residual.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

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
        # a scatter-add, not bincount: CUDA's bincount reads the largest index back to the host (a sync a step)
        counts = torch.zeros(self.d_sae, dtype=torch.long, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))
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


def masked_dead_topk(pre: Tensor, dead_mask: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """AuxK's pick without reading anything on the host: (idx [N, k] of each row's k largest pre-activations
    among the latents dead_mask marks, the others masked to -inf; is_dead [N, k], False where a row's pick ran
    past its dead latents onto a live one; any_dead, 0-dim in pre's dtype, 0 when no latent is dead)."""
    dead_mask = dead_mask.to(pre.device)
    idx = pre.masked_fill(~dead_mask, float("-inf")).topk(min(k, pre.shape[1]), dim=1, sorted=False).indices
    return idx, dead_mask[idx], dead_mask.any().to(pre.dtype)


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


def loss_precision(x: Tensor) -> Tensor:
    """x in at least float32 (losses of bf16 / fp16 runs are summed in float32; float64 stays)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def squared_error(a: Tensor, target: Tensor | None, diff: Tensor) -> Tensor:
    """sum((a - target)^2) in float32 or wider, differentiable in a (and in target when it needs a gradient)."""
    if target is not None and target.requires_grad:
        return F.mse_loss(loss_precision(a), loss_precision(target), reduction="sum")
    return _SquaredError.apply(a, diff)


def centered_sq_sum(x: Tensor) -> Tensor:
    """sum over rows and columns of (x - mean over rows)^2, in float32 or wider like the losses."""
    xf = loss_precision(x)
    return F.mse_loss(xf, xf.mean(0, keepdim=True).expand_as(xf), reduction="sum")


def all_finite(x: Tensor) -> bool:
    """torch.isfinite(x).all(), mostly as one reduction: a NaN/inf makes the sum non-finite; only a
    non-finite sum (NaN/inf present, or an overflow of finite values) pays the exact check."""
    if x.is_floating_point() and bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())

