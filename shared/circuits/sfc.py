"""Sparse feature circuits (Marks et al. 2024, arXiv:2403.19647): SAE features and SAE error nodes at
two or more residual layers, their effects on a task metric, the edges between consecutive layers,
and how faithful and complete the thresholded circuit is under mean ablation.

At each SAE layer the residual is x = decode(f) + err: the latents f and the error err are the nodes
(err a d_model vector per position, contracted into one node per layer). Node effects are AtP,
grad m . (patch - clean), or IG with N steps (the paper's choice: gradients averaged along
clean -> patch at one layer, left Riemann, alpha = 0 the clean point). Edges u -> d between
consecutive SAE layers are sum_positions dm/dd . dd/du . Delta u, got with one backward pass per kept
downstream node (a vector-Jacobian product back to every upstream node at once), never by patching
pairs. With residual SAEs only, an edge carries everything the blocks between the two layers do.
Scores are averaged over prompts and summed over positions; the patch is the corrupt prompt.
"""
from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from .. import hooks
from ..models import d_model, model_device

NODE_METHODS = ("atp", "ig")
ERROR = "error"
_HOOK = re.compile(r"blocks\.(\d+)\.hook_resid_(post|pre)")


# ----------------------------------------------------------------------------- checks


def hook_layer(where: str) -> int | None:
    """The block whose output an SAE reads, from its source's SAELens hook name ("blocks.L.hook_resid_post"
    -> L, "blocks.L.hook_resid_pre" -> L - 1, as resid_pre of L is what block L - 1 writes); None if the
    source names no hook (a plain folder)."""
    hits = _HOOK.findall(str(where))
    if not hits:
        return None
    layer, kind = hits[-1]
    return int(layer) - (kind == "pre")


def check_saes(model, saes: Mapping[int, object], sources: Mapping[int, str] | None = None) -> list[int]:
    """The SAE layers in order, after checking there are >= 2, each reads this model's d_model and (where a
    source names its hook) the layer it is spliced at; a bad one raises a one-line ValueError."""
    if not isinstance(saes, Mapping) or len(saes) < 2:
        n = len(saes) if isinstance(saes, Mapping) else 0
        raise ValueError(f"saes has {n} layer(s): a sparse feature circuit needs SAEs at >= 2 residual layers "
                         "(give LAYERS two or more layers, one SAE each)")
    width = d_model(model)
    layers = hooks.resolve_layers(sorted(int(k) for k in saes), model, name="saes layer")
    if len(set(layers)) != len(layers) or layers != sorted(layers):
        raise ValueError(f"saes names the same layer twice ({sorted(saes)}); give one SAE per layer")
    for layer, key in zip(layers, sorted(saes, key=int)):
        d_in = saes[key].cfg.d_in
        if d_in != width:
            raise ValueError(f"the SAE for layer {layer} reads d_in={d_in} but this model's residual is "
                             f"d_model={width}: load the SAE trained for this model")
        read = hook_layer((sources or {}).get(key, ""))
        if read is not None and read != layer:
            raise ValueError(f"the SAE for layer {layer} was trained on block {read}'s output "
                             f"({(sources or {})[key]}): splice it at layer {read} or load the SAE for {layer}")
    return layers


def check_tau(name: str, value) -> float:
    """A threshold on |score|: a finite number >= 0 (0 keeps every node or edge with a non-zero score)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} = {value!r}: must be a finite number >= 0 (a threshold on |effect| in metric "
                         "units, e.g. 0.1 for nodes, 0.01 for edges)")
    return float(value)


# ----------------------------------------------------------------------------- node ids


def node_id(layer: int, index: int | str) -> str:
    """ "L3.f2503" for latent 2503 of layer 3's SAE, "L3.error" for its error node."""
    return f"L{layer}.{ERROR}" if index == ERROR else f"L{layer}.f{int(index)}"


def parse_node(nid: str) -> tuple[int, int | str]:
    """(layer, latent index or "error") of a node id."""
    m = re.fullmatch(r"L(\d+)\.(?:f(\d+)|(error))", nid)
    if not m:
        raise ValueError(f"node id {nid!r} is not 'L<layer>.f<latent>' or 'L<layer>.error'")
    return int(m[1]), (ERROR if m[3] else int(m[2]))


