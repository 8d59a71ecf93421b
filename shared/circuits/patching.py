"""Exact activation patching of node sets: the ground truth that attribution methods approximate.

A node's patch value comes from the corrupt run ("resample"), from its mean over a reference set
("mean": per position, over the reference prompts; the clean prompts by default) or is zero ("zero").
An effect is mean over prompts of m(patched clean run) − m(clean run). `node_effects` patches nodes one at
a time, many per forward (the batch repeated once per node); `faithfulness` keeps a circuit and
mean-ablates every other node.
"""
from __future__ import annotations

import torch

from ..model.layout import model_device
from .metrics import get_metric
from .nodes import Component, Nodes
from .tasks import PromptPairs

ABLATIONS = ("resample", "mean", "zero")


def check_ablation(ablation: str) -> str:
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATIONS)} "
                         f"(resample = the corrupt run's value, mean = the mean over reference prompts, zero)")
    return ablation


def patch_values(nodes: Nodes, pairs: PromptPairs, ablation: str = "resample",
                 reference_ids: torch.Tensor | None = None) -> dict[Component, torch.Tensor]:
    """{component: value [n or 1, T, N, E]} that patching writes in place of the clean value."""
    check_ablation(ablation)
    if ablation == "resample":
        return nodes.values(pairs.corrupt_ids)[1]
    ref = pairs.clean_ids if reference_ids is None else reference_ids
    if ref.shape[1] != pairs.clean_ids.shape[1]:
        raise ValueError(f"reference_ids have {ref.shape[1]} positions but the prompts {pairs.clean_ids.shape[1]}; "
                         f"the mean is taken per position, so use prompts of the same token length")
    vals = nodes.values(ref)[1]
    if ablation == "mean":
        return {c: v.mean(0, keepdim=True) for c, v in vals.items()}
    return {c: torch.zeros_like(v[:1]) for c, v in vals.items()}


def _rows(value: torch.Tensor, rows: int) -> torch.Tensor:
    """value [n or 1, ...] as [rows, ...] (n divides rows: the batch repeated)."""
    if value.shape[0] == rows:
        return value
    if value.shape[0] == 1:
        return value.expand(rows, *value.shape[1:])
    return value.repeat(rows // value.shape[0], *([1] * (value.dim() - 1)))


def patched_edit(masks: dict[Component, torch.Tensor], patch: dict[Component, torch.Tensor]):
    """An edit for Nodes.hooked: where masks[c] [B, N] (or [N]) is True, node values come from patch[c]."""
    def edit(comp, value):
        if comp not in masks:
            return value
        m = masks[comp].to(value.device)
        m = (m if m.dim() == 2 else m.expand(value.shape[0], -1))[:, None, :, None]
        return torch.where(m, _rows(patch[comp], value.shape[0]).to(value.dtype), value)
    return edit


def _metric(metric: str, logits, pairs: PromptPairs, clean_logits) -> torch.Tensor:
    return get_metric(metric)(logits, pairs, clean_logits=clean_logits)


def clean_metric(nodes: Nodes, pairs: PromptPairs, metric: str = "logit_diff") -> tuple[torch.Tensor, torch.Tensor]:
    """(clean logits [n, T, V], clean metric [n])."""
    with torch.no_grad():
        logits = nodes.model(pairs.clean_ids.to(model_device(nodes.model))).logits
    return logits, _metric(metric, logits, pairs, logits)


def patch_effect(nodes: Nodes, pairs: PromptPairs, node_ids, *, ablation: str = "resample",
                 metric: str = "logit_diff", patch: dict | None = None,
                 reference_ids: torch.Tensor | None = None) -> float:
    """Mean over prompts of m(clean run with all `node_ids` patched together) − m(clean run)."""
    get_metric(metric)
    patch = patch if patch is not None else patch_values(nodes, pairs, ablation, reference_ids)
    clean_logits, base = clean_metric(nodes, pairs, metric)
    logits, _ = nodes.values(pairs.clean_ids, patched_edit(nodes.masks(node_ids), patch))
    return float((_metric(metric, logits, pairs, clean_logits) - base).mean())


def node_effects(nodes: Nodes, pairs: PromptPairs, node_ids=None, *, ablation: str = "resample",
                 metric: str = "logit_diff", patch: dict | None = None, reference_ids: torch.Tensor | None = None,
                 batch_rows: int = 256) -> dict[str, float]:
    """{node id: exact effect of patching that node alone}, several nodes per forward (batch_rows rows)."""
    get_metric(metric)
    node_ids = list(nodes.ids if node_ids is None else node_ids)
    patch = patch if patch is not None else patch_values(nodes, pairs, ablation, reference_ids)
    clean_logits, base = clean_metric(nodes, pairs, metric)
    n = len(pairs)
    per = max(1, batch_rows // n)
    out: dict[str, float] = {}
    for s in range(0, len(node_ids), per):
        chunk = node_ids[s:s + per]
        g = len(chunk)
        masks: dict[Component, torch.Tensor] = {}
        for r, node_id in enumerate(chunk):
            comp, i = nodes.locate(node_id)
            masks.setdefault(comp, torch.zeros(g * n, comp.n, dtype=torch.bool))[r * n:(r + 1) * n, i] = True
        rep = pairs.subset(torch.arange(n).repeat(g))
        logits, _ = nodes.values(rep.clean_ids, patched_edit(masks, patch))
        m = _metric(metric, logits, rep, clean_logits.repeat(g, 1, 1)).view(g, n)
        for r, node_id in enumerate(chunk):
            out[node_id] = float((m[r] - base).mean())
    return out


def faithfulness(nodes: Nodes, pairs: PromptPairs, circuit_ids, *, metric: str = "logit_diff",
                 ablation: str = "mean", reference_ids: torch.Tensor | None = None, patch: dict | None = None,
                 ends: tuple[float, float] | None = None) -> float:
    """(m(circuit) − m(∅)) / (m(model) − m(∅)): the circuit's nodes kept, every other node of `nodes`
    ablated (mean ablation by default), against all nodes ablated; 1 = the circuit alone does the task.
    patch / ends (patch_values, faithfulness_ends): pass them to score many circuits without recomputing."""
    patch = patch if patch is not None else patch_values(nodes, pairs, ablation, reference_ids)
    keep = set(circuit_ids)
    for node_id in keep:
        nodes.locate(node_id)
    full, empty = ends if ends is not None else faithfulness_ends(nodes, pairs, metric=metric, patch=patch)
    rest = [i for i in nodes.ids if i not in keep]
    m_circuit = patch_effect(nodes, pairs, rest, metric=metric, patch=patch) + full
    return (m_circuit - empty) / (full - empty)


def faithfulness_ends(nodes: Nodes, pairs: PromptPairs, *, metric: str = "logit_diff",
                      patch: dict) -> tuple[float, float]:
    """(m(model), m(∅)): the mean metric of the model as it is and with every node of `nodes` patched."""
    _, full = clean_metric(nodes, pairs, metric)
    full = float(full.mean())
    empty = patch_effect(nodes, pairs, nodes.ids, metric=metric, patch=patch) + full
    if abs(full - empty) < 1e-12:
        raise ValueError("ablating every node leaves the metric unchanged, so faithfulness is undefined; "
                         "choose nodes the task depends on")
    return full, empty
