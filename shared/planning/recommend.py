"""Notebook 07's answer: every tier recipe weighed on a GPU class and a time budget (does it fit, how
many tokens the budget buys), ranked by the goal, and the recommended notebook with the parameters to
paste into it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .gpus import GPUClass, gpu_class
from .memory import BUFFER_BYTES, GIB, memory_breakdown, usable_gib
from .models import MODELS, ModelSpec, notebook_to_open
from .throughput import setup_minutes, tokens_per_second

TOKEN_ROUND = 1_000_000  # token budgets are rounded down to whole millions (monotone in the budget)
FWD_BATCH_CHOICES = (32, 16, 8, 4, 2, 1)  # sequences per forward; the largest that fits is chosen

GOALS = ("learn", "explore", "paper")
MIN_TOKENS = {"learn": 10_000_000, "explore": 50_000_000, "paper": 200_000_000}  # below this: not worth it
GOAL_TIERS = {"learn": (1, 2, 3), "explore": (2, 1, 3), "paper": (3, 2, 1)}  # preferred tier order


@dataclass
class Option:
    """One weighed configuration: model recipe x GPU class x hooked layers, with its verdict."""

    notebook: str
    model_id: str
    tier: int
    gpu: str
    layers: tuple[int, ...]
    d_sae: int
    k: int
    ctx: int
    fwd_batch_seqs: int
    batch_tokens: int
    buffer_tokens: int
    placement: str  # "one GPU" | "split" (model cuda:0, SAE cuda:1) | "spread" (model over both, SAE on the last)
    fits: bool
    memory_gb: dict  # {"gpu0": {part: GiB}, ...}
    tokens_per_s: float
    setup_minutes: float
    tokens: int  # tokens trainable within the budget
    est_minutes: float
    status: str  # "recommended" | "viable" | "rejected"
    reason: str = ""


@dataclass
class Recommendation:
    """What to run: the notebook and the exact parameter values to paste into it."""

    tier_notebook: str
    model_id: str
    layer: int
    layers: tuple[int, ...]
    d_sae: int
    k: int
    batch_tokens: int
    tokens: int
    est_minutes: float
    gpu: str
    goal: str
    budget_minutes: float
    tokens_per_s: float
    memory: dict
    placement: str
    note: str = ""
    parameters: dict = field(default_factory=dict)
    run_in: str = ""  # the catalog notebook to open today: tier_notebook, or a released one with the same recipe

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


def _fits(mem: dict, g: GPUClass) -> bool:
    return all(p["total"] <= usable_gib(g) for p in mem.values())


def _placements(m: ModelSpec, g: GPUClass) -> tuple[str, ...]:
    """The placements notebook 07 tries, in order: the recipe's own, then spreading the model."""
    if g.n_gpus == 1:
        return ("one GPU",)
    return ("spread",) if m.placement == "spread" else ("split", "spread")


