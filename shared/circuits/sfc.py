"""Sparse feature circuits (Marks et al. 2024, arXiv:2403.19647): SAE features and SAE error nodes at
two or more residual layers, their effects on a task metric, the edges between consecutive layers,
and how faithful and complete the thresholded circuit is under mean ablation.

At each SAE layer the residual is x = decode(f) + err: the latents f and the error err are the nodes
(err a d_model vector per position, contracted into one node per layer). Node effects are AtP,
grad m . (patch - clean), or IG with N steps (the paper's choice: gradients averaged along
clean -> patch at one layer, left Riemann, alpha = 0 the clean point). Edges u -> d between
consecutive SAE layers are sum_positions dm/dd . dd/du . Delta u, got with one backward pass per kept
downstream node (a vector-Jacobian product back to every upstream node at once), never by patching
pairs; as in the paper's code only the downstream (prompt, position) instances whose own effect passes
tau_node send edges. With residual SAEs only, an edge carries everything the blocks between the two layers do.
Scores are averaged over prompts and summed over positions; the patch is the corrupt prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import Tensor

from ..model import hooks
from .attribution import atp_gradients, ig_gradients
from .circuit_json import node_entries
from .metrics import check_tau, gradient_metric
from .nodes import Component, Nodes, check_sae_layer
from .patching import faithfulness, faithfulness_ends, patch_values
from .tasks import PromptPairs

NODE_METHODS = ("atp", "ig")


# ----------------------------------------------------------------------------- checks


def check_saes(model, saes: Mapping[int, object], sae_ids: Mapping[int, str] | None = None, *,
               centre_sae_input: bool = False) -> Nodes:
    """The SAE node set (nodes.Nodes: every latent and the error node of each SAE layer), after checking there
    are >= 2 layers, each SAE reads this model's d_model and (where its id names a hook) the layer it is
    spliced at; a bad one raises a one-line ValueError. centre_sae_input: as Nodes (saes.releases.centred_input)."""
    if not isinstance(saes, Mapping) or len(saes) < 2:
        n = len(saes) if isinstance(saes, Mapping) else 0
        raise ValueError(f"saes has {n} layer(s): a sparse feature circuit needs SAEs at >= 2 residual layers "
                         "(give LAYERS two or more layers, one SAE each)")
    for layer, sae_id in (sae_ids or {}).items():
        check_sae_layer(sae_id, int(layer))
    nodes = Nodes(model, saes=dict(saes), centre_sae_input=centre_sae_input)
    if len(nodes.saes) < 2:
        raise ValueError(f"saes names one layer twice ({list(saes)}, negatives count from the end); give one SAE "
                         "per layer")
    return nodes


# ----------------------------------------------------------------------------- node values and gradients


@dataclass
class TaskNodes:
    """The SAE nodes on a task: clean values, corrupt - clean deltas and the metric's gradient (AtP: at the
    clean run; IG: averaged along the path) per component ([n, T, d_sae, 1] latents, [n, T, 1, d] error)."""

    nodes: Nodes
    clean: dict[Component, Tensor]
    delta: dict[Component, Tensor]
    grad: dict[Component, Tensor]
    method: str

    @property
    def layers(self) -> list[int]:
        return sorted(self.nodes.saes)

    def comps(self, layer: int) -> tuple[Component, Component]:
        """(latents, error) components of an SAE layer."""
        found = {c.kind: c for c in self.nodes.components if c.layer == layer}
        return found["latents"], found["error"]

    def effects(self, comp: Component) -> Tensor:
        """Each node's effect [N]: grad . delta summed over positions and the node's numbers, mean over prompts."""
        return (self.grad[comp].float() * self.delta[comp].float()).sum((1, 3)).mean(0)

    def scores(self) -> dict[str, float]:
        """{node id: effect} of every latent with a non-zero effect and every error node."""
        out: dict[str, float] = {}
        for comp in self.nodes.components:
            eff = self.effects(comp).cpu()
            keep = range(comp.n) if comp.kind == "error" else torch.nonzero(eff).flatten().tolist()
            out.update({comp.node_id(i): float(eff[i]) for i in keep})
        return out


def _ig_grads(task: TaskNodes, pairs: PromptPairs, metric: str, steps: int) -> dict[Component, Tensor]:
    """Integrated-gradient averages as the paper takes them: one SAE layer at a time, its latents AND error
    together at clean + alpha (patch - clean), alpha = 0, 1/N, ..., (N-1)/N (left Riemann, alpha = 0 the clean
    run), the other layers left to the forward; N forwards and backwards per layer."""
    target = {c: task.clean[c] + task.delta[c] for c in task.clean}
    return ig_gradients(task.nodes, pairs, task.clean, target, steps=steps, metric=metric, rule="left", joint=True)


def task_nodes(nodes: Nodes, pairs: PromptPairs, metric: str = "logit_diff", *, method: str = "ig",
               ig_steps: int = 10) -> TaskNodes:
    """Every SAE node on the task (clean values, corrupt - clean deltas) with `method`'s gradients."""
    gradient_metric(metric)
    if method not in NODE_METHODS:
        raise ValueError(f"method = {method!r}: use one of {NODE_METHODS} ('ig' as the paper, 'atp' the fast "
                         "first-order one)")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
        raise ValueError(f"ig_steps = {ig_steps!r}: must be a whole number >= 1 (the paper uses 10)")
    _, clean = nodes.values(pairs.clean_ids)
    _, corrupt = nodes.values(pairs.corrupt_ids)
    task = TaskNodes(nodes, clean, {c: corrupt[c] - clean[c] for c in clean}, {}, method)
    task.grad = atp_gradients(nodes, pairs, metric)[1] if method == "atp" else _ig_grads(task, pairs, metric, ig_steps)
    return task