# ----------------------------------------------------------------------------- the splice
# TODO(merge into circuits.nodes): a minimal SAE splice kept here until circ-core's lands.


class _Stop(Exception):
    """Ends a forward once the deepest layer a computation needs has been read."""


def _encode(sae, h: Tensor) -> tuple[Tensor, Tensor]:
    """(latents f [.., d_sae], error e [.., d_model]) with h = decode(f) + e exactly."""
    f = sae.encode(h)
    return f, h - sae.decode(f).to(h.dtype)


@contextmanager
def splice(model, edits: Mapping[int, Callable[[Tensor], Tensor]], stop_at: int | None = None) -> Iterator[None]:
    """Within the block, layer L's residual h becomes edits[L](h); a forward ends (silently) after layer
    stop_at's edit when given."""
    def wrap(layer, fn):
        def edit(h):
            out = fn(h)
            if layer == stop_at:
                raise _Stop
            return out
        return edit

    with hooks.edit_residual(model, {layer: wrap(layer, fn) for layer, fn in edits.items()}):
        try:
            yield
        except _Stop:
            pass


# ----------------------------------------------------------------------------- node values and gradients


@dataclass
class LayerNodes:
    """One SAE layer's nodes on the task: clean values, patch - clean deltas, and the metric's gradient
    (AtP: at clean; IG: averaged along the path), each [n, T, d_sae] for latents, [n, T, d_model] for error."""

    layer: int
    f: Tensor
    e: Tensor
    df: Tensor
    de: Tensor
    gf: Tensor | None = None
    ge: Tensor | None = None

    def scores(self) -> tuple[Tensor, float]:
        """(each latent's effect [d_sae], the error node's effect): sum over positions, mean over prompts."""
        n = self.f.shape[0]
        feat = (self.gf * self.df).sum((0, 1)) / n
        err = float((self.ge * self.de).sum()) / n
        return feat, err


@torch.no_grad()
def layer_values(model, saes: Mapping[int, object], ids: Tensor) -> dict[int, tuple[Tensor, Tensor]]:
    """{layer: (latents, error)} of one forward over ids (no gradient)."""
    layers = sorted(saes)
    with hooks.read_residuals(model, layers, stop_after_deepest=True) as acts:
        model(ids.to(model_device(model)))
    return {L: _encode(saes[L], acts[L].float()) for L in layers}


def _metric_sum(model, ids: Tensor, pairs, metric) -> Tensor:
    logits = model(ids.to(model_device(model))).logits
    return metric(logits, pairs).sum()


def atp_grads(model, saes: Mapping[int, object], nodes: Mapping[int, LayerNodes], pairs, metric) -> None:
    """Fill each layer's gf / ge with dm/df and dm/de at the clean run (one backward for every layer): the
    forward is unchanged and the gradient passes each splice as through the residual, so an upstream
    node's gradient holds every downstream path."""
    leaves: dict[int, tuple[Tensor, Tensor]] = {}

    def edit(layer):
        def fn(h):
            f = nodes[layer].f.detach().clone().requires_grad_(True)
            e = nodes[layer].e.detach().clone().requires_grad_(True)
            leaves[layer] = (f, e)
            x_hat = saes[layer].decode(f).to(h.dtype)
            return h + (x_hat - x_hat.detach()) + (e - e.detach()).to(h.dtype)
        return fn

    with torch.enable_grad(), splice(model, {L: edit(L) for L in nodes}):
        m = _metric_sum(model, pairs.clean_ids, pairs, metric)
        flat = [t for L in nodes for t in leaves[L]]
        grads = torch.autograd.grad(m, flat, allow_unused=True)
    for i, L in enumerate(nodes):
        gf, ge = grads[2 * i], grads[2 * i + 1]
        nodes[L].gf = torch.zeros_like(nodes[L].f) if gf is None else gf
        nodes[L].ge = torch.zeros_like(nodes[L].e) if ge is None else ge


