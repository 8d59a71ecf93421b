"""Attribution patching: fast linear estimates of every node's patching effect, and how good they are.

- `atp`: AtP (Nanda 2023; Kramár et al. 2024): (a_patch − a_clean) · ∂m/∂a at the clean run; two
  forwards (clean with grad, corrupt) and one backward for all nodes at once.
- `atp_star`: AtP* (Kramár et al. 2024, arXiv:2403.00745). QK fix: a query/key node's effect goes
  through its head's softmax, so the patched attention pattern is recomputed exactly (a forward with
  the node patched, stopped after its layer) and only what follows is linearised:
  Σ (A_patched − A_clean) · ∂m/∂A. Softmax attention only; linear attention (Gated-DeltaNet) is
  refused. GradDrop: one extra backward per layer l with the gradient through layer l's residual
  writes (its attention and MLP outputs) set to zero, AtP_l(n) from that gradient, and
  score(n) = 1/(L−1) Σ_l |AtP_l(n)| (sign from AtP), which catches direct and indirect effects that cancel.
  A node's own layer's term is 0 for every kind: a head, query, key or MLP acts only through its layer's
  writes, and a residual SAE latent or error at block l's output counts as block l's (it holds those writes),
  so L−1 terms remain and a node with direct effects only scores |AtP|. (The gates sit on the attention and
  MLP modules, upstream of an MLP or residual node of the same layer, so that term is set to 0 explicitly.)
- `integrated_gradients`: per component, its nodes moved together from clean to patched in N steps
  (midpoint rule by default; "left" is SFC's α = 0..N−1 / N), gradients averaged, dotted with the change.
- `compare`: Spearman correlation of |estimate| with |exact effect| and the false-negative rate among the
  top nodes by exact effect. `exact_check` patches every node exactly where that is affordable (every
  latent the patch changes up to a cap) and compares there, next to the estimates' own top nodes alone.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ..model import hooks
from ..model.layout import n_layers
from .metrics import gradient_metric
from .nodes import Component, Nodes, attention, eager_attention, mlp_module
from .patching import _rows, node_effects, patch_values, patched_edit
from .tasks import PromptPairs


def _ids_scores(comp_scores: dict[Component, torch.Tensor]) -> dict[str, float]:
    return {c.node_id(i): float(s[i]) for c, s in comp_scores.items() for i in range(c.n)}


def _dot(delta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Per-node (delta · grad) summed over positions and the node's numbers, mean over prompts: [N]."""
    return (delta.float() * grad.float()).sum((1, 3)).mean(0)


def _deltas(nodes, pairs, clean: dict, ablation, reference_ids, patch) -> dict[Component, torch.Tensor]:
    patch = patch if patch is not None else patch_values(nodes, pairs, ablation, reference_ids)
    return {c: _rows(patch[c], v.shape[0]).to(v.dtype) - v.detach() for c, v in clean.items()}


def _metric_sum(metric: str, logits, pairs: PromptPairs) -> torch.Tensor:
    return gradient_metric(metric)(logits, pairs).sum()


def atp(nodes: Nodes, pairs: PromptPairs, *, metric: str = "logit_diff", ablation: str = "resample",
        reference_ids: torch.Tensor | None = None, patch: dict | None = None) -> dict[str, float]:
    """{node id: AtP estimate of its patching effect} (mean over prompts of Δa · ∂m/∂a)."""
    clean, grads = atp_gradients(nodes, pairs, metric)
    deltas = _deltas(nodes, pairs, clean, ablation, reference_ids, patch)
    return _ids_scores({c: _dot(deltas[c], grads[c]) for c in clean})


def atp_gradients(nodes: Nodes, pairs: PromptPairs, metric: str = "logit_diff") -> tuple[dict, dict]:
    """({component: clean values}, {component: ∂m/∂value at the clean run}): one forward, one backward
    (the splice passes the gradient on as the residual would, so an upstream node's holds every path)."""
    gradient_metric(metric)
    logits, clean = nodes.values(pairs.clean_ids, grad=True)
    with torch.enable_grad():
        grads = torch.autograd.grad(_metric_sum(metric, logits, pairs), list(clean.values()), allow_unused=True)
    return clean, {c: _or_zero(g, clean[c]).detach() for c, g in zip(clean, grads)}


