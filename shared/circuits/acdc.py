"""Edge-level circuit discovery: EAP (Syed et al. 2023) and ACDC (Conmy et al. 2023), plus faithfulness curves.

All three run on edges.py's graph with corrupt-run (resample) ablation at every position.
EAP: one corrupt forward, one clean forward and one backward; an edge's score is the first-order
estimate of the metric change when that edge alone carries the corrupt value,
grad(mean metric wrt the destination's input) . (corrupt_src - clean_src), summed over positions.
(AutoCircuit's EAP is minus this for logit_diff: it differentiates the loss -mean logit_diff.)
ACDC: from the output backwards (destinations by descending layer), patch each edge in turn with
an exact forward and remove it for good when the faithfulness target moves by less than tau:
KL(clean || circuit) at the last position for metric "kl" (AutoCircuit's target), else
|mean metric(circuit) - mean metric(clean)|.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.layout import d_model, model_device
from ..runtime import single_thread
from .edges import EdgeGraph, edge_graph, edge_run, patched_logits, source_outputs
from .metrics import check_tau, get_metric, gradient_metric, kl_to_clean
from .tasks import PromptPairs

BUDGETS = (2, 5, 10, 20, 50, 100, 200)


def _graph(model, graph):
    return graph if graph is not None else edge_graph(model)


def _small_on_cpu(model):
    """One torch thread for a small model on the CPU: ACDC's thousands of tiny forwards only lose to
    thread overhead (and thrash a shared CPU)."""
    return single_thread(model_device(model).type == "cpu" and d_model(model) <= 256)


def eap_scores(model, pairs: PromptPairs, metric: str = "logit_diff", *, graph: EdgeGraph | None = None,
               batch_size: int | None = None) -> torch.Tensor:
    """[n_edges] EAP scores: the estimated change of the mean `metric` when each edge alone is patched."""
    fn = gradient_metric(metric)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    g = _graph(model, graph)
    pairs = pairs.to(model_device(model))
    n = len(pairs)
    step = batch_size or n
    total = torch.zeros(len(g.dests), len(g.srcs), device=model_device(model))
    for lo in range(0, n, step):
        part = pairs.subset(slice(lo, lo + step))
        corrupt = source_outputs(model, g, part.corrupt_ids)
        with torch.enable_grad(), edge_run(model, g, probe=True) as run:
            logits = model(part.clean_ids).logits
            value = fn(logits, part).float().sum() / n
            firsts = sorted(run.probes)
            grads = torch.autograd.grad(value, [run.probes[f] for f in firsts])
        delta = corrupt - run.current  # [n_src, B, T, D]
        for first, grad in zip(firsts, grads):
            total[first:first + grad.shape[0]] += torch.einsum("dbtx,sbtx->ds", grad.float(), delta.float())
    return g.from_matrix(total).cpu()  # from_matrix reads the allowed cells only


@dataclass
class AcdcResult:
    """ACDC's outcome: kept [n_edges] bool, delta [n_edges] (target change when the edge was tried), the order tried."""

    graph: EdgeGraph
    kept: torch.Tensor
    delta: torch.Tensor
    order: list[int]
    tau: float
    metric: str
    target: float  # the faithfulness target of the final circuit

    @property
    def scores(self) -> torch.Tensor:
        """A ranking for faithfulness curves (by |score|): kept edges first, by their step, then removed ones by
        theirs. Not effect sizes: `delta` holds the measured steps."""
        removed = self.delta[~self.kept].abs()
        lift = (float(removed.max()) if removed.numel() else 0.0) + 1.0
        return torch.where(self.kept, self.delta.abs() + lift, self.delta.abs())

    def edge_names(self) -> list[tuple[str, str]]:
        names = self.graph.names()
        return [names[i] for i in range(len(names)) if self.kept[i]]


def reverse_topological(graph: EdgeGraph) -> list[int]:
    """Edge indices from the output backwards: destinations by descending layer (then index), sources descending."""
    return sorted(range(graph.n_edges), key=lambda i: (-graph.dest_layer[graph.edges[i][0]], -graph.edges[i][0],
                                                       -graph.edges[i][1]))


def _target(metric: str, fn, logits, pairs, clean_logits, clean_value) -> float:
    if metric == "kl":
        return float(kl_to_clean(logits, clean_logits).mean())
    return abs(float(fn(logits, pairs).float().mean()) - clean_value)


def acdc(model, pairs: PromptPairs, tau: float, metric: str = "kl", *, graph: EdgeGraph | None = None,
         order: list[int] | None = None) -> AcdcResult:
    """ACDC: try each edge in `order` (default reverse_topological), remove it when the target moves by < tau."""
    tau = check_tau("tau", tau)
    fn = get_metric(metric)
    g = _graph(model, graph)
    order = reverse_topological(g) if order is None else list(order)
    if sorted(order) != list(range(g.n_edges)):
        raise ValueError(f"order must list every edge index 0..{g.n_edges - 1} once")
    pairs = pairs.to(model_device(model))
    corrupt = source_outputs(model, g, pairs.corrupt_ids)
    with torch.no_grad():
        clean_logits = model(pairs.clean_ids).logits
    clean_value = float(fn(clean_logits, pairs, clean_logits).float().mean())
    patched = torch.zeros(g.n_edges, dtype=torch.bool)
    delta = torch.zeros(g.n_edges)
    prev = 0.0
    with _small_on_cpu(model):
        for i in order:
            patched[i] = True
            now = _target(metric, fn, patched_logits(model, g, pairs.clean_ids, corrupt, patched), pairs,
                          clean_logits, clean_value)
            delta[i] = now - prev
            if now - prev < tau:
                prev = now
            else:
                patched[i] = False
    return AcdcResult(g, ~patched, delta, order, tau, metric, prev)