def ig_grads(model, saes: Mapping[int, object], nodes: Mapping[int, LayerNodes], pairs, metric, steps: int = 10) -> None:
    """Fill gf / ge with integrated-gradient averages: for each layer alone, the latents and error at
    clean + alpha (patch - clean), alpha = 0, 1/N, ..., (N-1)/N (the paper's left Riemann sum), the
    other layers running as the model does; N forwards and backwards per layer."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"ig_steps = {steps!r}: must be a whole number >= 1 (the paper uses 10)")
    for L, node in nodes.items():
        gf, ge = torch.zeros_like(node.f), torch.zeros_like(node.e)
        for step in range(steps):
            alpha = step / steps
            f = (node.f + alpha * node.df).detach().requires_grad_(True)
            e = (node.e + alpha * node.de).detach().requires_grad_(True)
            with torch.enable_grad(), splice(model, {L: lambda h, f=f, e=e, L=L: saes[L].decode(f).to(h.dtype)
                                                     + e.to(h.dtype)}):
                m = _metric_sum(model, pairs.clean_ids, pairs, metric)
                g = torch.autograd.grad(m, [f, e], allow_unused=True)
            gf += g[0] if g[0] is not None else 0
            ge += g[1] if g[1] is not None else 0
        node.gf, node.ge = gf / steps, ge / steps


def task_nodes(model, saes: Mapping[int, object], pairs, metric, *, method: str = "ig",
               ig_steps: int = 10) -> dict[int, LayerNodes]:
    """Every SAE layer's nodes on the task (clean values, corrupt - clean deltas) with method's gradients."""
    if method not in NODE_METHODS:
        raise ValueError(f"method = {method!r}: use one of {NODE_METHODS} ('ig' as the paper, 'atp' the fast "
                         "first-order one)")
    clean = layer_values(model, saes, pairs.clean_ids)
    corrupt = layer_values(model, saes, pairs.corrupt_ids)
    nodes = {L: LayerNodes(L, clean[L][0], clean[L][1], corrupt[L][0] - clean[L][0], corrupt[L][1] - clean[L][1])
             for L in sorted(saes)}
    if method == "atp":
        atp_grads(model, saes, nodes, pairs, metric)
    else:
        ig_grads(model, saes, nodes, pairs, metric, ig_steps)
    return nodes


# ----------------------------------------------------------------------------- edges


def edge_scores(model, saes: Mapping[int, object], up: LayerNodes, down: LayerNodes, ids: Tensor,
                down_latents: Sequence[int], down_error: bool = True) -> tuple[Tensor, Tensor]:
    """Edge effects from every node of SAE layer up.layer to the chosen nodes of down.layer (a later one):
    (latent rows [len(down_latents) + down_error, d_sae], error column [same]) where row r, column i is
    sum_positions dm/dd_r . dd_r/du_i . Delta u_i averaged over prompts, d_r the r-th chosen downstream
    node (its error node last). One backward pass per downstream node: the gradient-weighted downstream
    value (dm/dd . d, the error's contracted over d_model) back-propagated to all upstream nodes."""
    if down.layer <= up.layer:
        raise ValueError(f"edges run from an earlier layer to a later one, got {up.layer} -> {down.layer}")
    f_u = up.f.detach().clone().requires_grad_(True)
    e_u = up.e.detach().clone().requires_grad_(True)
    held: dict[str, Tensor] = {}

    def read_down(h):
        held["f"], held["e"] = _encode(saes[down.layer], h.float())
        return h

    edits = {up.layer: lambda h: saes[up.layer].decode(f_u).to(h.dtype) + e_u.to(h.dtype), down.layer: read_down}
    n = up.f.shape[0]
    rows_f, rows_e = [], []
    with torch.enable_grad():
        with splice(model, edits, stop_at=down.layer):
            model(ids.to(model_device(model)))
        targets = [(down.gf[..., j] * held["f"][..., j]).sum() for j in down_latents]
        if down_error:
            targets.append((down.ge * held["e"]).sum())
        for r, target in enumerate(targets):
            g_f, g_e = torch.autograd.grad(target, [f_u, e_u], retain_graph=r < len(targets) - 1, allow_unused=True)
            rows_f.append((g_f * up.df).sum((0, 1)) / n if g_f is not None else torch.zeros_like(up.df[0, 0]))
            rows_e.append((g_e * up.de).sum() / n if g_e is not None else up.de.new_zeros(()))
    if not rows_f:
        return up.df.new_zeros(0, up.df.shape[-1]), up.de.new_zeros(0)
    return torch.stack(rows_f).detach(), torch.stack(rows_e).detach()


# ----------------------------------------------------------------------------- the circuit


@dataclass
class FeatureCircuit:
    """A thresholded sparse feature circuit: kept nodes and edges in CircuitData's shape, plus every
    active node's score (the ranking the faithfulness curve sweeps)."""

    layers: list[int]
    nodes: list[dict]
    edges: list[dict]
    scores: dict[str, float]  # every node with a non-zero score, and every error node
    tau_node: float
    tau_edge: float
    method: str
    prompts_n: int
    meta: dict = field(default_factory=dict)

    def ranking(self) -> list[str]:
        """Every scored node id, largest |score| first (ties by id, so the order is reproducible)."""
        return sorted(self.scores, key=lambda k: (-abs(self.scores[k]), k))

    def circuit_data(self, **meta) -> dict:
        """The CircuitData dict (circuit.json's shape)."""
        return {"nodes": self.nodes, "edges": self.edges, "prompts_n": self.prompts_n, "tau_node": self.tau_node,
                "tau_edge": self.tau_edge, "method": "atp-ig" if self.method == "ig" else "atp",
                **self.meta, **meta}


def _node(layer: int, index, score: float, names: Mapping[str, str] | None) -> dict:
    nid = node_id(layer, index)
    out = {"id": nid, "layer": f"L{layer}", "score": float(score), "kind": ERROR if index == ERROR else "feature"}
    if names and nid in names:
        out["name"] = names[nid]
    return out


def sparse_feature_circuit(model, saes: Mapping[int, object], pairs, metric: Callable, *, tau_node: float = 0.1,
                           tau_edge: float = 0.01, method: str = "ig", ig_steps: int = 10,
                           sources: Mapping[int, str] | None = None, names: Mapping[str, str] | None = None,
                           nodes: Mapping[int, LayerNodes] | None = None) -> FeatureCircuit:
    """The Marks et al. circuit for `pairs` (clean_ids / corrupt_ids [n, T]) under metric(logits, pairs) -> [n]:
    node effects by `method`, nodes with |effect| > tau_node kept (error nodes too), edges between kept nodes
    of consecutive SAE layers with |effect| > tau_edge. `nodes` reuses a task_nodes result."""
    layers = check_saes(model, saes, sources)
    tau_node, tau_edge = check_tau("tau_node", tau_node), check_tau("tau_edge", tau_edge)
    saes = {L: saes[k] for L, k in zip(layers, sorted(saes, key=int))}
    if nodes is None:
        nodes = task_nodes(model, saes, pairs, metric, method=method, ig_steps=ig_steps)
    scores: dict[str, float] = {}
    kept: dict[int, list[int]] = {}
    keep_err: dict[int, bool] = {}
    out_nodes: list[dict] = []
    for L in layers:
        feat, err = nodes[L].scores()
        active = torch.nonzero(feat).flatten().tolist()
        scores.update({node_id(L, i): float(feat[i]) for i in active})
        scores[node_id(L, ERROR)] = err
        kept[L] = [i for i in sorted(active, key=lambda i: -abs(float(feat[i]))) if abs(float(feat[i])) > tau_node]
        keep_err[L] = abs(err) > tau_node
        out_nodes += [_node(L, i, feat[i], names) for i in kept[L]]
        if keep_err[L]:
            out_nodes.append(_node(L, ERROR, err, names))
    out_edges: list[dict] = []
    for lu, ld in zip(layers, layers[1:]):
        rows_f, rows_e = edge_scores(model, saes, nodes[lu], nodes[ld], pairs.clean_ids, kept[ld], keep_err[ld])
        targets = [node_id(ld, j) for j in kept[ld]] + ([node_id(ld, ERROR)] if keep_err[ld] else [])
        for r, tgt in enumerate(targets):
            cells = [(node_id(lu, i), float(rows_f[r, i])) for i in kept[lu]]
            if keep_err[lu]:
                cells.append((node_id(lu, ERROR), float(rows_e[r])))
            out_edges += [{"source": s, "target": tgt, "score": v} for s, v in cells if abs(v) > tau_edge]
    return FeatureCircuit(layers, out_nodes, out_edges, scores, tau_node, tau_edge, method, int(pairs.clean_ids.shape[0]),
                          meta={"ig_steps": ig_steps} if method == "ig" else {})


# ----------------------------------------------------------------------------- faithfulness and completeness


@torch.no_grad()
def mean_values(model, saes: Mapping[int, object], ids: Tensor) -> dict[int, tuple[Tensor, Tensor]]:
    """{layer: (mean latents [T, d_sae], mean error [T, d_model])} over the prompts, per position: what a
    mean-ablated node is set to."""
    return {L: (f.mean(0), e.mean(0)) for L, (f, e) in layer_values(model, saes, ids).items()}


@torch.no_grad()
def ablated_metric(model, saes: Mapping[int, object], pairs, metric, circuit: set[str] | None,
                   means: Mapping[int, tuple[Tensor, Tensor]], *, complement: bool = False) -> float:
    """The mean metric on the clean prompts with every node outside `circuit` mean-ablated at every SAE
    layer (complement=True: the circuit's nodes ablated, every other kept; circuit=None: the unablated
    model). A kept latent takes the value its SAE reads from the residual as it arrives (upstream
    ablations included), so later layers see the edited residual."""
    ids = pairs.clean_ids.to(model_device(model))
    if circuit is None:
        return float(metric(model(ids).logits, pairs).float().mean())
    members = [parse_node(nid) for nid in circuit]
    edits = {}
    for L, sae in saes.items():
        mean_f, mean_e = means[L]
        mask = torch.full((mean_f.shape[-1],), complement, dtype=torch.bool, device=mean_f.device)
        idx = [i for lay, i in members if lay == L and i != ERROR]
        if idx:
            mask[idx] = not complement
        keep_e = (node_id(L, ERROR) in circuit) != complement

        def edit(h, sae=sae, mask=mask, keep_e=keep_e, mean_f=mean_f, mean_e=mean_e):
            f, e = _encode(sae, h.float())
            f = torch.where(mask, f, mean_f.to(f.dtype))
            e = e if keep_e else mean_e.to(e.dtype).expand_as(e)
            return sae.decode(f).to(h.dtype) + e.to(h.dtype)

        edits[L] = edit
    with hooks.edit_residual(model, edits):
        return float(metric(model(ids).logits, pairs).float().mean())


def default_counts(n: int) -> list[int]:
    """0, 1, 2, 4, 8, ... and n: the node counts a curve sweeps."""
    out, k = [0], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n] if n else out