def _or_zero(grad, like):
    return torch.zeros_like(like) if grad is None else grad


# ----------------------------------------------------------------------------- AtP*


class _GradGate(torch.autograd.Function):
    """Identity forward; backward passes the gradient unless state["drop"] names this layer."""

    @staticmethod
    def forward(ctx, x, state, layer):
        ctx.state, ctx.layer = state, layer
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return (torch.zeros_like(grad) if ctx.state.get("drop") == ctx.layer else grad), None, None


def _residual_writers(model) -> list[tuple[int, torch.nn.Module]]:
    """(layer, module) of each layer's writes into the residual stream: its attention and its MLP."""
    out = []
    for layer in range(n_layers(model)):
        out.append((layer, attention(model, layer)[0]))
        out.append((layer, mlp_module(model, layer)))
    return out


@dataclass
class AtPStar:
    """AtP* scores by node id: `score` (the final ranking score, sign from AtP), and its parts."""
    score: dict[str, float]
    atp: dict[str, float]
    qk_fixed: dict[str, float] = field(default_factory=dict)  # AtP with the QK fix (q/k nodes), plain AtP elsewhere
    graddrop: dict[str, float] = field(default_factory=dict)  # 1/(L−1) Σ_l |AtP_l| (empty without GradDrop)
    config: dict = field(default_factory=dict)


def atp_star(nodes: Nodes, pairs: PromptPairs, *, metric: str = "logit_diff", ablation: str = "resample",
             reference_ids: torch.Tensor | None = None, use_qk_fix: bool = True, use_graddrop: bool = True,
             patch: dict | None = None, batch_rows: int = 256) -> AtPStar:
    """AtP* of every node: AtP, the QK fix for q/k nodes (exact softmax) and GradDrop (see the module doc)."""
    gradient_metric(metric)
    model = nodes.model
    qk = [c for c in nodes.components if c.kind in ("q", "k")] if use_qk_fix else []
    qk_layers = sorted({c.layer for c in qk})
    state: dict = {}
    attn_w: dict[int, torch.Tensor] = {}

    def gate(layer):
        return lambda h: _GradGate.apply(h, state, layer)

    writers = _residual_writers(model) if use_graddrop else []
    with torch.enable_grad(), eager_attention(model) if qk else nullcontext():
        with hooks.edit_module_outputs({attention(model, l)[0]: _keep_attention_weights(l, attn_w)
                                        for l in qk_layers}, whole=True), \
                hooks.edit_module_outputs({m: gate(l) for l, m in writers}):
            logits, clean = nodes.values(pairs.clean_ids, grad=True)
        comps = list(clean)
        m = _metric_sum(metric, logits, pairs)
        targets = [clean[c] for c in comps] + [attn_w[l] for l in qk_layers]

        def backward() -> tuple[dict, dict]:
            g = torch.autograd.grad(m, targets, retain_graph=True, allow_unused=True)
            return ({c: _or_zero(x, clean[c]) for c, x in zip(comps, g)},
                    {l: _or_zero(x, attn_w[l]) for l, x in zip(qk_layers, g[len(comps):])})

        deltas = _deltas(nodes, pairs, clean, ablation, reference_ids, patch)
        grads, grad_a = backward()
        base = {c: _dot(deltas[c], grads[c]) for c in comps}
        d_attn = {c: _patched_attention_change(nodes, pairs, c, deltas[c] + clean[c].detach(), attn_w[c.layer].detach(),
                                               batch_rows) for c in qk}
        fixed = dict(base)
        for c in qk:
            fixed[c] = _qk_score(d_attn[c], grad_a[c.layer])
        drop = _graddrop(backward, state, comps, deltas, d_attn, n_layers(model)) if use_graddrop else {}
    score = {c: (torch.sign(fixed[c].cpu()) * drop[c] if use_graddrop else fixed[c]) for c in comps}
    return AtPStar(_ids_scores(score), _ids_scores(base), _ids_scores(fixed), _ids_scores(drop),
                   dict(metric=metric, ablation=ablation, use_qk_fix=use_qk_fix, use_graddrop=use_graddrop,
                        qk_fix_layers=qk_layers, qk_fix_not_applicable=_linear_layers(model) if use_qk_fix else []))


