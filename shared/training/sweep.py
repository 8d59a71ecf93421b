"""A k sweep of SAE architectures on identical batches, and what it shows: every SAE's point
(L0, variance explained, dead %, CE loss recovered on the same held-out tokens), the Pareto
frontier of variance explained against L0, and a verdict in words on one architecture against
another (BatchTopK against TopK by default) at matched k and at matched L0.

The SAEs train in one run as TrainConfig.variants (trainer.py): one forward feeds them all, every
one steps on the same batches in the same order from the same seed, so their differences come
from the architecture and k alone.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

from ..saes.architectures import registered
from ..saes.base import SAEConfig
from .config import variant_of

POINT_FIELDS = ("var_expl", "l0", "dead_pct", "ce_loss_recovered", "kl_div_spliced", "fvu", "alive", "d_sae")


def k_architectures() -> list[str]:
    """The registered trainable architectures that take a k (the ones a k sweep can train)."""
    return sorted(name for name, arch in registered().items()
                  if arch.model.trainable and "k" in {f.name for f in dataclasses.fields(arch.config)})


def check_sweep(architectures: Sequence[str], k_values: Sequence[int], d_sae: int) -> None:
    """A one-line ValueError for a sweep that cannot run: no architectures or k values, a name the
    registry lacks or one without a k, repeats, or k outside 1..d_sae."""
    sweepable = k_architectures()
    if isinstance(architectures, str) or not architectures:
        raise ValueError(f"architectures is empty: name at least one of {sweepable}, e.g. ['topk', 'batchtopk']")
    if isinstance(k_values, (str, int)) or not k_values:
        raise ValueError("k_values is empty: give at least one k, e.g. [16, 32, 64, 128]")
    for name in architectures:
        if name not in registered():
            raise ValueError(f"architecture {name!r} is not registered; registered: {sorted(registered())} "
                             f"(a k sweep takes {sweepable})")
        if name not in sweepable:
            raise ValueError(f"architecture {name!r} has no k to sweep; use one of {sweepable}")
    for what, values in (("architectures", architectures), ("k_values", k_values)):
        repeats = sorted({v for v in values if list(values).count(v) > 1}, key=str)
        if repeats:
            raise ValueError(f"{what} repeats {repeats}: list each once")
    for k in k_values:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae:
            raise ValueError(f"k={k!r} in k_values must be a whole number in 1..d_sae={d_sae}: "
                             "lower k or raise d_sae")


def variant_name(architecture: str, k: int) -> str:
    """The name of one SAE of a sweep, e.g. "batchtopk-k32" (its key in a run is "L<layer>/<name>")."""
    return f"{architecture}-k{k}"


def sweep_variants(architectures: Sequence[str], k_values: Sequence[int], d_sae: int,
                   **fields) -> dict[str, SAEConfig]:
    """TrainConfig.variants for every architecture at every k: {variant_name: config}, each with
    d_sae and `fields` (e.g. dead_tokens_threshold) set; checked by check_sweep first."""
    check_sweep(architectures, k_values, d_sae)
    return {variant_name(arch, k): registered()[arch].config(d_sae=d_sae, k=k, **fields)
            for arch in architectures for k in k_values}


def sweep_points(report: Mapping[str, dict], variants: Mapping[str, SAEConfig],
                 layer_of: Mapping) -> list[dict]:
    """One row per SAE of evaluate_saes' report (keyed "L<layer>/<name>"): its name, layer,
    architecture and k, then var_expl, l0, dead_pct, ce_loss_recovered, ... (POINT_FIELDS)."""
    rows = []
    for key, layer in layer_of.items():
        name = variant_of(key)
        sae_cfg, metrics = variants[name], report[str(key)]
        rows.append({"key": key, "name": name, "layer": int(layer), "architecture": sae_cfg.architecture, "k": sae_cfg.k,
                     **{f: metrics[f] for f in POINT_FIELDS if f in metrics}})
    return rows


def pareto_frontier(points: Sequence[Mapping], x: str = "l0", y: str = "var_expl") -> list[int]:
    """Indices of the points no other point dominates (x lower or equal and y higher or equal, one
    of them strictly), sorted by x: the best y any sparsity buys. Points with a NaN are left out."""
    ok = [i for i, p in enumerate(points) if not (math.isnan(p[x]) or math.isnan(p[y]))]

    def dominated(i):
        p = points[i]
        return any(q[x] <= p[x] and q[y] >= p[y] and (q[x] < p[x] or q[y] > p[y])
                   for q in (points[j] for j in ok if j != i))

    return sorted((i for i in ok if not dominated(i)), key=lambda i: (points[i][x], -points[i][y]))


def _interpolate(xs: Sequence[float], ys: Sequence[float], at: float) -> float:
    """y at `at` on the polyline through (xs, ys) sorted by x, linear in log x (k sweeps are
    geometric); NaN outside the range of xs."""
    pts = sorted(zip(xs, ys))
    if not pts or at < pts[0][0] or at > pts[-1][0]:
        return float("nan")
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= at <= x1:
            if x1 == x0:
                return y0
            t = (math.log(at) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return pts[0][1]


def _spread(deltas: list[tuple[float, float]], unit: str, fmt: str = "+.3f") -> str:
    """'+0.012 on average (from +0.008 at L0 23 to +0.015 at L0 110)' for (where, delta) pairs."""
    mean = sum(d for _, d in deltas) / len(deltas)
    lo, hi = min(deltas, key=lambda p: p[1]), max(deltas, key=lambda p: p[1])
    if len(deltas) == 1:
        return f"{mean:{fmt}} (at {unit} {lo[0]:g})"
    if f"{lo[1]:{fmt}}" == f"{hi[1]:{fmt}}":
        return f"{mean:{fmt}} at each"
    return f"{mean:{fmt}} on average (from {lo[1]:{fmt}} at {unit} {lo[0]:g} to {hi[1]:{fmt}} at {unit} {hi[0]:g})"


def _status(row: Mapping, tol: float, l0_tol: float) -> str:
    """One comparison as Pareto sees it: "better" (more variance explained at no more L0), "worse",
    "tie", or "trade-off" (more variance for more latents, or the reverse)."""
    dv, dl = row["d_var_expl"], row.get("d_l0", 0.0)
    slack = l0_tol * row.get("l0_baseline", 0.0)
    if abs(dv) <= tol and abs(dl) <= slack:
        return "tie"
    if dv >= -tol and dl <= slack:
        return "better"
    if dv <= tol and dl >= -slack:
        return "worse"
    return "trade-off"


def compare(points: Sequence[Mapping], challenger: str = "batchtopk", baseline: str = "topk", *,
            tol: float = 0.002, l0_tol: float = 0.02) -> dict:
    """How `challenger`'s points fare against `baseline`'s: at matched k (same k, the deltas of
    var_expl, CE loss recovered, dead % and L0) and at matched L0 (the baseline's var_expl and CE
    loss recovered interpolated in log L0 at each challenger L0 inside the baseline's range).
    Differences within `tol` (variance explained) and `l0_tol` (a share of the baseline's L0) count
    as ties; at matched k a point with more variance explained but more latents is a trade-off.

    -> {"verdict": "dominates" | "dominated" | "tie" | "mixed" | "not compared", "text": one
    paragraph in words, "matched_k": rows, "matched_l0": rows, "on_frontier": {arch: n on the
    joint frontier}}. The verdict is judged on var_expl at matched L0 when any challenger point
    falls in the baseline's L0 range (matched k is not matched sparsity), else at matched k."""
    ours = sorted((p for p in points if p["architecture"] == challenger), key=lambda p: p["k"])
    theirs = sorted((p for p in points if p["architecture"] == baseline), key=lambda p: p["k"])
    out = {"challenger": challenger, "baseline": baseline, "tol": tol, "matched_k": [], "matched_l0": []}
    if not ours or not theirs:
        missing = [a for a, pts in ((challenger, ours), (baseline, theirs)) if not pts]
        return {**out, "verdict": "not compared", "on_frontier": {},
                "text": f"{challenger} vs {baseline}: not compared, the sweep has no {' or '.join(missing)} points."}

    by_k = {p["k"]: p for p in theirs}
    for p in ours:
        q = by_k.get(p["k"])
        if q is not None:
            out["matched_k"].append({"k": p["k"], "l0": p["l0"], "l0_baseline": q["l0"],
                                     **{f"d_{f}": p[f] - q[f] for f in ("var_expl", "ce_loss_recovered", "dead_pct",
                                                                        "l0")}})
    xs = [q["l0"] for q in theirs]
    for p in ours:
        v = _interpolate(xs, [q["var_expl"] for q in theirs], p["l0"])
        if not math.isnan(v):
            ce = _interpolate(xs, [q["ce_loss_recovered"] for q in theirs], p["l0"])
            out["matched_l0"].append({"k": p["k"], "l0": p["l0"], "d_var_expl": p["var_expl"] - v,
                                      "d_ce_loss_recovered": p["ce_loss_recovered"] - ce})
    joint = [*ours, *theirs]
    front = pareto_frontier(joint)
    out["on_frontier"] = {challenger: sum(i < len(ours) for i in front), baseline: sum(i >= len(ours) for i in front)}

    rows, basis = (out["matched_l0"], "matched L0") if out["matched_l0"] else (out["matched_k"], "matched k")
    if not rows:
        out["verdict"] = "not compared"
        out["text"] = (f"{challenger} vs {baseline}: no common k and no {challenger} L0 inside {baseline}'s L0 "
                       f"range ({min(xs):g}-{max(xs):g}), so no like-for-like comparison on this run.")
        return out
    for r in rows:
        r["status"] = _status(r, tol, l0_tol)
    statuses = {r["status"] for r in rows}
    out["verdict"] = ("tie" if statuses == {"tie"} else "dominates" if statuses <= {"better", "tie"}
                      else "dominated" if statuses <= {"worse", "tie"} else "mixed")
    where = "L0" if basis == "matched L0" else "k"
    ve = _spread([(round(r["l0"] if where == "L0" else r["k"], 1), r["d_var_expl"]) for r in rows], where)
    ce = _spread([(round(r["l0"] if where == "L0" else r["k"], 1), r["d_ce_loss_recovered"]) for r in rows], where)
    head = {"dominates": f"On this run {challenger} dominates {baseline}",
            "dominated": f"On this run {challenger} does not dominate {baseline}: {baseline} is as good or better "
                         "at every point",
            "tie": f"On this run {challenger} and {baseline} tie (within {tol:g} variance explained)",
            "mixed": f"On this run {challenger} does not dominate {baseline}: neither is better at every "
                     "point"}[out["verdict"]]
    parts = [f"{head}. At {basis} ({len(rows)} point{'s' * (len(rows) > 1)}) its variance explained differs by "
             f"{ve} and its CE loss recovered by {ce}."]
    if len(statuses) > 1 or statuses == {"trade-off"}:
        fmt = (lambda r: f"L0 {r['l0']:.1f}") if where == "L0" else (lambda r: f"k={r['k']}")
        said = "; ".join(f"{status} at {', '.join(fmt(r) for r in rows if r['status'] == status)}"
                         for status in ("better", "worse", "tie", "trade-off") if any(r["status"] == status for r in rows))
        parts.append(said[0].upper() + said[1:] + ".")
    if out["matched_k"]:
        mk = out["matched_k"]
        parts.append(f"At matched k its L0 differs by {_spread([(r['k'], r['d_l0']) for r in mk], 'k', '+.1f')} "
                     f"and its dead latents by {_spread([(r['k'], r['d_dead_pct']) for r in mk], 'k', '+.1f')} "
                     "percentage points.")
    if basis == "matched k":
        parts.append(f"No {challenger} L0 falls inside {baseline}'s L0 range ({min(xs):g}-{max(xs):g}), so "
                     "matched k is the only comparison (not matched sparsity).")
    parts.append(f"On the joint Pareto frontier of variance explained vs L0: {out['on_frontier'][challenger]} of "
                 f"{len(ours)} {challenger} points and {out['on_frontier'][baseline]} of {len(theirs)} {baseline} "
                 "points.")
    out["text"] = " ".join(parts)
    return out


def summarize(points: list[dict], architectures: Sequence[str], challenger: str = "batchtopk",
              baseline: str = "topk") -> dict:
    """What a sweep's report holds beside its points: each point marked `on_frontier`, the frontier's
    names in L0 order, every other architecture compared with `baseline` (the first architecture
    when baseline is not among them), and `verdict`, the words of `challenger`'s comparison (else
    the first comparison's)."""
    front = pareto_frontier(points)
    for i, p in enumerate(points):
        p["on_frontier"] = i in front
    if baseline not in architectures:
        baseline = architectures[0]
    comparisons = {arch: compare(points, arch, baseline) for arch in architectures if arch != baseline}
    chosen = comparisons.get(challenger) or next(iter(comparisons.values()), None)
    verdict = chosen["text"] if chosen else f"Only {baseline} was trained: nothing to compare it with."
    return {"frontier": [points[i]["name"] for i in front], "comparisons": comparisons, "verdict": verdict}


def format_points(points: Sequence[Mapping]) -> str:
    """The points as a fixed-width table (architecture, k, L0, variance explained, dead %, CE
    loss recovered, on the frontier), for printing in a notebook."""
    lines = [f"{'architecture':<22}{'k':>6}{'L0':>9}{'var_expl':>10}{'dead %':>8}{'CE rec.':>9}  frontier"]
    for p in sorted(points, key=lambda p: (p["architecture"], p["k"])):
        lines.append(f"{p['architecture']:<22}{p['k']:>6}{p['l0']:>9.1f}{p['var_expl']:>10.4f}{p['dead_pct']:>8.1f}"
                     f"{p['ce_loss_recovered']:>9.4f}  {'*' if p.get('on_frontier') else ''}")
    return "\n".join(lines)