# ----------------------------------------------------------------------------- edges


def edge_scores(task: TaskNodes, up: int, down: int, ids: Tensor, down_latents: Sequence[int],
                down_error: bool = True, down_tau: float | None = None) -> tuple[Tensor, Tensor]:
    """Edge effects from every node of SAE layer `up` to the chosen nodes of a later SAE layer `down`:
    (latent columns [R, d_sae], error column [R]) with R = len(down_latents) + down_error rows; row r,
    column i is sum_positions dm/dd_r . dd_r/du_i . Delta u_i averaged over prompts (d_r the r-th chosen
    downstream node, its error node last). One backward pass per downstream node: the gradient-weighted
    downstream value (dm/dd . d, the error's contracted over d_model) back-propagated to every upstream node.
    down_tau: only the downstream instances (prompt, position) whose own effect dm/dd . Delta d has
    |effect| >= down_tau send edges (Marks et al.'s code: edges into the thresholded instances); None: all."""
    if down <= up:
        raise ValueError(f"edges run from an earlier SAE layer to a later one, got {up} -> {down}")
    nodes, model = task.nodes, task.nodes.model
    lat_u, err_u = task.comps(up)
    lat_d, err_d = task.comps(down)
    leaves = {c: task.clean[c].detach().clone().requires_grad_(True) for c in (lat_u, err_u)}
    n = ids.shape[0]

    def instances(comp: Component, j: int) -> Tensor:
        """[n, T] bool: the (prompt, position) instances of downstream node j that send edges."""
        effect = (task.grad[comp][:, :, j].float() * task.delta[comp][:, :, j].float()).sum(-1)
        return torch.ones_like(effect, dtype=torch.bool) if down_tau is None else effect.abs() >= down_tau

    rows_f, rows_e = [], []
    with torch.enable_grad():
        with nodes.hooked(lambda c, v: leaves[c].to(v.dtype) if c in leaves else v) as rec, \
                hooks.read_residuals(model, [down], stop_after_deepest=True):
            model(ids.to(task.clean[lat_u].device))
        chosen = [(lat_d, j) for j in down_latents] + ([(err_d, 0)] if down_error else [])
        d_f, d_e = task.delta[lat_u].float(), task.delta[err_u].float()
        for comp, j in chosen:
            keep = instances(comp, j)
            if not keep.any():  # no instance passes: no edge into this node
                rows_f.append(d_f.new_zeros(lat_u.n))
                rows_e.append(d_e.new_zeros(()))
                continue
            target = (task.grad[comp][:, :, j] * rec[comp][:, :, j]).sum(-1)[keep].sum()
            g_f, g_e = torch.autograd.grad(target, [leaves[lat_u], leaves[err_u]], retain_graph=True,
                                           allow_unused=True)
            rows_f.append((g_f.float() * d_f).sum((0, 1, 3)) / n if g_f is not None else d_f.new_zeros(lat_u.n))
            rows_e.append((g_e.float() * d_e).sum() / n if g_e is not None else d_e.new_zeros(()))
    if not rows_f:
        return torch.zeros(0, lat_u.n), torch.zeros(0)
    return torch.stack(rows_f).detach().cpu(), torch.stack(rows_e).detach().cpu()


# ----------------------------------------------------------------------------- the circuit