def _keep_attention_weights(layer: int, attn_w: dict):
    """An attention module's output edit that keeps its weights (out[1]) in attn_w[layer], for the QK fix."""
    def fn(out):
        if not isinstance(out, (tuple, list)) or len(out) < 2 or out[1] is None:
            raise ValueError(f"layer {layer}'s attention returned no weights; the QK fix needs eager attention")
        attn_w[layer] = out[1]
        return out
    return fn


def _graddrop(backward, state: dict, comps, deltas: dict, d_attn: dict, L: int) -> dict:
    """GradDrop: for each layer l, AtP with the gradient through l's residual writes dropped (`state["drop"]`
    read by the writers' _GradGate); a node's score is 1/(L-1) sum over the other layers of |that AtP|."""
    total = {c: torch.zeros(c.n) for c in comps}
    for layer in range(L):
        state["drop"] = layer
        g_l, ga_l = backward()
        for c in comps:
            if c.layer == layer:  # its own layer: every path of the node runs through that layer's writes
                continue
            est = _qk_score(d_attn[c], ga_l[c.layer]) if c in d_attn else _dot(deltas[c], g_l[c])
            total[c] += est.abs().cpu()
    state.pop("drop", None)
    return {c: total[c] / max(L - 1, 1) for c in comps}


def _linear_layers(model) -> list[int]:
    """Layers with linear attention (no softmax: the QK fix is not applicable there)."""
    return [layer for layer in range(n_layers(model)) if not attention(model, layer)[1]]


def _qk_score(d_attn: torch.Tensor, grad_a: torch.Tensor) -> torch.Tensor:
    """[N]: Σ over heads and the T×T pattern of ΔA · ∂m/∂A, mean over prompts; d_attn [N, B, H, T, T]."""
    return (d_attn.float() * grad_a.float()[None]).sum((2, 3, 4)).mean(1)


