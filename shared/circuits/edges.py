"""Edge-level patching of a GPT-2-style transformer on AutoCircuit's factorized graph, through hooks.

The graph (Elhage et al. 2021's factorization, as AutoCircuit 1.0.1 builds it with separate Q/K/V):
sources are the embeddings ("embed"), each attention head's output ("L3.h2": z_h @ W_O[h], no bias)
and each MLP's output ("L3.mlp"); destinations are each head's query, key and value input
separately ("L3.h2.q"), each MLP's input ("L3.mlp") and the final residual ("logits", before the
final norm). Every source feeds every later destination (a head's own MLP included). Patching edge
s -> d replaces d's input by its current residual + (corrupt_s - current_s): the edge alone carries
the corrupt activation, every other edge what this forward computes. Constants (b_O, biases) sit
on no edge. Positions are all patched together.

Supported: GPT-2 architecture (transformers' GPT2LMHeadModel: `tiny:gpt2`, gpt2, gpt2-medium, ...).
A head's Q/K/V input differs per head, so the hook recomputes that head's q/k/v from the block's
ln_1 and c_attn weights on its own residual; another architecture needs the same recomputation for
its norm + q/k/v projections (separate q_proj/k_proj/v_proj, RoPE applied after them, GQA kv heads
shared between query heads) and its module names, hence `edge_graph` refuses others by name.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F

from ..model import hooks
from ..model.layout import decoder_layers, final_norm

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class EdgeGraph:
    """Sources, destinations and edges (dest, src) of one model; edge i is `edges[i]`."""

    n_layers: int
    n_heads: int
    srcs: list[str]
    dests: list[str]
    src_layer: list[int]   # AutoCircuit's layer count: embed 0, block b heads 2b+1, MLP 2b+2
    dest_layer: list[int]  # heads of block b 2b+1, its MLP 2b+2, logits 2n+1
    edges: list[tuple[int, int]]  # (dest index, src index), dest in forward order then src
    allowed: torch.Tensor = field(repr=False)  # [n_dest, n_src] bool: s feeds d
    edge_dest: torch.Tensor = field(repr=False, default=None)  # [n_edges] long: edges[i][0]
    edge_src: torch.Tensor = field(repr=False, default=None)   # [n_edges] long: edges[i][1]

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def names(self) -> list[tuple[str, str]]:
        """(source, target) id pairs, one per edge, in edge order."""
        return [(self.srcs[s], self.dests[d]) for d, s in self.edges]

    def index(self) -> dict[tuple[str, str], int]:
        return {name: i for i, name in enumerate(self.names())}

    def to_mask(self, patched: torch.Tensor) -> torch.Tensor:
        """[n_dest, n_src] float mask (1 = edge carries the corrupt value) from a bool/float [n_edges] vector."""
        patched = torch.as_tensor(patched)
        if patched.shape != (self.n_edges,):
            raise ValueError(f"patched must have one entry per edge ({self.n_edges}), got shape {tuple(patched.shape)}")
        mask = torch.zeros(len(self.dests), len(self.srcs))
        mask[self.edge_dest, self.edge_src] = patched.float().cpu()
        return mask

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        """The [n_edges] vector of a [n_dest, n_src] matrix (edge scores)."""
        return matrix[self.edge_dest.to(matrix.device), self.edge_src.to(matrix.device)]


def _check_gpt2(model) -> None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type != "gpt2":
        raise ValueError(f"edge patching supports GPT-2-architecture models (e.g. 'tiny:gpt2', 'gpt2'); got model_type "
                         f"{model_type!r}: other architectures need their own per-head q/k/v recomputation "
                         f"(see shared/circuits/edges.py)")


def edge_graph(model) -> EdgeGraph:
    """AutoCircuit's factorized edge graph (separate Q/K/V) of a GPT-2-architecture model."""
    _check_gpt2(model)
    n, h = model.config.n_layer, model.config.n_head
    srcs, src_layer = ["embed"], [0]
    for b in range(n):
        srcs += [f"L{b}.h{i}" for i in range(h)] + [f"L{b}.mlp"]
        src_layer += [2 * b + 1] * h + [2 * b + 2]
    dests, dest_layer = [], []
    for b in range(n):
        dests += [f"L{b}.h{i}.{x}" for x in QKV for i in range(h)] + [f"L{b}.mlp"]
        dest_layer += [2 * b + 1] * (3 * h) + [2 * b + 2]
    dests.append("logits")
    dest_layer.append(2 * n + 1)
    allowed = torch.tensor(src_layer)[None, :] < torch.tensor(dest_layer)[:, None]
    edges = [(d, s) for d in range(len(dests)) for s in range(len(srcs)) if allowed[d, s]]
    d, s = torch.tensor(edges).T
    return EdgeGraph(n, h, srcs, dests, src_layer, dest_layer, edges, allowed, d, s)


