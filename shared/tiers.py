"""Pick a tier: an explicit VRAM + throughput model that says which SAE recipe fits a GPU and a time budget.

Everything here is pure Python arithmetic on the tables below (no torch, no network), so the
recommendation is deterministic and every number can be traced to one documented constant.

Throughput model (per token):
  forward FLOPs = 2 * (params of the decoder blocks up to the deepest hooked layer)
                  + 2 * blocks * ctx * d_model                          (attention scores, Kaplan et al. 2020)
      The embedding is a table lookup (no matmul FLOPs) and the blocks after the deepest hooked layer
      never run, because the capture stops the forward early.
  SAE FLOPs     = SAE_FLOPS_PER_PARAM_PAIR * d_in * d_sae per SAE     (one TopK SAE training step)
  time/token    = forward FLOPs / (peak_half * mfu * fwd_mfu_scale) + SAE FLOPs / (peak_half * mfu)
                  (same GPU: serial; fwd_mfu_scale a model's measured slowdown, 1 by default)
  on 2xT4 the model runs on GPU 0 and the SAE on GPU 1, so tokens/s = min(forward rate, SAE rate).

Memory model (per GPU, GiB): weights + forward activations + SAE params/grads/Adam + SAE activations
+ activation buffer + CUDA context; an option fits when that total <= USABLE_FRACTION * VRAM.
Several SAEs (one per hooked layer) each keep their params and Adam state, but they train one after
another on each batch and free their gradients after the step (train.sae_step), so gradients and
step activations are counted for one SAE only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ._catalog import NOTEBOOKS

GIB = 1024**3

# ---------------------------------------------------------------------------------------------
# Constants of the model. Each is an assumption; the comment says where it comes from.
# ---------------------------------------------------------------------------------------------
USABLE_FRACTION = 0.90  # leave 10% of VRAM to allocator fragmentation and cuBLAS workspaces
CUDA_CONTEXT_GB = 0.8  # CUDA context + kernels of torch on a fresh process (typ. 0.5-1 GiB by nvidia-smi)
ACT_WORKSET_PER_D = 16  # peak forward working set per token, in units of d_model elements: residual,
#                         q/k/v/o and the gated MLP intermediate (2 * d_ff ~ 8 * d_model) of one block
#                         under torch.no_grad (earlier blocks' activations are freed as the forward goes)
SAE_FLOPS_PER_PARAM_PAIR = 10  # TopK SAE step ~ 10 * d_in * d_sae FLOPs/token on a bf16 GPU, where the
#                         step runs densely on tensor cores (SparseAutoencoder.use_sparse_kernels):
#                         encoder forward and weight gradient (2 + 2), decoder forward, input and
#                         weight gradients (2 + 2 + 2). (The sparse fp32 path of CPUs / T4s does ~6.)
SAE_ACT_COPIES = 3  # dense [batch, d_sae] fp32 tensors alive in an SAE step: pre-acts, their grad, top-k scratch
SAE_STATE_COPIES = 4  # fp32 params + grads + Adam exp_avg + exp_avg_sq
BUFFER_BYTES = 4  # the shuffling activation buffer holds fp32 activations
SETUP_MINUTES = 3.0  # fixed minutes per run: pip install, model load to GPU, validation + export at the end
DOWNLOAD_GB_PER_S = 0.15  # hub download speed on Colab / Kaggle (typ. 100-200 MB/s); adds weights_gb/speed
TOKEN_ROUND = 1_000_000  # token budgets are rounded down to whole millions (monotone in the budget)
FWD_BATCH_CHOICES = (32, 16, 8, 4, 2, 1)  # sequences per forward; the largest that fits is chosen
# Calibration anchor (catalog): "50M FineWeb-Edu tokens on a free T4 in 30-40 min" for gemma-2-2b L12.
# Through 13 Gemma blocks + a 16k SAE that is ~2.3 GFLOP/token, i.e. ~24k tokens/s = ~55 TFLOP/s
# sustained, ~85% of the T4's 65 TFLOP/s fp16 peak. No HF forward sustains that on a 70 W T4, so
# the T4 MFU below is set at an optimistic-but-defensible 0.55 (boost clocks held, large batches):
# ~50M tokens then takes ~60 min, and 30-40 min gives ~30M. Raise GPU_CLASSES["T4"].mfu to
# reproduce the catalog figure exactly.
CATALOG_T4_ANCHOR = {"model": "google/gemma-2-2b", "layer": 12, "tokens": 50_000_000, "minutes": 35}

GOALS = ("learn", "explore", "paper")
MIN_TOKENS = {"learn": 10_000_000, "explore": 50_000_000, "paper": 200_000_000}  # below this: not worth it
GOAL_TIERS = {"learn": (1, 2, 3), "explore": (2, 1, 3), "paper": (3, 2, 1)}  # preferred tier order


@dataclass(frozen=True)
class GPUClass:
    """One kind of machine: per-GPU memory, dense half-precision peak, and the MFU we assume."""

    name: str
    vram_gb: float  # per GPU, GiB as nvidia-smi reports it
    n_gpus: int
    peak_tflops: float  # dense fp16/bf16 tensor-core peak per GPU (vendor datasheet)
    bf16: bool  # False -> the model runs in fp16 (T4 / Turing has no bf16)
    mfu: float  # assumed model-FLOPs utilisation of a large-batch HF forward and the SAE step
    patterns: tuple[str, ...] = ()  # lower-case substrings of torch.cuda.get_device_name()
    note: str = ""


GPU_CLASSES: dict[str, GPUClass] = {
    g.name: g
    for g in (
        GPUClass("T4", 15.0, 1, 65.0, False, 0.55, ("t4",), "free Colab; fp16 only, 70 W, throttles"),
        GPUClass("2xT4", 15.0, 2, 65.0, False, 0.55, (), "Kaggle: model on cuda:0, SAE on cuda:1"),
        GPUClass("L4", 22.5, 1, 121.0, True, 0.40, ("l4",), "Colab Pro; 72 W, power-limited"),
        GPUClass("A10G", 22.5, 1, 70.0, True, 0.50, ("a10g", "a10"), "AWS g5 / HF Spaces"),
        GPUClass("RTX-4090", 24.0, 1, 165.0, True, 0.50, ("4090",), "consumer; fp32-accumulate peak"),
        GPUClass("A100-40", 39.4, 1, 312.0, True, 0.50, ("a100-sxm4-40", "a100-pcie-40", "a100 40"), ""),
        GPUClass("A100-80", 79.2, 1, 312.0, True, 0.50, ("a100",), "Colab Pro A100 is the 40 GB one"),
        # Hopper: measured on an H200 (BENCHMARKS.md, "Whole trainer"): the whole trainer ran at 0.26
        # (Gemma-2-2B to L12) and 0.30 (Qwen3.6-27B to L55, three SAEs) of the bf16 peak; the H100
        # shares the chip, so the same 0.28. The other classes' MFUs are still assumptions.
        GPUClass("H100-80", 79.6, 1, 989.0, True, 0.28, ("h100",), "measured on an H200"),
        GPUClass("RTX-PRO-6000", 95.0, 1, 500.0, True, 0.40, ("rtx pro 6000", "rtx 6000 blackwell"), "96 GB"),
        GPUClass("H200", 139.8, 1, 989.0, True, 0.28, ("h200",), "measured"),
        GPUClass("cpu", 12.0, 1, 0.2, True, 0.30, (), "RAM instead of VRAM; fp32 weights; not for training"),
    )
}


@dataclass(frozen=True)
class ModelSpec:
    """A candidate base model with the tier recipe (notebook, SAE size, layers) that trains on it."""

    model_id: str
    n_params: float  # total parameters, embeddings included
    n_layers: int
    d_model: int
    vocab: int
    tied: bool  # input and output embeddings shared
    n_heads: int
    tier: int
    notebook: str
    d_sae: int
    k: int
    layers: tuple[int, ...] | None = None  # None -> one SAE at the middle layer (n_layers // 2 - 1)
    eager_attention: bool = False  # Gemma-2 soft-capping: the [heads, T, T] scores are materialised
    capture: str = "hooks"  # "hidden_states" keeps every layer's output up to the deepest one
    ctx: int = 1024
    # forward speed relative to the GPU class's MFU, where measured otherwise: Qwen3.5-4B's Gated-DeltaNet
    # blocks run transformers' plain-PyTorch delta rule (no flash-linear-attention) at 0.68 of it (H200)
    fwd_mfu_scale: float = 1.0
    sae_batch_tokens: int = 4096
    buffer_tokens: int = 2**18

    @property
    def embed_params(self) -> float:
        return self.vocab * self.d_model * (1 if self.tied else 2)

    @property
    def block_params(self) -> float:
        """Parameters of one decoder block (norms included), from the total minus the embeddings."""
        return (self.n_params - self.embed_params) / self.n_layers

    def default_layers(self) -> tuple[int, ...]:
        return self.layers if self.layers is not None else (self.n_layers // 2 - 1,)


MODELS: dict[str, ModelSpec] = {
    m.model_id: m
    for m in (
        ModelSpec("google/gemma-2-2b", 2.614e9, 26, 2304, 256000, True, 8, 1,
                  "01_hobbyist_gemma2_2b_colab", 16384, 64, eager_attention=True),
        ModelSpec("microsoft/Phi-3-mini-4k-instruct", 3.821e9, 32, 3072, 32064, False, 32, 1,
                  "10_hobbyist_phi3_mini_colab", 16384, 64),
        ModelSpec("Qwen/Qwen3.5-4B", 4.5e9, 32, 2560, 248320, True, 16, 2,
                  "02_explorer_qwen35_4b_kaggle", 40960, 128, layers=(18,), fwd_mfu_scale=0.68),  # hybrid: 24 Gated-DeltaNet + 8 attention blocks
        ModelSpec("meta-llama/Llama-3.1-8B", 8.03e9, 32, 4096, 128256, False, 32, 2,
                  "08_explorer_llama3_8b_kaggle", 40960, 128),
        ModelSpec("mistralai/Mistral-7B-v0.3", 7.248e9, 32, 4096, 32768, False, 32, 2,
                  "09_explorer_mistral_7b_kaggle", 40960, 128),
        ModelSpec("Qwen/Qwen3.6-27B", 27.0e9, 64, 5120, 248320, False, 24, 3,
                  "03_papergrade_qwen36_27b_cloud", 65536, 128, layers=(11, 31, 55),
                  buffer_tokens=2**15),  # hybrid, 48 + 16 blocks; its buffer is "auto": what memory is left
        # Both Qwen hybrids load as text-only models whose block list a hook reaches (capture="hooks");
        # "hidden_states" models the output_hidden_states fallback for wrappers that hide it.
    )
}


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
    truncate_after_layer: bool  # True: fits only when the blocks after the deepest layer are dropped
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
    truncate_after_layer: bool
    note: str = ""
    parameters: dict = field(default_factory=dict)
    run_in: str = ""  # the catalog notebook to open today: tier_notebook, or a released one with the same recipe

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


# ---------------------------------------------------------------------------------------------
# GPU names
# ---------------------------------------------------------------------------------------------
def gpu_class(name: str | None) -> GPUClass:
    """The GPUClass for a class name (case-insensitive, "auto" not allowed); clear error otherwise."""
    if name is None:
        return GPU_CLASSES["cpu"]
    for key, g in GPU_CLASSES.items():
        if key.lower() == str(name).strip().lower():
            return g
    raise ValueError(f"unknown GPU class {name!r}; use one of {', '.join(GPU_CLASSES)} (or 'auto' to detect)")


def classify_gpu_name(name: str | None, count: int = 1, total_gb: float | None = None) -> str:
    """Map a device name such as "Tesla T4" or "NVIDIA H100 80GB HBM3" to a class name; None -> "cpu".

    An unknown name falls back to the largest single-GPU class whose VRAM fits in total_gb (a
    conservative guess); without total_gb it is an error that lists the classes to pick from.
    """
    if not name:
        return "cpu"
    low = name.lower()
    if "t4" in low.split() or low.endswith("t4"):
        return "2xT4" if count >= 2 else "T4"
    if "a100" in low:
        if total_gb is not None:
            return "A100-80" if total_gb > 60 else "A100-40"
        return "A100-40" if "40" in low else "A100-80"
    for key, g in GPU_CLASSES.items():
        if key in ("T4", "2xT4", "A100-40", "A100-80", "cpu"):
            continue
        if any(p in low for p in g.patterns):
            return key
    if total_gb is not None:
        fitting = [g for g in GPU_CLASSES.values() if g.n_gpus == 1 and g.name != "cpu" and g.vram_gb <= total_gb + 0.5]
        if fitting:
            return max(fitting, key=lambda g: (g.vram_gb, -g.peak_tflops)).name
    raise ValueError(f"unrecognised GPU {name!r}: set GPU to one of {', '.join(GPU_CLASSES)}")


def _detected_gpus() -> list:
    """The visible GPUs (shared.runtime.gpu_info: .name, .total_gb); imported here so tiers needs no torch."""
    from .runtime import gpu_info

    return list(gpu_info())


def detect_gpu_class(name: str | None | object = ..., count: int = 1, total_gb: float | None = None) -> str:
    """The GPU class of this machine (no argument) or of a given device name; no GPU -> "cpu"."""
    if name is ...:
        gpus = _detected_gpus()
        if not gpus:
            return "cpu"
        return classify_gpu_name(gpus[0].name, count=len(gpus), total_gb=getattr(gpus[0], "total_gb", None))
    return classify_gpu_name(name, count=count, total_gb=total_gb)


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------
def forward_flops_per_token(m: ModelSpec, deepest_layer: int, ctx: int | None = None) -> float:
    """Matmul FLOPs per token of a forward that stops after block `deepest_layer` (0-based)."""
    blocks = deepest_layer + 1
    ctx = m.ctx if ctx is None else ctx
    return 2 * m.block_params * blocks + 2 * blocks * ctx * m.d_model


def sae_flops_per_token(d_in: int, d_sae: int, n_saes: int = 1) -> float:
    """FLOPs per token of one TopK SAE training step, times the number of SAEs fed."""
    return SAE_FLOPS_PER_PARAM_PAIR * d_in * d_sae * n_saes


def tokens_per_second(m: ModelSpec, g: GPUClass, layers: tuple[int, ...], d_sae: int) -> float:
    """Estimated training tokens/s of `len(layers)` SAEs fed by one forward on GPU class g."""
    rate = g.peak_tflops * 1e12 * g.mfu
    t_fwd = forward_flops_per_token(m, max(layers)) / (rate * m.fwd_mfu_scale)
    t_sae = sae_flops_per_token(m.d_model, d_sae, len(layers)) / rate
    if g.n_gpus >= 2:  # model on GPU 0 and SAE on GPU 1 work in parallel: the slower one sets the pace
        return 1.0 / max(t_fwd, t_sae)
    return 1.0 / (t_fwd + t_sae)


def memory_breakdown(
    m: ModelSpec,
    g: GPUClass,
    layers: tuple[int, ...],
    d_sae: int,
    fwd_batch_seqs: int,
    batch_tokens: int,
    buffer_tokens: int,
    truncate: bool = False,
) -> dict[str, dict[str, float]]:
    """GiB per part and per GPU: {"gpu0": {part: GiB, ..., "total": GiB}, ["gpu1": {...}]}."""
    wbytes = 4 if g.name == "cpu" else 2  # bf16 / fp16 on GPU (T4: fp16), fp32 on CPU
    deepest = max(layers)
    n_blocks = deepest + 1 if truncate else m.n_layers
    params = m.n_params if not truncate else m.vocab * m.d_model + m.block_params * n_blocks
    fwd_tokens = fwd_batch_seqs * m.ctx
    kept = (deepest + 2) if m.capture == "hidden_states" else len(layers)  # captured [B, T, D] outputs
    act_per_token = (ACT_WORKSET_PER_D + kept) * m.d_model * wbytes
    if m.eager_attention:
        act_per_token += 2 * m.n_heads * m.ctx * wbytes  # scores + softmax of one block
    sae_params = (2 * m.d_model * d_sae + d_sae + m.d_model) * len(layers)
    model_side = {
        "weights": params * wbytes / GIB,
        "forward_activations": fwd_tokens * act_per_token / GIB,
        "cuda_context": CUDA_CONTEXT_GB if g.name != "cpu" else 0.0,
    }
    sae_side = {
        "sae_params": sae_params * 4 / GIB,
        "sae_grads": sae_params / len(layers) * 4 / GIB,  # one SAE's at a time (freed after its step)
        "adam_state": 2 * sae_params * 4 / GIB,
        "sae_activations": SAE_ACT_COPIES * batch_tokens * d_sae * 4 / GIB,  # the SAEs step one after another
        "activation_buffer": buffer_tokens * m.d_model * len(layers) * BUFFER_BYTES / GIB,
    }
    if g.n_gpus >= 2:
        gpu1 = dict(sae_side, cuda_context=CUDA_CONTEXT_GB)
        out = {"gpu0": dict(model_side), "gpu1": gpu1}
    else:
        out = {"gpu0": {**model_side, **sae_side}}
    for part in out.values():
        part["total"] = sum(part.values())
    return out


def _fits(mem: dict, g: GPUClass) -> bool:
    return all(p["total"] <= USABLE_FRACTION * g.vram_gb for p in mem.values())


def _weigh(m: ModelSpec, g: GPUClass, layers: tuple[int, ...], budget_minutes: float, goal: str,
           min_tokens: int) -> Option:
    """Evaluate one configuration: choose the largest forward batch that fits, then tokens in budget."""
    chosen = None
    for truncate in (False, True):
        for b in FWD_BATCH_CHOICES:
            mem = memory_breakdown(m, g, layers, m.d_sae, b, m.sae_batch_tokens, m.buffer_tokens, truncate)
            if _fits(mem, g):
                chosen = (truncate, b, mem)
                break
        if chosen:
            break
    fits = chosen is not None
    if not fits:  # report the smallest configuration's needs
        chosen = (True, 1, memory_breakdown(m, g, layers, m.d_sae, 1, m.sae_batch_tokens, m.buffer_tokens, True))
    truncate, b, mem = chosen
    tps = tokens_per_second(m, g, layers, m.d_sae)
    weights_gb = m.n_params * 2 / GIB
    setup = SETUP_MINUTES + weights_gb / DOWNLOAD_GB_PER_S / 60
    train_min = max(0.0, budget_minutes - setup)
    tokens = int(tps * train_min * 60 // TOKEN_ROUND * TOKEN_ROUND) if fits else 0
    est = setup + tokens / tps / 60 if tokens else setup
    reason = ""
    if not fits:
        worst = max(mem, key=lambda k: mem[k]["total"])
        reason = (f"does not fit: needs {mem[worst]['total']:.1f} GiB on {worst} even with batch 1 and the "
                  f"unused blocks dropped > {USABLE_FRACTION * g.vram_gb:.1f} GiB usable of {g.vram_gb:g}")
    elif tokens < min_tokens:
        reason = (f"budget gives only {tokens / 1e6:.0f}M tokens < {min_tokens / 1e6:.0f}M minimum for "
                  f"goal {goal!r} (setup {setup:.1f} min, {tps:,.0f} tok/s)")
    return Option(
        notebook=m.notebook, model_id=m.model_id, tier=m.tier, gpu=g.name, layers=tuple(layers),
        d_sae=m.d_sae, k=m.k, ctx=m.ctx, fwd_batch_seqs=b, batch_tokens=m.sae_batch_tokens,
        buffer_tokens=m.buffer_tokens, truncate_after_layer=truncate, fits=fits, memory_gb=mem,
        tokens_per_s=tps, setup_minutes=setup, tokens=tokens, est_minutes=est,
        status="rejected" if reason else "viable", reason=reason,
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
            options.append(_weigh(m, g, m.default_layers(), budget_minutes, goal, min_tokens))
            if m.layers is not None and len(m.layers) > 1:  # the multi-layer recipe also as one middle SAE
                options.append(_weigh(m, g, (m.n_layers // 2 - 1,), budget_minutes, goal, min_tokens))
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
            "fwd_batch_seqs": o.fwd_batch_seqs, "truncate_after_layer": o.truncate_after_layer,
            "tokens_per_s": round(o.tokens_per_s), "tokens": o.tokens, "est_minutes": round(o.est_minutes, 1),
            "status": o.status, "reason": o.reason,
        })
    return rows


# The tier notebooks of the catalog that exist today (read from the generated catalog module). Every
# tier notebook renders from the same recipe source, so a tier whose own notebook is not out yet
# runs in a released one with its parameters.
TIER_SOURCE = "tier_recipe.py"
RELEASED_NOTEBOOKS = tuple(n["id"] for n in NOTEBOOKS if n["source"] == TIER_SOURCE)


def notebook_to_open(notebook: str) -> str:
    """`notebook` if it is released, else the first released tier notebook (the same recipe source)."""
    return notebook if notebook in RELEASED_NOTEBOOKS else RELEASED_NOTEBOOKS[0]


FALLBACK_GPU = "T4"  # where to send someone whose machine cannot train anything: a free Colab T4


def recommend(gpu: str | None, budget_minutes: float, goal: str = "learn") -> Recommendation:
    """The best option for this GPU class, budget and goal; on a machine where nothing is viable
    (e.g. "cpu"), the recommendation for a free Colab T4 with a note saying so."""
    options = weigh_options(gpu, budget_minutes, goal)
    best = next((o for o in options if o.status == "recommended"), None)
    note = ""
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
    if best.tier != GOAL_TIERS[goal][0]:
        note = f"the tier-{GOAL_TIERS[goal][0]} recipe for goal {goal!r} is not viable here; this is the best that is"
    if best.tokens < MIN_TOKENS[goal]:
        note = (note + "; " if note else "") + (
            f"only {best.tokens / 1e6:.0f}M tokens fit the budget, below the {MIN_TOKENS[goal] / 1e6:.0f}M a "
            f"{goal!r} run wants: raise BUDGET_MINUTES for a better SAE")
    if best.layers != m.default_layers():
        note = (note + "; " if note else "") + (
            f"the full recipe trains layers {list(m.default_layers())} at once and needs more VRAM; "
            f"this trains the middle layer only")
    if best.truncate_after_layer:
        note = (note + "; " if note else "") + (
            f"the weights do not fit one GPU: spread the model over both (MODEL_DEVICE = 'spread'); only "
            f"blocks up to layer {max(best.layers)} run, so the throughput estimate holds")
    params = {
        "MODEL_ID": best.model_id,
        "LAYER": best.layers[0] if len(best.layers) == 1 else list(best.layers),  # the recipe takes an int or a list
        "D_SAE": best.d_sae, "K": best.k, "CONTEXT_LEN": best.ctx, "BATCH_TOKENS": best.batch_tokens,
        "TOTAL_TOKENS": best.tokens, "MODEL_BATCH_SIZE": best.fwd_batch_seqs,
        "RUN_NAME": f"{best.model_id.split('/')[-1].lower()}-L{'-'.join(map(str, best.layers))}-topk-{best.d_sae // 1024}k",
        # the tier recipe shuffles activations in blocks of BLOCK_BATCHES forwards (its buffer)
        "BLOCK_BATCHES": max(1, best.buffer_tokens // (best.fwd_batch_seqs * best.ctx)),
    }
    if best.gpu == "2xT4":
        params["MODEL_DEVICE"] = "spread" if best.truncate_after_layer else "cuda:0"
    run_in = notebook_to_open(best.notebook)
    if run_in != best.notebook:
        note = (note + "; " if note else "") + (
            f"{best.notebook} is not released yet: open {run_in}, which runs the same recipe, and paste "
            f"these parameters")
    return Recommendation(
        run_in=run_in,
        tier_notebook=best.notebook, model_id=best.model_id, layer=best.layers[len(best.layers) // 2],
        layers=best.layers, d_sae=best.d_sae, k=best.k, batch_tokens=best.batch_tokens, tokens=best.tokens,
        est_minutes=round(best.est_minutes, 1), gpu=best.gpu, goal=goal, budget_minutes=float(budget_minutes),
        tokens_per_s=round(best.tokens_per_s), memory=best.memory_gb, truncate_after_layer=best.truncate_after_layer,
        note=note, parameters=params,
    )


def catalog_anchor_check() -> dict:
    """How the catalog's T4 headline compares with this model: predicted minutes and the MFU it implies."""
    a = CATALOG_T4_ANCHOR
    m, g = MODELS[a["model"]], GPU_CLASSES["T4"]
    flops = forward_flops_per_token(m, a["layer"]) + sae_flops_per_token(m.d_model, m.d_sae)
    tps = tokens_per_second(m, g, (a["layer"],), m.d_sae)
    implied = a["tokens"] * flops / (a["minutes"] * 60) / (g.peak_tflops * 1e12)
    return {"claim_tokens": a["tokens"], "claim_minutes": a["minutes"], "gflop_per_token": flops / 1e9,
            "model_tokens_per_s": tps, "model_minutes": a["tokens"] / tps / 60, "assumed_mfu": g.mfu,
            "implied_mfu": implied}