def _weigh(m: ModelSpec, g: GPUClass, layers: tuple[int, ...], budget_minutes: float, goal: str,
           min_tokens: int) -> Option:
    """Evaluate one configuration: the first placement and the largest forward batch (up to the
    notebook's) that fit, then the tokens the budget buys."""
    chosen = None
    batches = [b for b in FWD_BATCH_CHOICES if b <= m.fwd_batch_seqs]
    for placement in _placements(m, g):
        for b in batches:
            rows = m.buffer_rows(b)
            mem = memory_breakdown(m, g, layers, m.d_sae, b, m.sae_batch_tokens, rows, placement)
            if _fits(mem, g):
                chosen = (placement, b, mem)
                break
        if chosen:
            break
    fits = chosen is not None
    if not fits:  # report the smallest configuration's needs
        placement = _placements(m, g)[-1]
        chosen = (placement, 1, memory_breakdown(m, g, layers, m.d_sae, 1, m.sae_batch_tokens, m.buffer_rows(1),
                                                 placement))
    placement, b, mem = chosen
    tps = tokens_per_second(m, g, layers, m.d_sae)
    setup = setup_minutes(m.shape)
    train_min = max(0.0, budget_minutes - setup)
    tokens = int(tps * train_min * 60 // TOKEN_ROUND * TOKEN_ROUND) if fits else 0
    est = setup + tokens / tps / 60 if tokens else setup
    reason = ""
    if not fits:
        worst = max(mem, key=lambda k: mem[k]["total"])
        reason = (f"does not fit: needs {mem[worst]['total']:.1f} GiB on {worst} even with batch 1 "
                  f"> {usable_gib(g):.1f} GiB usable of {g.vram_gb:g}")
    elif tokens < min_tokens:
        reason = (f"budget gives only {tokens / 1e6:.0f}M tokens < {min_tokens / 1e6:.0f}M minimum for "
                  f"goal {goal!r} (setup {setup:.1f} min, {tps:,.0f} tok/s)")
    buffer_tokens = next(iter(v["activation_buffer"] for v in mem.values() if "activation_buffer" in v))
    return Option(
        notebook=m.notebook, model_id=m.model_id, tier=m.tier, gpu=g.name, layers=tuple(layers),
        d_sae=m.d_sae, k=m.k, ctx=m.ctx, fwd_batch_seqs=b, batch_tokens=m.sae_batch_tokens,
        buffer_tokens=int(round(buffer_tokens * GIB / (m.d_model * len(layers) * BUFFER_BYTES))),
        placement=placement, fits=fits, memory_gb=mem, tokens_per_s=tps, setup_minutes=setup, tokens=tokens,
        est_minutes=est, status="rejected" if reason else "viable", reason=reason,
    )


def _check(budget_minutes: float, goal: str) -> None:
    if not isinstance(budget_minutes, (int, float)) or not math.isfinite(budget_minutes) or budget_minutes <= 0:
        raise ValueError(f"BUDGET_MINUTES must be a positive number of minutes, got {budget_minutes!r}")
    if goal not in GOALS:
        raise ValueError(f"unknown GOAL {goal!r}; use one of {', '.join(GOALS)}")


def weigh_options(gpu: str | None, budget_minutes: float, goal: str = "learn") -> list[Option]:
    """Every option for this GPU class, ordered by goal preference, the chosen one marked "recommended"."""
    _check(budget_minutes, goal)
    g = gpu_class(gpu)
    # the goal's token minimum first; when nothing reaches it, the "learn" minimum (recommend says so)
    for min_tokens in dict.fromkeys((MIN_TOKENS[goal], MIN_TOKENS["learn"])):
        options = []
        for m in MODELS.values():
            options.append(_weigh(m, g, m.layers, budget_minutes, goal, min_tokens))
            if len(m.layers) > 1:  # the multi-layer recipe also as one middle SAE
                options.append(_weigh(m, g, (m.layers[len(m.layers) // 2],), budget_minutes, goal, min_tokens))
        if any(o.status == "viable" for o in options):
            break
    order = {t: i for i, t in enumerate(GOAL_TIERS[goal])}
    model_rank = {mid: i for i, mid in enumerate(MODELS)}
    options.sort(key=lambda o: (order[o.tier], model_rank[o.model_id], -len(o.layers)))
    best = next((o for o in options if o.status == "viable"), None)
    for o in options:
        if o is best:
            o.status = "recommended"
        elif o.status == "viable":
            o.reason = "viable; ranked below the recommendation for this goal"
    return options


def options_table(gpu: str | None, budget_minutes: float, goal: str = "learn") -> list[dict]:
    """The weighed options as flat dicts (one row each) for printing or JSON."""
    rows = []
    for o in weigh_options(gpu, budget_minutes, goal):
        rows.append({
            "notebook": o.notebook, "model_id": o.model_id, "tier": o.tier, "gpu": o.gpu,
            "layers": list(o.layers), "d_sae": o.d_sae, "k": o.k, "fits": o.fits,
            "peak_gb": round(max(p["total"] for p in o.memory_gb.values()), 2),
            "fwd_batch_seqs": o.fwd_batch_seqs, "placement": o.placement,
            "tokens_per_s": round(o.tokens_per_s), "tokens": o.tokens, "est_minutes": round(o.est_minutes, 1),
            "status": o.status, "reason": o.reason,
        })
    return rows

FALLBACK_GPU = "T4"  # where to send someone whose machine cannot train anything: a free Colab T4


def recommend(gpu: str | None, budget_minutes: float, goal: str = "learn") -> Recommendation:
    """The best option for this GPU class, budget and goal; on a machine where nothing is viable
    (e.g. "cpu"), the recommendation for a free Colab T4 with a note saying so."""
    options = weigh_options(gpu, budget_minutes, goal)
    best = next((o for o in options if o.status == "recommended"), None)
    if best is None and gpu_class(gpu).name != FALLBACK_GPU:
        rec = recommend(FALLBACK_GPU, budget_minutes, goal)
        rec.note = (f"nothing trains usefully on {gpu_class(gpu).name} in {budget_minutes:g} min; "
                    f"open the notebook below on a free Colab T4 (Runtime > Change runtime type > T4 GPU). " + rec.note).strip()
        return rec
    if best is None:
        need = min((o.setup_minutes + MIN_TOKENS["learn"] / o.tokens_per_s / 60 for o in options if o.fits), default=None)
        more = f"; the cheapest option needs ~{math.ceil(need)} min" if need else ""
        raise ValueError(f"BUDGET_MINUTES={budget_minutes:g} is too short for goal {goal!r} on {gpu_class(gpu).name}"
                         f"{more}: raise BUDGET_MINUTES")
    m = MODELS[best.model_id]
    run_in = notebook_to_open(best.notebook)
    note = "; ".join(_caveats(best, m, goal, run_in))
    return Recommendation(
        run_in=run_in,
        tier_notebook=best.notebook, model_id=best.model_id, layer=best.layers[len(best.layers) // 2],
        layers=best.layers, d_sae=best.d_sae, k=best.k, batch_tokens=best.batch_tokens, tokens=best.tokens,
        est_minutes=round(best.est_minutes, 1), gpu=best.gpu, goal=goal, budget_minutes=float(budget_minutes),
        tokens_per_s=round(best.tokens_per_s), memory=best.memory_gb, placement=best.placement,
        note=note, parameters=_recipe_parameters(best, m),
    )


def _caveats(best: Option, m: ModelSpec, goal: str, run_in: str) -> list[str]:
    """What the recommendation gives up against the goal's own recipe, one clause each."""
    notes = []
    if best.tier != GOAL_TIERS[goal][0]:
        notes.append(f"the tier-{GOAL_TIERS[goal][0]} recipe for goal {goal!r} is not viable here; this is the best "
                     "that is")
    if best.tokens < MIN_TOKENS[goal]:
        notes.append(f"only {best.tokens / 1e6:.0f}M tokens fit the budget, below the {MIN_TOKENS[goal] / 1e6:.0f}M a "
                     f"{goal!r} run wants: raise BUDGET_MINUTES for a better SAE")
    if best.layers != m.layers:
        notes.append(f"the full recipe trains layers {list(m.layers)} at once and needs more VRAM; "
                     f"this trains the middle layer only")
    if best.placement == "spread" and m.placement != "spread":
        notes.append("the weights do not fit one GPU beside the SAE: the model is spread over both "
                     "(MODEL_DEVICE = 'spread')")
    if run_in != best.notebook:
        notes.append(f"{best.notebook} is not released yet: open {run_in}, which runs the same recipe, and paste "
                     f"these parameters")
    return notes


def _recipe_parameters(best: Option, m: ModelSpec) -> dict:
    """The tier notebook's parameters that run the recommended option."""
    rows_per_forward = best.fwd_batch_seqs * best.ctx
    params = {
        "MODEL_ID": best.model_id,
        "LAYER": best.layers[0] if len(best.layers) == 1 else list(best.layers),  # the recipe takes an int or a list
        "D_SAE": best.d_sae, "K": best.k, "CONTEXT_LEN": best.ctx, "BATCH_TOKENS": best.batch_tokens,
        "TOTAL_TOKENS": best.tokens, "MODEL_BATCH_SIZE": best.fwd_batch_seqs,
        "RUN_NAME": f"{best.model_id.split('/')[-1].lower()}-L{'-'.join(map(str, best.layers))}-topk-{best.d_sae // 1024}k",
        # the tier recipe shuffles activations in blocks of BLOCK_BATCHES forwards (its buffer)
        "BLOCK_BATCHES": m.block_batches if isinstance(m.block_batches, str)
        else max(1, (best.buffer_tokens - best.batch_tokens) // rows_per_forward),
    }
    if gpu_class(best.gpu).n_gpus > 1:
        params["MODEL_DEVICE"] = "spread" if best.placement == "spread" else "cuda:0"
    return params