def faithfulness_curve(model, saes: Mapping[int, object], pairs, metric, ranking: Sequence[str],
                       counts: Sequence[int] | None = None) -> dict:
    """Faithfulness F(C) = (m(C) - m(empty)) / (m(M) - m(empty)) of the top-k nodes of `ranking` alone and
    completeness F(M minus C) of the model without them, for each k in counts, under mean ablation over
    the clean prompts. m(M): the whole model; m(empty): every node at each SAE layer mean-ablated."""
    saes = dict(sorted(saes.items()))
    means = mean_values(model, saes, pairs.clean_ids)
    m_full = ablated_metric(model, saes, pairs, metric, None, means)
    m_empty = ablated_metric(model, saes, pairs, metric, set(), means)
    span = m_full - m_empty
    if abs(span) < 1e-8:
        raise ValueError(f"the whole model's metric ({m_full:.4g}) equals the all-ablated one ({m_empty:.4g}): "
                         "faithfulness is undefined on this task; use more or other prompts")
    counts = default_counts(len(ranking)) if counts is None else sorted({min(int(k), len(ranking)) for k in counts})
    rows = []
    for k in counts:
        circuit = set(ranking[:k])
        rows.append({"n_nodes": k,
                     "faithfulness": (ablated_metric(model, saes, pairs, metric, circuit, means) - m_empty) / span,
                     "completeness": (ablated_metric(model, saes, pairs, metric, circuit, means, complement=True) - m_empty)
                     / span})
    return {"metric_full": m_full, "metric_empty": m_empty, "rows": rows}