def faithfulness_curve(model, pairs: PromptPairs, scores: torch.Tensor, budgets=BUDGETS, metric: str = "logit_diff",
                       *, graph: EdgeGraph | None = None) -> dict:
    """The metric of the circuit made of the top-k edges by |score| (all other edges patched), for each budget k.

    faithfulness = (m_k - m_empty) / (m_clean - m_empty): 1 recovers the full model, 0 the corrupt run
    (for "kl": 1 - KL_k / KL_empty). Several rankings: `faithfulness_curves`.
    """
    return faithfulness_curves(model, pairs, {"scores": scores}, budgets, metric, graph=graph)["scores"]


def faithfulness_curves(model, pairs: PromptPairs, rankings: dict[str, torch.Tensor], budgets=BUDGETS,
                        metric: str = "logit_diff", *, graph: EdgeGraph | None = None) -> dict[str, dict]:
    """`faithfulness_curve` for each named edge ranking {name: [n_edges] scores}, sharing one corrupt
    run, one clean run and the two ends (the full model, no edges) between them -> {name: curve}."""
    fn = get_metric(metric)
    g = _graph(model, graph)
    rankings = {name: torch.as_tensor(scores).float().cpu() for name, scores in rankings.items()}
    for name, scores in rankings.items():
        if scores.shape != (g.n_edges,):
            raise ValueError(f"scores must have one entry per edge ({g.n_edges}), got shape {tuple(scores.shape)}"
                             f" for {name!r}")
    budgets = [int(k) for k in budgets]
    if any(k < 0 for k in budgets):
        raise ValueError(f"budgets must be edge counts >= 0, got {budgets}")
    pairs = pairs.to(model_device(model))
    corrupt = source_outputs(model, g, pairs.corrupt_ids)
    with torch.no_grad():
        clean_logits = model(pairs.clean_ids).logits

    def value(keep: torch.Tensor) -> float:
        logits = patched_logits(model, g, pairs.clean_ids, corrupt, ~keep)
        return float(fn(logits, pairs, clean_logits).float().mean())

    curves = {}
    with _small_on_cpu(model):
        full, empty = value(torch.ones(g.n_edges, dtype=torch.bool)), value(torch.zeros(g.n_edges, dtype=torch.bool))
        span = full - empty
        for name, scores in rankings.items():
            rank = torch.argsort(scores.abs(), descending=True, stable=True)
            values = []
            for k in budgets:
                keep = torch.zeros(g.n_edges, dtype=torch.bool)
                keep[rank[:min(k, g.n_edges)]] = True
                values.append(value(keep))
            faith = [(1 - v / empty if empty else float("nan")) if metric == "kl" else
                     ((v - empty) / span if span else float("nan")) for v in values]
            curves[name] = {"budgets": budgets, "metric": metric, "values": values, "faithfulness": faith,
                            "full": full, "empty": empty, "n_edges": g.n_edges}
    return curves


def edge_scores_from_nodes(graph: EdgeGraph, node_scores: dict[str, float]) -> torch.Tensor:
    """[n_edges] edge ranking from node scores (e.g. AtP on heads and MLPs): min(|score(src)|, |score(dest)|).

    A node-level baseline on the same edge budgets: an edge ranks as high as its weaker end. The
    embeddings and the logits count as always in; a q/k/v input takes its head's score unless the
    node scores hold it ("L3.h2.q").
    """
    def node(name: str) -> float:
        if name in ("embed", "logits"):
            return math.inf
        if name in node_scores:
            return abs(float(node_scores[name]))
        head = name.rsplit(".", 1)[0]
        if name.endswith((".q", ".k", ".v")) and head in node_scores:
            return abs(float(node_scores[head]))
        raise ValueError(f"node_scores has no score for {name!r}; score every head and MLP (e.g. atp over "
                         f"Nodes(model, heads='all', mlps='all'))")

    out = torch.tensor([min(node(s), node(d)) for s, d in graph.names()])
    return out.nan_to_num(posinf=0.0)  # embed -> logits alone: no node to rank it by


def _kind(node: str) -> tuple[str, str]:
    """(kind, layer) of an edge-graph node id for circuit.json."""
    if node in ("embed", "logits"):
        return node, node
    layer, rest = node.split(".", 1)
    return ("mlp" if rest == "mlp" else rest[-1] if rest.count(".") else "head"), layer


def circuit_entries(graph: EdgeGraph, scores: torch.Tensor, keep: torch.Tensor) -> tuple[list[dict], list[dict]]:
    """(nodes, edges) of circuit.json for the kept edges: a q/k/v input is its own node ("L3.h2.q", kind "q")
    joined to its head by an edge of score 0 when the head's output is in the circuit too."""
    names = graph.names()
    edges = [{"source": s, "target": d, "score": float(scores[i])} for i, (s, d) in enumerate(names) if keep[i]]
    weight: dict[str, float] = {}
    for e in edges:
        for end in (e["source"], e["target"]):
            weight[end] = max(weight.get(end, 0.0), abs(e["score"]))
    for node in list(weight):
        head = node.rsplit(".", 1)[0]
        if node.endswith((".q", ".k", ".v")) and head in weight:
            edges.append({"source": node, "target": head, "score": 0.0})
    nodes = [{"id": n, "layer": _kind(n)[1], "score": w, "kind": _kind(n)[0]} for n, w in weight.items()]
    return nodes, edges