@dataclass
class FeatureCircuit:
    """A thresholded sparse feature circuit: kept nodes and edges in CircuitData's shape, plus every scored
    node (the ranking the faithfulness curve sweeps)."""

    layers: list[int]
    nodes: list[dict]
    edges: list[dict]
    scores: dict[str, float]  # every latent with a non-zero effect, and every error node
    tau_node: float
    tau_edge: float
    metric: str
    prompts_n: int
    meta: dict = field(default_factory=dict)

    def ranking(self) -> list[str]:
        """Every scored node id, largest |effect| first (ties by id, so the order is reproducible)."""
        return sorted(self.scores, key=lambda k: (-abs(self.scores[k]), k))

    def circuit_data(self) -> dict:
        """write_circuit's keyword arguments: nodes, edges, metric, prompts_n, tau_node, tau_edge, method, ..."""
        return dict(nodes=self.nodes, edges=self.edges, metric=self.metric, prompts_n=self.prompts_n,
                    tau_node=self.tau_node, tau_edge=self.tau_edge, method="sfc", **self.meta)


def sparse_feature_circuit(nodes: Nodes, pairs: PromptPairs, metric: str = "logit_diff", *, tau_node: float = 0.1,
                           tau_edge: float = 0.01, method: str = "ig", ig_steps: int = 10,
                           names: Mapping[str, str] | None = None, task: TaskNodes | None = None) -> FeatureCircuit:
    """The Marks et al. circuit of `pairs` on the SAE nodes of `nodes` (check_saes): node effects by `method`,
    nodes with |effect| >= tau_node kept (error nodes too), then the edges between kept nodes of consecutive
    SAE layers with |effect| >= tau_edge (and non-zero). As in the paper's code, an edge sums only over the
    downstream node's (prompt, position) instances whose own effect passes tau_node (edge_scores' down_tau),
    while a node is kept by its effect summed over positions. `task` reuses a task_nodes result."""
    tau_node, tau_edge = check_tau("tau_node", tau_node), check_tau("tau_edge", tau_edge)
    gradient_metric(metric)
    if len(nodes.saes) < 2:
        raise ValueError(f"the node set has SAEs at {len(nodes.saes)} layer(s): a sparse feature circuit needs >= 2")
    if task is None:
        task = task_nodes(nodes, pairs, metric, method=method, ig_steps=ig_steps)
    scores = task.scores()
    kept = node_entries(scores, nodes.kinds(), tau=tau_node, names=dict(names or {}))
    kept_ids = {e["id"] for e in kept}
    edges: list[dict] = []
    for up, down in zip(task.layers, task.layers[1:]):
        lat_u, err_u = task.comps(up)
        lat_d, err_d = task.comps(down)
        d_lat = [i for i in range(lat_d.n) if lat_d.node_id(i) in kept_ids]
        d_err = err_d.node_id(0) in kept_ids
        u_lat = [i for i in range(lat_u.n) if lat_u.node_id(i) in kept_ids]
        u_err = err_u.node_id(0) in kept_ids
        rows_f, rows_e = edge_scores(task, up, down, pairs.clean_ids, d_lat, d_err, down_tau=tau_node)
        targets = [lat_d.node_id(j) for j in d_lat] + ([err_d.node_id(0)] if d_err else [])
        for r, target in enumerate(targets):
            cells = [(lat_u.node_id(i), float(rows_f[r, i])) for i in u_lat]
            cells += [(err_u.node_id(0), float(rows_e[r]))] if u_err else []
            edges += [{"source": s, "target": target, "score": v} for s, v in cells if v != 0 and abs(v) >= tau_edge]
    meta = {"node_method": method, **({"ig_steps": ig_steps} if method == "ig" else {})}
    return FeatureCircuit(task.layers, kept, edges, scores, tau_node, tau_edge, metric, len(pairs), meta)


# ----------------------------------------------------------------------------- faithfulness and completeness


def default_counts(n: int) -> list[int]:
    """0, 1, 2, 4, 8, ... and n: the node counts a curve sweeps."""
    out, k = [0], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n] if n else out


def faithfulness_curve(nodes: Nodes, pairs: PromptPairs, ranking: Sequence[str], counts: Sequence[int] | None = None,
                       metric: str = "logit_diff") -> list[dict]:
    """For each k in counts (default_counts): the faithfulness of the top-k nodes of `ranking` alone,
    F(C) = (m(C) - m(empty)) / (m(M) - m(empty)) with every other SAE node mean-ablated (patching.faithfulness),
    and the completeness F(M minus C) of the model with those k nodes mean-ablated (near 0: nothing left does
    the task). Means per position over the clean prompts."""
    counts = default_counts(len(ranking)) if counts is None else sorted({min(int(k), len(ranking)) for k in counts})
    patch = patch_values(nodes, pairs, "mean")
    ends = faithfulness_ends(nodes, pairs, metric=metric, patch=patch)  # once for every point
    rows = []
    for k in counts:
        circuit = set(ranking[:k])
        rest = [i for i in nodes.ids if i not in circuit]
        score = dict(metric=metric, patch=patch, ends=ends)
        rows.append({"n_nodes": k, "faithfulness": faithfulness(nodes, pairs, circuit, **score),
                     "completeness": faithfulness(nodes, pairs, rest, **score)})
    return rows