def _patched_attention_change(nodes: Nodes, pairs: PromptPairs, comp: Component, patched: torch.Tensor,
                              clean_attn: torch.Tensor, batch_rows: int) -> torch.Tensor:
    """A_patched − A_clean of comp's layer [N, B, H, T, T], one q/k head patched per batch replica,
    each a forward stopped after that layer (exact softmax). Kept for GradDrop's backwards: memory grows
    as heads × prompts × heads × T², fine for templated tasks (T ~ 20), heavy for long prompts."""
    model, n = nodes.model, len(pairs)
    attn = attention(model, comp.layer)[0]
    per = max(1, batch_rows // n)
    out = []
    for s in range(0, comp.n, per):
        heads = list(range(s, min(comp.n, s + per)))
        g = len(heads)
        mask = torch.zeros(g * n, comp.n, dtype=torch.bool)
        for r, h in enumerate(heads):
            mask[r * n:(r + 1) * n, h] = True
        seen: dict = {}
        edit = patched_edit({comp: mask}, {comp: patched})

        def grab(o):
            seen["a"] = o[1].detach()
            return o

        ids = pairs.clean_ids.repeat(g, 1)
        with torch.no_grad(), hooks.edit_module_outputs({attn: grab}, whole=True), nodes.hooked(edit), \
                hooks.read_residuals(model, [comp.layer], stop_after_deepest=True):
            model(ids.to(clean_attn.device))
        out.append(seen["a"].view(g, n, *clean_attn.shape[1:]) - clean_attn[None])
    return torch.cat(out, 0)


# ----------------------------------------------------------------------------- integrated gradients


def integrated_gradients(nodes: Nodes, pairs: PromptPairs, *, steps: int = 10, metric: str = "logit_diff",
                         ablation: str = "resample", reference_ids: torch.Tensor | None = None,
                         patch: dict | None = None, rule: str = "midpoint", joint: bool = False,
                         batch_rows: int = 256) -> dict[str, float]:
    """{node id: IG estimate}: for each component, its nodes interpolated together from clean to patched
    (other components left to the forward), ∂m/∂a averaged over `steps` points, dotted with Δa.
    joint: all components of a layer move together (SFC: an SAE's latents and its error as one submodule)."""
    _, clean = nodes.values(pairs.clean_ids)
    patch = patch if patch is not None else patch_values(nodes, pairs, ablation, reference_ids)
    target = {c: _rows(patch[c], len(pairs)).to(clean[c].dtype) for c in nodes.components}
    grads = ig_gradients(nodes, pairs, clean, target, steps=steps, metric=metric, rule=rule, joint=joint,
                         batch_rows=batch_rows)
    return _ids_scores({c: _dot(target[c].float() - clean[c].float(), grads[c]) for c in nodes.components})


def ig_gradients(nodes: Nodes, pairs: PromptPairs, clean: dict, target: dict, *, steps: int = 10,
                 metric: str = "logit_diff", rule: str = "midpoint", joint: bool = False,
                 batch_rows: int = 256) -> dict[Component, torch.Tensor]:
    """{component: ∂m/∂a averaged over `steps` points of the path clean + α (target - clean)}, float32, shaped
    like its clean values: what integrated gradients dots with Δa (and SFC's edges reuse).
    rule: "midpoint" (α = (k + ½)/N) or "left" (α = k/N, SFC's, α = 0 the clean run); joint: a layer's
    components move together, else one component at a time (the others left to the forward)."""
    gradient_metric(metric)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int (the Riemann steps of the path integral), got {steps!r}")
    if rule not in ("midpoint", "left"):
        raise ValueError(f"rule must be 'midpoint' or 'left' (SFC's α = k/N from the clean point), got {rule!r}")
    alphas = (torch.arange(steps, dtype=torch.float32) + (0.5 if rule == "midpoint" else 0.0)) / steps
    n = len(pairs)
    per = max(1, batch_rows // n)
    groups: dict = {}
    for comp in nodes.components:
        groups.setdefault(comp.layer if joint else comp, []).append(comp)
    out: dict[Component, torch.Tensor] = {}
    for group in groups.values():
        grad_sum = {c: torch.zeros_like(clean[c], dtype=torch.float32) for c in group}
        for s in range(0, steps, per):
            a = alphas[s:s + per]
            g = len(a)
            rep = pairs.subset(torch.arange(n).repeat(g))
            a_rows = a.repeat_interleave(n)[:, None, None, None]

            def edit(c, v, _a=a_rows):
                if c not in grad_sum:
                    return v
                start = _rows(clean[c], v.shape[0])
                point = start + _a.to(v.device, v.dtype) * (_rows(target[c], v.shape[0]).to(v.dtype) - start)
                return v + (point - v).detach()  # the interpolated value; the gradient still flows upstream

            logits, vals = nodes.values(rep.clean_ids, edit, grad=True)
            with torch.enable_grad():
                grads = torch.autograd.grad(_metric_sum(metric, logits, rep), [vals[c] for c in group],
                                            allow_unused=True)
            for c, grad in zip(group, grads):
                grad = _or_zero(grad, vals[c])
                grad_sum[c] += grad.float().view(g, n, *grad.shape[1:]).sum(0)
        out.update({c: grad_sum[c] / steps for c in group})
    return out


# ----------------------------------------------------------------------------- how good an estimate is


def compare(estimate: dict[str, float], exact: dict[str, float], *, top_k: int = 10) -> dict:
    """How an estimate ranks nodes against exact patching, on the nodes both hold:
    spearman (|estimate| vs |exact|), spearman_signed, and false_negative_rate: the share of the top_k
    nodes by |exact effect| that are not in the estimate's top_k by |score|. On one node (a top set of
    TOP_N = 1 that every estimate agrees on) there is no ranking to correlate: the Spearman values are NaN."""
    from scipy.stats import spearmanr

    ids = [i for i in exact if i in estimate]
    if not ids:
        raise ValueError("compare needs at least 1 node scored by both methods, got 0")
    est = torch.tensor([estimate[i] for i in ids], dtype=torch.float64)
    ex = torch.tensor([exact[i] for i in ids], dtype=torch.float64)
    k = max(1, min(int(top_k), len(ids)))
    top_exact = set(ex.abs().argsort(descending=True)[:k].tolist())
    top_est = set(est.abs().argsort(descending=True)[:k].tolist())
    nan = float("nan")
    rho = spearmanr(est.abs().numpy(), ex.abs().numpy()).statistic if len(ids) > 1 else nan
    rho_signed = spearmanr(est.numpy(), ex.numpy()).statistic if len(ids) > 1 else nan
    return dict(n=len(ids), top_k=k, spearman=float(rho), spearman_signed=float(rho_signed),
                false_negative_rate=len(top_exact - top_est) / k,
                false_negatives=[ids[i] for i in sorted(top_exact - top_est)])


def exact_check(nodes: Nodes, pairs: PromptPairs, estimates: dict[str, dict[str, float]], *, top_n: int,
                latent_cap: int = 1000, top_k: int | None = None, seed: int = 0, ablation: str = "resample",
                metric: str = "logit_diff", reference_ids: torch.Tensor | None = None, patch: dict | None = None,
                batch_rows: int = 256) -> dict:
    """How good each estimate {name: {node id: score}} is against exact patching, on two node sets:

    - "full": every node that is not an SAE latent (heads, queries, keys, MLPs, SAE errors), every latent in an
      estimate's top_n, and the other live latents (those the patch changes at some prompt and position; any
      other latent has exact effect 0 and estimate 0): all of them when at most latent_cap, else a random
      sample of latent_cap seeded by `seed`. A node every estimate ranks low is patched here, so the
      false-negative rate can count it.
    - "top_set": the union of the estimates' top_n alone, a check of the top nodes only, which never sees a node
      that every estimate missed (what such a check's false-negative rate leaves out).

    Returns {"exact": {node id: exact effect}, "full": {name: compare(...)}, "top_set": {name: compare(...)},
    "nodes": what was patched and why}; top_k (default min(10, top_n)) is compare's."""
    from ..data.splits import seeded_rng

    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ValueError(f"top_n must be a positive int (each estimate's top nodes to check), got {top_n!r}")
    if isinstance(latent_cap, bool) or not isinstance(latent_cap, int) or latent_cap < 0:
        raise ValueError(f"latent_cap must be an int >= 0 (live SAE latents patched beyond the top sets), got {latent_cap!r}")
    patch = patch if patch is not None else patch_values(nodes, pairs, ablation, reference_ids)

    def top(scores: dict[str, float]) -> list[str]:
        return sorted(scores, key=lambda i: (-abs(scores[i]), i))[:top_n]

    top_set = list(dict.fromkeys(i for scores in estimates.values() for i in top(scores)))
    _, clean = nodes.values(pairs.clean_ids)
    live: list[str] = []
    for comp in nodes.components:
        if comp.kind == "latents":
            moved = (_rows(patch[comp], len(pairs)).to(clean[comp].dtype) - clean[comp]).abs().amax((0, 1, 3))
            live += [comp.node_id(i) for i in torch.nonzero(moved > 0).flatten().tolist()]
    others = [i for i in live if i not in set(top_set)]
    n_others = len(others)
    sampled = n_others > latent_cap
    if sampled:
        keep = set(seeded_rng("exact-check", seed).sample(others, latent_cap))
        others = [i for i in others if i in keep]
    kinds = nodes.kinds()
    non_latent = [i for i in nodes.ids if kinds[i] != "feature"]
    full = list(dict.fromkeys(non_latent + top_set + others))
    exact = node_effects(nodes, pairs, full, metric=metric, patch=patch, batch_rows=batch_rows)
    k = min(10, top_n) if top_k is None else top_k
    in_top = {i: exact[i] for i in top_set}
    latents_full = sum(kinds[i] == "feature" for i in full)
    policy = (f"every non-latent node ({len(non_latent)}), the latents in an estimate's top {top_n}, and "
              + (f"a seeded random {latent_cap} of the other {n_others} live latents"
                 if sampled else "every other live latent")
              + "; latents the patch leaves unchanged have exact effect 0 and are left out")
    return {"exact": exact,
            "full": {name: compare(scores, exact, top_k=k) for name, scores in estimates.items()},
            "top_set": {name: compare(scores, in_top, top_k=k) for name, scores in estimates.items()},
            "nodes": {"full": len(full), "top_set": len(top_set), "non_latent": len(non_latent),
                      "latents_live": len(live), "latents_patched": latents_full, "latents_sampled": sampled,
                      "policy": policy}}