@dataclass
class _Run:
    """State of one hooked forward: sources as computed, the corrupt ones, the patch mask, probes."""

    graph: EdgeGraph
    corrupt: torch.Tensor | None  # [n_src, B, T, D]
    mask: torch.Tensor | None     # [n_dest, n_src] on the CPU (for the checks)
    probe: bool
    mask_dev: torch.Tensor | None = None  # the same on the model's device (for the sums)
    buffer: torch.Tensor | None = None  # [n_src, B, T, D]: source outputs as computed, detached, filled in src order
    filled: int = 0
    resid_pre: dict = field(default_factory=dict)
    probes: dict = field(default_factory=dict)   # first dest index -> zero tensor whose grad is d metric / d input

    def add(self, x: torch.Tensor, first: int, count: int) -> torch.Tensor:
        """x [B, T, D] -> [count, B, T, D]: each destination's input with its patched edges' deltas (and probe)."""
        rows = slice(first, first + count)
        out = x.unsqueeze(0).expand(count, *x.shape)
        if self.mask is not None and bool(self.mask[rows].any()):
            n = self.filled
            if self.mask_dev is None or self.mask_dev.device != x.device:
                self.mask_dev = self.mask.to(x.device)
            m = self.mask_dev[rows, :n].to(x.dtype)
            # sum_s m[d, s] (corrupt_s - current_s) as two matrix products (no [n, B, T, D] difference made)
            flat = lambda t: t[:n].reshape(n, -1).to(x.dtype)  # noqa: E731
            out = out + (m @ flat(self.corrupt) - m @ flat(self.buffer)).view(count, *x.shape)
        if self.probe:
            p = torch.zeros_like(out, requires_grad=True)
            self.probes[first] = p
            out = out + p
        return out

    def record(self, outputs: torch.Tensor) -> None:
        """Append sources' outputs [k, B, T, D] (in src order) to the buffer."""
        if self.buffer is None or self.buffer.shape[1:] != outputs.shape[1:]:
            self.buffer = outputs.new_empty(len(self.graph.srcs), *outputs.shape[1:])
        self.buffer[self.filled:self.filled + outputs.shape[0]] = outputs.detach()
        self.filled += outputs.shape[0]

    @property
    def current(self) -> torch.Tensor:
        """[n_src so far, B, T, D]: the sources this forward has computed."""
        return self.buffer[:self.filled]

    def touched(self, first: int, count: int) -> bool:
        return self.probe or (self.mask is not None and bool(self.mask[first:first + count].any()))


def _hooks(model, run: _Run):
    g = run.graph
    blocks = decoder_layers(model)
    inputs, outputs = {}, {}  # module -> edit of its first input / of its output (hooks.edit_module_*)
    h = g.n_heads
    for b, block in enumerate(blocks):
        qkv_first = b * (3 * h + 1)
        mlp_dest = qkv_first + 3 * h
        attn = block.attn

        def ln1_in(x, b=b):
            if b == 0:  # a new forward: the sources start again (the probes of the last one are kept)
                run.filled = 0
                run.record(x.unsqueeze(0))
            run.resid_pre[b] = x
            return x

        def c_attn_out(out, b=b, first=qkv_first, ln=block.ln_1, module=attn.c_attn):
            if not run.touched(first, 3 * h):
                return out
            x = run.add(run.resid_pre[b], first, 3 * h)  # [3H, B, T, D]: one residual per (q|k|v, head)
            x = F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)  # not ln(x): its hook records
            d = x.shape[-1]
            w = module.weight.view(d, 3, h, -1)
            new = torch.einsum("ihbtx,xihe->btihe", x.view(3, h, *x.shape[1:]), w)
            return new.reshape(out.shape) + module.bias

        def c_proj_in(z, module=attn.c_proj):
            res = torch.einsum("bthe,hex->hbtx", z.view(*z.shape[:2], h, -1), module.weight.view(h, -1, z.shape[-1]))
            run.record(res)
            return z

        def ln2_in(x, first=mlp_dest):
            return run.add(x, first, 1)[0] if run.touched(first, 1) else x

        def mlp_out(out):
            run.record(out.unsqueeze(0))
            return out

        inputs[block.ln_1] = ln1_in
        outputs[attn.c_attn] = c_attn_out
        inputs[attn.c_proj] = c_proj_in
        inputs[block.ln_2] = ln2_in
        outputs[block.mlp] = mlp_out

    end = len(g.dests) - 1

    def lnf_in(x):
        return run.add(x, end, 1)[0] if run.touched(end, 1) else x

    inputs[final_norm(model)] = lnf_in
    return inputs, outputs


@contextmanager
def edge_run(model, graph: EdgeGraph, *, corrupt: torch.Tensor | None = None, mask: torch.Tensor | None = None,
             probe: bool = False) -> Iterator[_Run]:
    """Within the block, forwards of `model` patch the edges where `mask` [n_dest, n_src] is 1 (corrupt values from
    `corrupt` [n_src, B, T, D], see `source_outputs`), record the sources (`run.current`) and, with probe=True,
    add a zero tensor to every destination input (`run.probes`) whose gradient is d output / d that input."""
    if mask is not None:
        if corrupt is None:
            raise ValueError("patching edges needs the corrupt run's source outputs (corrupt=source_outputs(...))")
        if mask.shape != graph.allowed.shape:
            raise ValueError(f"mask must be [n_dest, n_src] = {tuple(graph.allowed.shape)}, got {tuple(mask.shape)}")
        if bool((mask.cpu().bool() & ~graph.allowed).any()):
            raise ValueError("mask patches a (dest, src) pair that is no edge: a source feeds only later destinations")
    run = _Run(graph, corrupt, None if mask is None else mask.cpu(), probe)
    inputs, outputs = _hooks(model, run)
    with hooks.edit_module_inputs(inputs), hooks.edit_module_outputs(outputs):
        yield run


def source_outputs(model, graph: EdgeGraph, ids: torch.Tensor) -> torch.Tensor:
    """[n_src, B, T, D]: every source's output on an unpatched forward of `ids` (e.g. the corrupt prompts)."""
    with torch.no_grad(), edge_run(model, graph) as run:
        model(ids)
    return run.current.clone()


def patched_logits(model, graph: EdgeGraph, ids: torch.Tensor, corrupt: torch.Tensor, patched) -> torch.Tensor:
    """Logits [B, T, V] of `ids` with the edges where `patched` [n_edges] is True carrying `corrupt`'s values."""
    mask = graph.to_mask(patched)
    with torch.no_grad(), edge_run(model, graph, corrupt=corrupt, mask=mask):
        return model(ids).logits
