"""Pick a tier, and know what every notebook needs: a VRAM + time model of each default run.

Everything here is pure Python arithmetic on the tables below (no torch, no network), so the
numbers are deterministic and each can be traced to one documented constant. The same model
answers two questions: notebook 07's "which recipe fits this GPU and budget" (`recommend`) and
"does every catalog notebook's default run fit the GPU it names, and how long does it take"
(`notebook_estimate`, tested for every GPU notebook in tests/test_tiers.py and measured by
bench/train_loop.py --fit-check on a GPU).

Throughput (per token):
  forward FLOPs = 2 * (params of the decoder blocks up to the deepest hooked layer)
                  + 2 * blocks * ctx * d_model                          (attention scores, Kaplan et al. 2020)
      The embedding is a lookup (no matmul) and the blocks after the deepest hooked layer never run.
  SAE step      = 10 * d_in * d_sae FLOPs at the half-precision peak on a bf16 GPU (five dense
                  tensor-core matmuls), or SAE_FP32_FLOPS_PER_PARAM_PAIR * d_in * d_sae at the fp32
                  peak on a T4 (no bf16 there, so the step runs in fp32 through the sparse kernels)
  time/token    = forward FLOPs / (peak_half * mfu * fwd_mfu_scale) + SAE step time, in series: the
                  SAE step waits on the host (its NaN check and dead-latent list), so a forward on one
                  GPU and SAE steps on another do not overlap.

Memory (per GPU, GiB): weights + the forward's working set + the SAEs with gradients (one SAE's at a
time) and two Adam moments + the step's dense [batch, d_sae] tensors + the activation buffer + the
CUDA context; it fits when that total stays <= USABLE_FRACTION of the memory torch reports. Where
a model is spread over several GPUs (MODEL_DEVICE = "spread") its blocks are split as
transformers' device_map="auto" splits them under the `max_memory` that `spread_limits` gives it,
so the SAE's GPU keeps room for the SAE; tests/test_tiers.py checks this arithmetic against
transformers' own split of each default model built from its real config (tests/data/models).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

from ..training.memory import AUTO_BLOCK_BATCHES, SAE_ACT_COPIES, USABLE_FRACTION, buffer_budget_bytes
from .catalog import NOTEBOOKS

GIB = 1024**3

# ---------------------------------------------------------------------------------------------
# Constants of the model. Each is an assumption; the comment says where it comes from. The terms the
# trainer itself is sized by (USABLE_FRACTION, SAE_ACT_COPIES, the auto buffer's share and cap) are
# training/memory.py's, imported above.
# ---------------------------------------------------------------------------------------------
CUDA_CONTEXT_GB = 0.8  # CUDA context + torch's kernels in a fresh process (typ. 0.3-1 GiB by nvidia-smi)
ACT_WORKSET_PER_D = 16  # peak forward working set per token, in units of d_model elements: residual,
#                         q/k/v/o and the gated MLP intermediate (2 * d_ff ~ 8 * d_model) of one block
#                         under torch.no_grad (earlier blocks' activations are freed as the forward goes)
SAE_FLOPS_PER_PARAM_PAIR = 10  # TopK SAE step on a bf16 GPU: dense on tensor cores, encoder forward and weight
#                         gradient (2 + 2), decoder forward, input and weight gradients (2 + 2 + 2)
SAE_FP32_FLOPS_PER_PARAM_PAIR = 2.8  # the fp32 sparse step (a T4): ~1.4 encoder matmuls of 2 d_in d_sae
#                         (BENCHMARKS.md, CPU: the step costs 1.2-1.4x one encoder matmul at 1-3 % dead),
#                         run at the fp32 peak times the GPU's sustained-GEMM share
SAE_STATE_COPIES = 4  # fp32 params + grads + Adam exp_avg + exp_avg_sq
BUFFER_BYTES = 4  # the shuffling activation buffer holds fp32 activations
LOGIT_COPIES = 2  # [batch, seq, vocab] tensors in the model dtype alive in a forward that returns logits
#                   (the head's output and a reference kept for a KL; Gemma-2's soft-cap adds a third)
SETUP_MINUTES = 3.0  # fixed minutes per run: pip install, model load to the GPU, reports and figures
DOWNLOAD_GB_PER_S = 0.15  # hub download speed on Colab / Kaggle (typ. 100-200 MB/s)
FORWARD_CALL_S_PER_LAYER = 5e-4  # a forward call's launch-bound floor per decoder block (~20-30 kernels and
#                         hooks at ~20 us each): what a loop of tiny forwards (patching, decoding) pays
DECODE_BW_SHARE = 0.6  # share of the memory bandwidth a decoding step reads the weights at
JUDGE_SECONDS_PER_FEATURE = 6.0  # notebook 04 with a hosted LLM judge: a label and a detection-scoring
#                         request (~3 s each, one at a time); 0 with the offline labeller
TOKEN_ROUND = 1_000_000  # token budgets are rounded down to whole millions (monotone in the budget)
FWD_BATCH_CHOICES = (32, 16, 8, 4, 2, 1)  # sequences per forward; the largest that fits is chosen

GOALS = ("learn", "explore", "paper")
MIN_TOKENS = {"learn": 10_000_000, "explore": 50_000_000, "paper": 200_000_000}  # below this: not worth it
GOAL_TIERS = {"learn": (1, 2, 3), "explore": (2, 1, 3), "paper": (3, 2, 1)}  # preferred tier order


@dataclass(frozen=True)
class GPUClass:
    """One kind of machine: per-GPU memory, peaks, and the share of the peak a run is assumed to reach."""

    name: str
    vram_gb: float  # per GPU, GiB as torch reports it (torch.cuda.get_device_properties().total_memory)
    n_gpus: int
    peak_tflops: float  # dense fp16/bf16 tensor-core peak per GPU (vendor datasheet)
    fp32_tflops: float  # fp32 (non-tensor-core) peak per GPU (vendor datasheet)
    mem_bw_gbs: float  # memory bandwidth, GB/s (vendor datasheet): what a decoding step is bound by
    bf16: bool  # False -> the model runs in fp16 and the SAE step in fp32 (T4 / Turing has no bf16)
    mfu: float  # model-FLOPs utilisation of the whole trainer (forward and SAE step) at the half peak
    gemm_share: float = 0.5  # sustained share of the fp32 peak in a long GEMM (used where bf16 is False)
    patterns: tuple[str, ...] = ()  # lower-case substrings of torch.cuda.get_device_name()
    note: str = ""
    basis: str = ""  # where mfu comes from: "measured ..." or "estimated ..."


# MFU basis. Measured: the whole trainer on an H200 ran at 0.26 (Gemma-2-2B to L12) and 0.30 (Qwen3.6-27B
# to L55, three SAEs) of the bf16 peak (BENCHMARKS.md, bench/results/h200-2026-11-27), so Hopper gets 0.28.
# Estimated for the rest: cards that hold their clocks under load (A10G, RTX-4090, A100, RTX PRO 6000) are
# assumed to reach Hopper's share of their own peak. The T4 and L4 are power-capped at 70-72 W: a long
# cuBLAS fp16 GEMM sustains ~24 of a T4's 65 TFLOP/s (0.37; NVIDIA developer forum, "About GPU peak
# performance", 2023), and the whole trainer reached 0.54 of its bf16 matmul floor's share on the H200
# (0.28 against 0.52), so the T4 gets 0.37 x 0.54 = 0.20 and its fp32 SAE step 0.37 of the fp32 peak.
# The L4 is assumed to throttle as the T4 does.
HOPPER_MFU = 0.28
T4_GEMM_SHARE = 0.37
T4_MFU = 0.20
_MEASURED = "measured: the whole trainer on an H200, 2026-11-27 (BENCHMARKS.md)"
_T4_BASIS = ("estimated: 0.37 of the fp16 peak sustained by a long cuBLAS GEMM under the 70 W cap (NVIDIA "
             "forum), times 0.54, the share of its matmul floor the whole trainer reached on an H200")
_AS_HOPPER = "estimated: the H200's measured 0.28 of the bf16 peak, assumed for a card that holds its clocks"

GPU_CLASSES: dict[str, GPUClass] = {
    g.name: g
    for g in (
        # T4: nominal 16 GB, nvidia-smi 15360 MiB; torch reports 14.56-14.58 GiB on the current Colab and
        # Kaggle drivers (e.g. QwenLM/Qwen3-VL#1046, Zheng-Chong/CatVTON#133), of which 90 % = 13.1 GiB is usable.
        GPUClass("T4", 14.56, 1, 65.0, 8.1, 320, False, T4_MFU, T4_GEMM_SHARE, ("t4",),
                 "free Colab; fp16 only, 70 W, throttles", _T4_BASIS),
        GPUClass("2xT4", 14.56, 2, 65.0, 8.1, 320, False, T4_MFU, T4_GEMM_SHARE, (),
                 "Kaggle: the model on cuda:0 (or spread over both), the SAE on cuda:1", _T4_BASIS),
        GPUClass("L4", 22.5, 1, 121.0, 30.3, 300, True, T4_MFU, 0.37, ("l4",), "Colab Pro; 72 W, power-limited",
                 "estimated: assumed to throttle as the T4 does (same 70 W class)"),
        GPUClass("A10G", 22.5, 1, 70.0, 31.2, 600, True, HOPPER_MFU, 0.5, ("a10g", "a10"), "AWS g5 / HF Spaces",
                 _AS_HOPPER),
        GPUClass("RTX-4090", 24.0, 1, 165.0, 82.6, 1008, True, HOPPER_MFU, 0.5, ("4090",),
                 "consumer; fp32-accumulate peak", _AS_HOPPER),
        GPUClass("A100-40", 39.4, 1, 312.0, 19.5, 1555, True, HOPPER_MFU, 0.5,
                 ("a100-sxm4-40", "a100-pcie-40", "a100 40"), "", _AS_HOPPER),
        GPUClass("A100-80", 79.2, 1, 312.0, 19.5, 2039, True, HOPPER_MFU, 0.5, ("a100",),
                 "Colab Pro A100 is the 40 GB one", _AS_HOPPER),
        GPUClass("H100-80", 79.6, 1, 989.0, 67.0, 3350, True, HOPPER_MFU, 0.5, ("h100",),
                 "the H200's chip with less memory", _MEASURED + ", same chip"),
        GPUClass("RTX-PRO-6000", 95.0, 1, 500.0, 125.0, 1792, True, HOPPER_MFU, 0.5,
                 ("rtx pro 6000", "rtx 6000 blackwell"), "96 GB", _AS_HOPPER),
        GPUClass("H200", 139.8, 1, 989.0, 67.0, 4800, True, HOPPER_MFU, 0.5, ("h200",), "measured", _MEASURED),
        GPUClass("cpu", 12.0, 1, 0.2, 0.2, 20, True, 0.30, 0.3, (), "RAM instead of VRAM; fp32 weights; not for training",
                 "estimated"),
    )
}


@dataclass(frozen=True)
class ModelShape:
    """A default model's shape, from its config (tests/data/models/<org>__<name>/config.json, checked there)."""

    model_id: str
    n_params: float  # parameters of the model transformers loads (text-only for the Qwen hybrids), embeddings in
    n_layers: int
    d_model: int
    vocab: int
    tied: bool  # input and output embeddings shared
    n_heads: int
    kv_dim: int  # num_key_value_heads * head_dim: one of K or V per token and layer in a KV cache
    eager_attention: bool = False  # Gemma-2 soft-capping: the [heads, T, T] scores are materialised
    logit_softcap: bool = False  # Gemma-2's final soft-cap: one more [batch, seq, vocab] temporary
    checkpoint_bytes: int = 2  # bytes per parameter of the Hub checkpoint (what a first run downloads)
    # forward speed relative to the GPU class's MFU, where measured otherwise: Qwen3.5-4B's Gated-DeltaNet
    # blocks run transformers' plain-PyTorch delta rule (no flash-linear-attention) at 0.68 of it (H200)
    fwd_mfu_scale: float = 1.0

    @property
    def embed_params(self) -> float:
        return self.vocab * self.d_model * (1 if self.tied else 2)

    @property
    def block_params(self) -> float:
        """Parameters of one decoder block (norms included), from the total minus the embeddings."""
        return (self.n_params - self.embed_params) / self.n_layers


SHAPES: dict[str, ModelShape] = {
    s.model_id: s
    for s in (
        ModelShape("google/gemma-2-2b", 2.6143e9, 26, 2304, 256000, True, 8, 4 * 256, eager_attention=True,
                   logit_softcap=True, checkpoint_bytes=4),  # its Hub weights are float32
        ModelShape("google/gemma-2-2b-it", 2.6143e9, 26, 2304, 256000, True, 8, 4 * 256, eager_attention=True,
                   logit_softcap=True),
        ModelShape("microsoft/Phi-3-mini-4k-instruct", 3.8211e9, 32, 3072, 32064, False, 32, 32 * 96),
        ModelShape("Qwen/Qwen3.5-4B", 4.2058e9, 32, 2560, 248320, True, 16, 4 * 256, fwd_mfu_scale=0.68),
        ModelShape("meta-llama/Llama-3.1-8B", 8.0303e9, 32, 4096, 128256, False, 32, 8 * 128),
        ModelShape("mistralai/Mistral-7B-v0.3", 7.2480e9, 32, 4096, 32768, False, 32, 8 * 128),
        ModelShape("Qwen/Qwen3.6-27B", 26.896e9, 64, 5120, 248320, False, 24, 4 * 256),
        ModelShape("gpt2", 0.12444e9, 12, 768, 50257, True, 12, 768, checkpoint_bytes=4),
        ModelShape("EleutherAI/pythia-70m-deduped", 0.07043e9, 6, 512, 50304, False, 8, 512),
    )
}


@dataclass(frozen=True)
class ModelSpec:
    """A tier recipe: a model and the parameters its catalog notebook trains with (tests/test_tiers.py
    checks every field against notebooks_src/catalog.toml, so notebook 07 recommends what the notebook runs)."""

    shape: ModelShape
    tier: int
    notebook: str
    layers: tuple[int, ...]  # LAYER
    d_sae: int  # D_SAE
    k: int  # K
    ctx: int = 1024  # CONTEXT_LEN
    sae_batch_tokens: int = 4096  # BATCH_TOKENS
    fwd_batch_seqs: int = 8  # MODEL_BATCH_SIZE
    block_batches: int | str = 32  # BLOCK_BATCHES: forwards per shuffled block, or "auto" (from free memory)
    total_tokens: int = 50_000_000  # TOTAL_TOKENS
    val_tokens: int = 500_000  # VAL_TOKENS
    placement: str = "auto"  # "auto": one GPU, or split over two (model cuda:0, SAE cuda:1); "spread"

    def __getattr__(self, name):  # the shape's fields read as the recipe's own (m.d_model, m.n_params, ...)
        if name == "shape":
            raise AttributeError(name)
        return getattr(self.shape, name)

    @property
    def model_id(self) -> str:
        return self.shape.model_id

    def default_layers(self) -> tuple[int, ...]:
        return self.layers

    def buffer_rows(self, fwd_batch_seqs: int | None = None) -> int | None:
        """Rows of the activation buffer for an integer BLOCK_BATCHES (None for "auto")."""
        if not isinstance(self.block_batches, int):
            return None
        return self.block_batches * (fwd_batch_seqs or self.fwd_batch_seqs) * self.ctx + self.sae_batch_tokens


MODELS: dict[str, ModelSpec] = {
    m.model_id: m
    for m in (
        ModelSpec(SHAPES["google/gemma-2-2b"], 1, "01_hobbyist_gemma2_2b_colab", (12,), 16384, 64),
        ModelSpec(SHAPES["microsoft/Phi-3-mini-4k-instruct"], 1, "10_hobbyist_phi3_mini_colab", (16,), 24576, 64,
                  fwd_batch_seqs=4, block_batches=16),
        ModelSpec(SHAPES["Qwen/Qwen3.5-4B"], 2, "02_explorer_qwen35_4b_kaggle", (18,), 40960, 128,
                  fwd_batch_seqs=4, block_batches="auto", total_tokens=150_000_000),  # hybrid: 24 DeltaNet + 8 attention
        ModelSpec(SHAPES["meta-llama/Llama-3.1-8B"], 2, "08_explorer_llama3_8b_kaggle", (16,), 32768, 64,
                  block_batches=8, total_tokens=100_000_000, placement="spread"),
        ModelSpec(SHAPES["mistralai/Mistral-7B-v0.3"], 2, "09_explorer_mistral_7b_kaggle", (16,), 32768, 64,
                  block_batches=8, total_tokens=100_000_000, placement="spread"),
        ModelSpec(SHAPES["Qwen/Qwen3.6-27B"], 3, "03_papergrade_qwen36_27b_cloud", (11, 31, 55), 65536, 128,
                  fwd_batch_seqs=2, block_batches="auto", total_tokens=200_000_000, val_tokens=1_000_000),
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
    from ..runtime import gpu_info

    return list(gpu_info())


def detect_gpu_class(name: str | None | object = ..., count: int = 1, total_gb: float | None = None) -> str:
    """The GPU class of this machine (no argument) or of a given device name; no GPU -> "cpu"."""
    if name is ...:
        gpus = _detected_gpus()
        if not gpus:
            return "cpu"
        return classify_gpu_name(gpus[0].name, count=len(gpus), total_gb=getattr(gpus[0], "total_gb", None))
    return classify_gpu_name(name, count=count, total_gb=total_gb)


def accelerator_classes(accelerator: str) -> tuple[str, ...]:
    """The GPU classes a catalog `accelerator` names: "T4" -> ("T4",), "2xT4" -> ("2xT4",),
    "96 GB GPU (RTX PRO 6000, H200)" -> ("RTX-PRO-6000", "H200"); () for "none"/"cpu"."""
    text = str(accelerator).strip().lower()
    if text in ("", "none", "cpu"):
        return ()
    for key in GPU_CLASSES:
        if key.lower() == text:
            return (key,)
    found = [key for key, g in GPU_CLASSES.items() if key != "cpu" and g.n_gpus == 1
             and (any(p in text for p in g.patterns) or key.lower() in text)]
    if re.search(r"(2\s*x\s*t4|t4\s*x\s*2)", text):
        return ("2xT4",)
    if not found:
        raise ValueError(f"accelerator {accelerator!r} names no GPU class of shared/notebook/tiers.py "
                         f"({', '.join(GPU_CLASSES)})")
    return tuple(dict.fromkeys(found))


# ---------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------
def forward_flops_per_token(m, deepest_layer: int, ctx: int | None = None) -> float:
    """Matmul FLOPs per token of a forward that stops after block `deepest_layer` (0-based)."""
    blocks = deepest_layer + 1
    ctx = getattr(m, "ctx", 1024) if ctx is None else ctx
    return 2 * m.block_params * blocks + 2 * blocks * ctx * m.d_model


def full_forward_flops_per_token(s: ModelShape, ctx: int) -> float:
    """FLOPs per token of a whole forward, the unembedding (logits over the vocabulary) included."""
    return forward_flops_per_token(s, s.n_layers - 1, ctx) + 2 * s.vocab * s.d_model


def sae_flops_per_token(d_in: int, d_sae: int, n_saes: int = 1) -> float:
    """FLOPs per token of one TopK SAE training step on a bf16 GPU, times the number of SAEs fed."""
    return SAE_FLOPS_PER_PARAM_PAIR * d_in * d_sae * n_saes


def _half_rate(g: GPUClass) -> float:
    return g.peak_tflops * 1e12 * g.mfu


def sae_seconds_per_token(d_in: int, d_sae: int, n_saes: int, g: GPUClass) -> float:
    """Seconds per token of `n_saes` SAE training steps: dense bf16 on a bf16 GPU, sparse fp32 elsewhere."""
    if g.bf16:
        return sae_flops_per_token(d_in, d_sae, n_saes) / _half_rate(g)
    return SAE_FP32_FLOPS_PER_PARAM_PAIR * d_in * d_sae * n_saes / (g.fp32_tflops * 1e12 * g.gemm_share)


def sae_encode_seconds_per_token(d_in: int, d_sae: int, g: GPUClass) -> float:
    """Seconds per token of an fp32 SAE encode (inference: one [d_in, d_sae] matmul)."""
    return 2 * d_in * d_sae / (g.fp32_tflops * 1e12 * g.gemm_share)


def forward_seconds_per_token(s: ModelShape, g: GPUClass, deepest: int, ctx: int) -> float:
    return forward_flops_per_token(s, deepest, ctx) / (_half_rate(g) * s.fwd_mfu_scale)


def tokens_per_second(m: ModelSpec, g: GPUClass, layers: tuple[int, ...], d_sae: int) -> float:
    """Estimated training tokens/s of `len(layers)` SAEs fed by one forward on GPU class g (the forward
    and the SAE steps in series, on one GPU or two)."""
    t_fwd = forward_seconds_per_token(m.shape, g, max(layers), m.ctx)
    return 1.0 / (t_fwd + sae_seconds_per_token(m.d_model, d_sae, len(layers), g))


def decode_seconds_per_step(s: ModelShape, g: GPUClass, batch: int = 1) -> float:
    """One generation step of `batch` sequences: the weights read once (bandwidth-bound), or the
    matmuls when the batch is large, plus the step's launch-bound floor."""
    read = s.n_params * _weight_bytes(g) / (g.mem_bw_gbs * 1e9 * DECODE_BW_SHARE)
    compute = 2 * s.n_params * batch / _half_rate(g)
    return max(read, compute) + FORWARD_CALL_S_PER_LAYER * s.n_layers


def setup_minutes(s: ModelShape) -> float:
    """Install, download of the checkpoint, load, and the reports at the end."""
    return SETUP_MINUTES + s.n_params * s.checkpoint_bytes / 1e9 / DOWNLOAD_GB_PER_S / 60


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------
def _weight_bytes(g: GPUClass) -> int:
    return 4 if g.name == "cpu" else 2  # bf16 / fp16 on a GPU (a T4: fp16), fp32 on the CPU


def forward_gib(s: ModelShape, seqs: int, ctx: int, kept_layers: int, wbytes: int) -> float:
    """The no-grad forward's working set: one block's activations per token plus the `kept_layers`
    captured [B, T, D] outputs; Gemma-2's eager attention adds its [B, heads, T, T] scores."""
    return forward_gib_of(s.d_model, s.n_heads, s.eager_attention, seqs, ctx, kept_layers, wbytes)


def forward_gib_of(d_model: int, n_heads: int, eager_attention: bool, seqs: int, ctx: int, kept_layers: int,
                   wbytes: int) -> float:
    """forward_gib from the config's numbers (what recipes.tier.spread_max_memory has before the model loads)."""
    per_token = (ACT_WORKSET_PER_D + kept_layers) * d_model * wbytes
    if eager_attention:
        per_token += 2 * n_heads * ctx * wbytes
    return seqs * ctx * per_token / GIB


def sae_training_gib(d_in: int, d_sae: int, n_saes: int, batch_tokens: int,
                     crosscoder: bool = False) -> dict[str, float]:
    """The SAEs' fp32 parameters and Adam moments (every SAE), one SAE's gradients and step tensors (the
    SAEs step one after another and free their gradients: training.step.sae_step), in GiB. crosscoder: one SAE
    reading all n_saes layers (as many parameters, its gradients span them all)."""
    params = (2 * d_in * d_sae + d_sae + d_in) * n_saes
    return {
        "sae_params": params * 4 / GIB,
        "sae_grads": params / (1 if crosscoder else n_saes) * 4 / GIB,
        "adam_state": 2 * params * 4 / GIB,
        "sae_activations": SAE_ACT_COPIES * batch_tokens * d_sae * 4 / GIB,
    }


def step_reserve_gib(d_in: int, d_sae: int, n_saes: int, batch_tokens: int, adam_allocated: bool = False) -> float:
    """What the training steps add to the memory after the buffer is sized: Adam's moments (torch
    allocates them at the first step) unless already there, one SAE's gradients and its step tensors.
    training.buffer.step_reserve_bytes counts the same terms from the real SAEs and optimisers."""
    parts = sae_training_gib(d_in, d_sae, n_saes, batch_tokens)
    return (0.0 if adam_allocated else parts["adam_state"]) + parts["sae_grads"] + parts["sae_activations"]


def auto_block_batches(budget_bytes: float, row_bytes: int, rows_per_forward: int, fixed_rows: int,
                       max_batches: int = AUTO_BLOCK_BATCHES) -> int:
    """Forwards per block whose store (fixed_rows + n * rows_per_forward rows) fits the budget; 1..max_batches."""
    fit = (int(budget_bytes) // max(1, row_bytes) - fixed_rows) // rows_per_forward
    return min(max(1, fit), max_batches)


def spread_limits(totals_gib: list[float], reserve_gib: list[float]) -> list[float]:
    """max_memory (GiB) per GPU for a model spread over them: each GPU's usable share less its CUDA
    context and what runs beside the weights there (`reserve_gib`). runtime.spread_max_memory passes
    these to transformers (device_map="sequential")."""
    return [max(0.0, USABLE_FRACTION * t - CUDA_CONTEXT_GB - r) for t, r in zip(totals_gib, reserve_gib)]


def spread_reserve(n_gpus: int, sae_gpu: int, forward: float, sae_side: float) -> list[float]:
    """What a spread training run keeps beside the weights on each GPU (GiB): the forward's working set
    on every GPU but the SAE's (the blocks up to the deepest hooked layer fill the first GPUs; the last
    holds the tail the forward never reaches), the SAEs with their state and buffer on the SAE's GPU."""
    reserve = [forward] * n_gpus
    reserve[sae_gpu] = sae_side + (forward if sae_gpu != n_gpus - 1 else 0.0)
    return reserve


def spread_weights(s: ModelShape, wbytes: int, limits_gib: list[float]) -> list[dict] | None:
    """How transformers splits the model with device_map="sequential" under max_memory = limits_gib:
    per GPU {"gib": weights, "blocks": (first, last) or None}; None when it does not fit (offload).

    The arithmetic of transformers.integrations.accelerate.infer_auto_device_map: the embedding, the
    blocks in order and the unembedding fill each GPU in turn up to its limit; GPU 0 keeps room for the
    largest module not placed yet (for an offloaded layer). tests/test_tiers.py checks it against
    transformers on each default model built from its real config."""
    embed = s.vocab * s.d_model * wbytes
    block = s.block_params * wbytes
    head = 0 if s.tied else embed
    modules = [("embed", embed)] + [(i, block) for i in range(s.n_layers)] + ([("head", head)] if head else [])
    n = len(limits_gib)
    used, blocks, dev = [0.0] * n, [[] for _ in range(n)], 0
    for index, (name, size) in enumerate(modules):
        while dev < n:
            rest = max((sz for _, sz in modules[index + 1:]), default=0)
            room = limits_gib[dev] * GIB - (rest if dev == 0 else 0)
            if used[dev] + size <= room:
                used[dev] += size
                if isinstance(name, int):
                    blocks[dev].append(name)
                break
            dev += 1
        if dev == n:
            return None
    return [{"gib": u / GIB, "blocks": (b[0], b[-1]) if b else None} for u, b in zip(used, blocks)]


def memory_breakdown(
    m: ModelSpec,
    g: GPUClass,
    layers: tuple[int, ...],
    d_sae: int,
    fwd_batch_seqs: int,
    batch_tokens: int,
    buffer_tokens: int | None,
    placement: str | None = None,
    crosscoder: bool = False,
) -> dict[str, dict[str, float]]:
    """GiB per part and per GPU of a training run: {"gpu0": {part: GiB, ..., "total": GiB}, ["gpu1": ...]}.

    placement: "one GPU" (everything together), "split" (the model on GPU 0, the SAEs and buffer on the
    last), "spread" (the model over every GPU under spread_limits, the SAEs on the last); default: "one
    GPU" on one GPU, else "split". buffer_tokens None: BLOCK_BATCHES = "auto", sized as the trainer
    sizes it (buffer_budget_bytes) after the model and the SAEs are on the GPU."""
    wbytes = _weight_bytes(g)
    n_gpus = g.n_gpus
    placement = placement or ("one GPU" if n_gpus == 1 else "split")
    if placement not in ("one GPU", "split", "spread") or (placement != "one GPU" and n_gpus < 2):
        raise ValueError(f"placement {placement!r} on {g.name}: use 'one GPU', or 'split' / 'spread' on several GPUs")
    context = CUDA_CONTEXT_GB if g.name != "cpu" else 0.0
    read = len(set(layers))  # layers the forward captures (several SAEs may read one layer)
    fwd = forward_gib(m.shape, fwd_batch_seqs, m.ctx, read, wbytes)
    sae = sae_training_gib(m.d_model, d_sae, len(layers), batch_tokens, crosscoder)
    row_bytes = m.d_model * read * BUFFER_BYTES
    sae_gpu = 0 if placement == "one GPU" else n_gpus - 1
    gpus = [{"cuda_context": context} for _ in range(n_gpus)]
    if placement == "spread":
        reserve = spread_reserve(n_gpus, sae_gpu, fwd, sum(sae.values()) + (buffer_tokens or 0) * row_bytes / GIB)
        _spread_model(gpus, m, g, wbytes, reserve, fwd, max(layers))
    else:
        gpus[0]["weights"] = m.n_params * wbytes / GIB
        gpus[0]["forward_activations"] = fwd
    gpus[sae_gpu].update(sae)
    if buffer_tokens is None:  # "auto": what the trainer sizes once the model and the SAEs are in memory
        buffer_tokens = _auto_buffer_tokens(gpus[sae_gpu], g, row_bytes, fwd_batch_seqs * m.ctx, batch_tokens)
    gpus[sae_gpu]["activation_buffer"] = buffer_tokens * row_bytes / GIB
    out = {f"gpu{i}": part for i, part in enumerate(gpus)}
    for part in out.values():
        part["total"] = sum(part.values())
    return out


def _spread_model(gpus: list[dict], m: ModelSpec, g: GPUClass, wbytes: float, reserve, fwd: float,
                  deepest: int) -> None:
    """The model's weights over every GPU as spread_limits places them (evenly when they do not fit, to show by
    how much), and the forward's activations on each GPU whose first block is at or before `deepest` (the
    deepest layer read: the forward runs through it)."""
    n_gpus = g.n_gpus
    split = spread_weights(m.shape, wbytes, spread_limits([g.vram_gb] * n_gpus, reserve))
    if split is None:  # does not fit: report the weights halved to show by how much
        split = [{"gib": m.n_params * wbytes / GIB / n_gpus, "blocks": (0, m.n_layers - 1)}] * n_gpus
    for part, piece in zip(gpus, split):
        part["weights"] = piece["gib"]
        if piece["blocks"] is not None and piece["blocks"][0] <= deepest:
            part["forward_activations"] = fwd


def _auto_buffer_tokens(sae_gpu: dict, g: GPUClass, row_bytes: float, rows_per_forward: int,
                        batch_tokens: int) -> int:
    """BLOCK_BATCHES = "auto": the buffer's tokens as the trainer sizes them from what is free on the SAEs' GPU
    once the model and the SAEs are there (the step's own tensors kept in reserve)."""
    held = sum(v for k, v in sae_gpu.items() if k not in ("adam_state", "sae_grads", "sae_activations",
                                                          "forward_activations"))
    free = (g.vram_gb - held) * GIB
    reserve = sae_gpu["adam_state"] + sae_gpu["sae_grads"] + sae_gpu["sae_activations"]  # step_reserve_gib's terms
    budget = buffer_budget_bytes(free, reserve * GIB, g.vram_gb * GIB)
    blocks = auto_block_batches(budget, row_bytes, rows_per_forward, batch_tokens)
    return blocks * rows_per_forward + batch_tokens


def usable_gib(g: GPUClass) -> float:
    """Memory a run may fill on each GPU of class g: USABLE_FRACTION of what torch reports."""
    return USABLE_FRACTION * g.vram_gb


def _fits(mem: dict, g: GPUClass) -> bool:
    return all(p["total"] <= usable_gib(g) for p in mem.values())


# ---------------------------------------------------------------------------------------------
# Notebook 07: the recipes weighed on a GPU class and a budget
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Every catalog notebook that names a GPU: its default run's memory per GPU and its time
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainPhase:
    """An SAE training phase of a notebook: its recipe, how many SAEs it trains at once and where."""

    recipe: ModelSpec
    n_saes: int  # SAEs fed by each forward (one per layer, or per architecture and k at one layer)
    crosscoder: bool = False  # one SAE reading every layer of the recipe (its gradients span them all)


@dataclass
class Workload:
    """What a notebook's default run does on the GPU, in the quantities the model prices.

    Memory is the larger of its phases on each GPU: `train` (an SAE run: memory_breakdown) and the
    inference phase (weights, a forward of `batch` x `seq` tokens that keeps `kept_layers` outputs,
    `logit_rows` fp32 rows of logits, a KV cache of `kv_tokens` per sequence, the loaded SAEs `saes`).
    Time is setup + every count below at the GPU class's rates.
    """

    model_id: str
    deepest: int | None = None  # the deepest block its forwards run (None: all, and the logits)
    batch: int = 1  # sequences in its largest forward
    seq: int = 128  # tokens per sequence there
    kept_layers: int = 1  # [batch, seq, d_model] layer outputs kept at once (hooks on several layers)
    grad: bool = False  # that forward keeps every block's activations for a backward through the model
    logit_rows: int = 0  # fp32 logit rows [rows, vocab] alive at once (lenses, CE in chunks)
    kv_tokens: int = 0  # tokens per sequence held in a KV cache (generation)
    saes: tuple[tuple[int, int], ...] = ()  # loaded fp32 SAEs (d_in, d_sae), encoding `batch * seq` rows
    train: TrainPhase | None = None
    # time counts
    forward_tokens: float = 0  # tokens forwarded to `deepest` (no grad), training's included
    full_forward_tokens: float = 0  # tokens through the whole model with logits (validation CE, prefill)
    grad_tokens: float = 0  # tokens through a forward and backward of the whole model
    forward_calls: float = 0  # launch-bound forwards (patching loops, a backward per node)
    decode_steps: float = 0  # generation steps, `decode_batch` sequences each
    decode_batch: int = 1
    encode_tokens: float = 0  # tokens encoded by the loaded SAEs
    external_s: float = 0.0  # waiting on something else (a hosted LLM judge)
    what: str = ""  # one line: the run these numbers describe


@dataclass
class Estimate:
    """A notebook's default run on one GPU class: memory per GPU (GiB, by part) and minutes."""

    notebook: str
    gpu: str
    memory: dict
    usable_gib: float
    minutes: float
    minutes_by_part: dict
    what: str
    basis: str
    placement: str = "one GPU"
    phases: dict = field(default_factory=dict)  # {"train": per-GPU parts, "inference": per-GPU parts}

    @property
    def peak_gib(self) -> float:
        return max(p["total"] for p in self.memory.values())

    @property
    def fits(self) -> bool:
        return self.peak_gib <= self.usable_gib


def _layers_of(value, n_layers: int) -> tuple[int, ...]:
    """LAYER / LAYERS as block indices: an int, a list, "all", "middle"."""
    if value in ("all", "", None):
        return tuple(range(n_layers))
    if value == "middle":
        return (n_layers // 2,)
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple(sorted(int(x) % n_layers for x in items))


def recipe_of(params: Mapping) -> ModelSpec:
    """The ModelSpec of a notebook that trains SAEs with the tier recipe's parameters (MODEL_ID, LAYER or
    LAYERS, D_SAE, K, CONTEXT_LEN, BATCH_TOKENS, MODEL_BATCH_SIZE, BLOCK_BATCHES, TOTAL_TOKENS, VAL_TOKENS,
    MODEL_DEVICE / SAE_DEVICE): "spread" spreads the model, SAE_DEVICE "auto" puts the SAE on the last GPU."""
    s = SHAPES[params["MODEL_ID"]]
    layers = _layers_of(params.get("LAYER", params.get("LAYERS")), s.n_layers)
    if params.get("MODEL_DEVICE") == "spread":
        placement = "spread"
    elif params.get("SAE_DEVICE") == "auto":
        placement = "auto"
    else:
        placement = "one GPU"
    return ModelSpec(s, 0, "", layers, int(params["D_SAE"]), int(params.get("K", 64)), ctx=int(params["CONTEXT_LEN"]),
                     sae_batch_tokens=int(params["BATCH_TOKENS"]), fwd_batch_seqs=int(params["MODEL_BATCH_SIZE"]),
                     block_batches=params["BLOCK_BATCHES"], total_tokens=int(params["TOTAL_TOKENS"]),
                     val_tokens=int(params.get("VAL_TOKENS", 0)), placement=placement)


def _tier_run(params: Mapping, n_saes: int | None = None, what: str = "") -> Workload:
    """The tier recipe (01, 02, 03, 08, 09, 10; 12 with n_saes at one layer): train, then validate
    with the SAEs spliced in: evals.metrics.evaluate_saes runs a clean forward, then per SAE a spliced one and
    per layer two zero-ablated ones (ours and SAELens' mask), whole forwards with logits, two contexts at
    a time, their log-softmax in chunks of 128 positions."""
    m = recipe_of(params)
    n = n_saes or len(m.layers)
    return Workload(m.model_id, None, 2, m.ctx, kept_layers=len(m.layers), logit_rows=2 * 2 * 128,
                    saes=((m.d_model, m.d_sae),) * n, train=TrainPhase(m, n), forward_tokens=m.total_tokens,
                    full_forward_tokens=m.val_tokens * (1 + n + 2 * len(m.layers)),
                    what=what or f"{m.total_tokens / 1e6:g}M tokens, {n} SAE(s) of {m.d_sae} latents at layer(s) "
                                 f"{list(m.layers)}")


# The default SAE each "use your SAE" notebook loads: (d_in, d_sae) per release.
RELEASE_WIDTHS = {
    "gemma-scope-2b-pt-res-canonical": (2304, 16384),
    "gpt2-small-res-jb": (768, 24576),
    "pythia-70m-deduped-res-sm": (512, 32768),
}
PROMPT_TOKENS = 32  # a typed prompt
GSM8K_PROMPT_TOKENS = 256  # a GSM8K question with the answer format, tokenized (notebook 11)


def _sae_widths(params: Mapping, n: int = 1) -> tuple[tuple[int, int], ...]:
    return (RELEASE_WIDTHS.get(params.get("SAE"), (SHAPES[params["MODEL_ID"]].d_model, 16384)),) * n


def acdc_edges(n_layers: int, n_heads: int) -> int:
    """Edges of AutoCircuit's GPT-2 graph with separate q/k/v (circuits/edges.py): 32,491 for GPT-2 small."""
    per_layer = n_heads + 1
    heads = sum(3 * n_heads * (1 + per_layer * layer) for layer in range(n_layers))
    mlps = sum(1 + per_layer * layer + n_heads for layer in range(n_layers))
    return heads + mlps + 1 + per_layer * n_layers


# Each GPU notebook's default run as a Workload, one function per notebook: (its parameters, its model's
# shape, the block LAYER names or None) -> what its source does with them.

def _tier_notebook(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """01-03, 08-10: the tier recipe."""
    return _tier_run(P)


def _discover_features(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """04: stream N_TOKENS, rank latents, label N_FEATURES with the judge."""
    judged = P["N_FEATURES"] * JUDGE_SECONDS_PER_FEATURE if P.get("JUDGE", "auto") != "offline" else 0
    return Workload(P["MODEL_ID"], layer, P["MODEL_BATCH_SIZE"], P["CONTEXT_LEN"], saes=_sae_widths(P),
                    forward_tokens=P["N_TOKENS"], encode_tokens=P["N_TOKENS"], external_s=judged,
                    what=f"{P['N_TOKENS'] / 1e6:g}M tokens, {P['N_FEATURES']} labels by a hosted LLM judge")


def _shareable_trace(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """05: one prompt, steered continuations at each alpha."""
    steps = len(P["ALPHAS"]) * P["MAX_NEW_TOKENS"]
    return Workload(P["MODEL_ID"], None, 1, PROMPT_TOKENS + P["MAX_NEW_TOKENS"], saes=_sae_widths(P),
                    kv_tokens=PROMPT_TOKENS + P["MAX_NEW_TOKENS"], decode_steps=steps,
                    full_forward_tokens=len(P["ALPHAS"]) * PROMPT_TOKENS,
                    what=f"one prompt, {len(P['ALPHAS'])} continuations of {P['MAX_NEW_TOKENS']} tokens")


def _steer(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """06: a baseline to find and size the feature, then steered generations."""
    steps = len(P["ALPHAS"]) * P["MAX_NEW_TOKENS"]
    return Workload(P["MODEL_ID"], layer, 8, P["CONTEXT_LEN"], saes=_sae_widths(P),
                    kv_tokens=PROMPT_TOKENS + P["MAX_NEW_TOKENS"],
                    forward_tokens=P["BASELINE_TOKENS"], encode_tokens=P["BASELINE_TOKENS"], decode_steps=steps,
                    full_forward_tokens=len(P["ALPHAS"]) * (PROMPT_TOKENS + P["MAX_NEW_TOKENS"]),
                    what=f"{P['BASELINE_TOKENS'] / 1e3:g}k baseline tokens, {len(P['ALPHAS'])} steered continuations")


def _stage_gate(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """11: greedy answers to N_EVAL + N_SELECT problems, then their features."""
    n = P["N_EVAL"] + P["N_SELECT"]
    length = GSM8K_PROMPT_TOKENS + P["MAX_NEW_TOKENS"]
    return Workload(P["MODEL_ID"], layer, P["BATCH_SIZE"], length, saes=_sae_widths(P), kv_tokens=length,
                    decode_steps=math.ceil(n / P["BATCH_SIZE"]) * P["MAX_NEW_TOKENS"], decode_batch=P["BATCH_SIZE"],
                    forward_tokens=n * length, encode_tokens=n * length,
                    full_forward_tokens=n * GSM8K_PROMPT_TOKENS,
                    what=f"{n} generations of up to {P['MAX_NEW_TOKENS']} tokens, batch {P['BATCH_SIZE']}")


def _k_sweep(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """12: one SAE per architecture and k at one layer, on the same batches."""
    n = len(P["ARCHITECTURES"]) * len(P["K_VALUES"])
    return _tier_run(P, n, f"{P['TOTAL_TOKENS'] / 1e6:g}M tokens, {n} SAEs of {P['D_SAE']} latents at layer {layer}")


def _watchtower(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """13: baseline, thresholds, the prompts, one watched generation."""
    tokens = 2 * P["BASELINE_TOKENS"] + P["N_PROMPTS"] * P["CONTEXT_LEN"]
    return Workload(P["MODEL_ID"], layer, 8, P["CONTEXT_LEN"], saes=_sae_widths(P),
                    kv_tokens=PROMPT_TOKENS + P["MAX_NEW_TOKENS"],
                    forward_tokens=tokens, encode_tokens=tokens, decode_steps=P["MAX_NEW_TOKENS"],
                    what=f"{tokens / 1e3:g}k tokens watched, one generation of {P['MAX_NEW_TOKENS']} tokens")


def _attribution_patching(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """14: AtP* (forward + backward a few times), exact patching of TOP_N nodes."""
    n = P["N_PROMPTS"]
    return Workload(P["MODEL_ID"], None, 2 * n, PROMPT_TOKENS, grad=True, saes=_sae_widths(P),
                    grad_tokens=8 * n * PROMPT_TOKENS, forward_calls=4 * P["TOP_N"] + 50,
                    what=f"{n} prompt pairs, {P['TOP_N']} nodes patched exactly")


def _sparse_feature_circuit(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """15: IG over every SAE layer, then one backward per kept node for the edges."""
    n, layers = P["N_PROMPTS"], len(P["LAYERS"])
    return Workload(P["MODEL_ID"], None, 2 * n, PROMPT_TOKENS, grad=True, saes=_sae_widths(P, layers),
                    grad_tokens=layers * P["IG_STEPS"] * 2 * n * PROMPT_TOKENS,
                    forward_calls=layers * P["IG_STEPS"] + 2000,
                    what=f"{n} prompt pairs, IG with {P['IG_STEPS']} steps at {layers} layers, edges by backward passes")


def _acdc(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """16: EAP, then ACDC: one patched forward (~4 plain ones) per edge of the graph."""
    edges = acdc_edges(s.n_layers, s.n_heads)
    return Workload(P["MODEL_ID"], None, 2 * P["N_PROMPTS"], PROMPT_TOKENS, grad=True,
                    grad_tokens=4 * P["N_PROMPTS"] * PROMPT_TOKENS,
                    forward_calls=4 * edges + 2 * 50 * len(P["EDGE_BUDGETS"]),
                    what=f"ACDC over {edges:,} edges, {P['N_PROMPTS']} prompt pairs")


def _crosscoder(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """17: one crosscoder reading every layer of LAYERS, from one forward."""
    m = recipe_of(P)
    return Workload(P["MODEL_ID"], max(m.layers), m.fwd_batch_seqs, m.ctx, kept_layers=len(m.layers),
                    train=TrainPhase(m, len(m.layers), crosscoder=True),
                    forward_tokens=m.total_tokens + int(P.get("VAL_TOKENS", 0)),
                    what=f"{m.total_tokens / 1e6:g}M tokens, a crosscoder of {m.d_sae} latents over layers {list(m.layers)}")


def _interpscore(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """18: CE with the SAE spliced in, then probing sets through the SAE."""
    probe_tokens = len(P["PROBE_TASKS"]) * (P["N_TRAIN"] + P["N_TEST"]) * P["MAX_LEN"]
    return Workload(P["MODEL_ID"], None, P["BATCH_SIZE"], max(P["CONTEXT_LEN"], P["MAX_LEN"]), saes=_sae_widths(P),
                    logit_rows=2 * 128 * P["BATCH_SIZE"], full_forward_tokens=3 * P["EVAL_TOKENS"],
                    forward_tokens=probe_tokens, encode_tokens=P["EVAL_TOKENS"] + probe_tokens,
                    what=f"{P['EVAL_TOKENS'] / 1e3:g}k evaluation tokens, {len(P['PROBE_TASKS'])} probing tasks")


def _logit_lens(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """19: one prompt decoded at every layer."""
    return Workload(P["MODEL_ID"], None, 1, PROMPT_TOKENS, kept_layers=s.n_layers + 1,
                    logit_rows=2 * (s.n_layers + 1) * PROMPT_TOKENS, full_forward_tokens=PROMPT_TOKENS,
                    what="one prompt through every layer's lens")


def _tuned_lens(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """20: fit a tuned lens (or load it), compare it with the logit lens."""
    rows = P["BATCH_SIZE"] * P["CONTEXT_LEN"]
    return Workload(P["MODEL_ID"], None, P["BATCH_SIZE"], P["CONTEXT_LEN"], kept_layers=s.n_layers + 1,
                    logit_rows=2 * rows, grad_tokens=P["FIT_STEPS"] * rows,
                    full_forward_tokens=(P["FIT_STEPS"] + P["EVAL_BATCHES"]) * rows,
                    forward_calls=(P["FIT_STEPS"] + P["EVAL_BATCHES"]) * (s.n_layers + 1),
                    what=f"{P['FIT_STEPS']} fitting steps of {P['BATCH_SIZE']} x {P['CONTEXT_LEN']} tokens")


def _linear_probe(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """21: every layer's pooled state for N_TRAIN + N_TEST texts."""
    n = P["N_TRAIN"] + P["N_TEST"]
    layers = _layers_of(P.get("LAYERS"), s.n_layers)
    return Workload(P["MODEL_ID"], max(layers), P["BATCH_SIZE"], P["MAX_LEN"], kept_layers=len(layers),
                    forward_tokens=n * P["MAX_LEN"],
                    what=f"{n} texts of up to {P['MAX_LEN']} tokens at {len(layers)} layers")


def _ccs_probe(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """22: both completions of N_TRAIN + N_TEST statements, CCS restarts on the states."""
    n = 2 * (P["N_TRAIN"] + P["N_TEST"])
    seq = P.get("MAX_TEXT_TOKENS", 300) + 16
    layers = s.n_layers if P.get("SWEEP_LAYERS") == "all" else 1
    return Workload(P["MODEL_ID"], s.n_layers - 1 if layers > 1 else s.n_layers // 2, P["BATCH_SIZE"], seq,
                    kept_layers=layers, forward_tokens=n * seq, forward_calls=P["N_RESTARTS"] * 10,
                    what=f"{n} prompts of up to {seq} tokens, CCS with {P['N_RESTARTS']} restarts")


def _reading_vector(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """23: contrast pairs at every layer, monitoring, steered generations."""
    pairs = P.get("N_PAIRS") or len(P.get("CONTRAST_PAIRS") or []) or 32
    steps = len(P["ALPHAS"]) * P["MAX_NEW_TOKENS"]
    return Workload(P["MODEL_ID"], s.n_layers - 1, P["BATCH_SIZE"], 48, kept_layers=s.n_layers,
                    kv_tokens=PROMPT_TOKENS + P["MAX_NEW_TOKENS"], forward_tokens=(2 * pairs + 16) * 48,
                    decode_steps=steps, what=f"{pairs} contrast pairs, {len(P['ALPHAS'])} steered generations")


WORKLOADS = {  # a notebook id's prefix -> its default run
    "01_": _tier_notebook, "02_": _tier_notebook, "03_": _tier_notebook, "08_": _tier_notebook,
    "09_": _tier_notebook, "10_": _tier_notebook, "04_": _discover_features, "05_": _shareable_trace, "06_": _steer,
    "11_": _stage_gate, "12_": _k_sweep, "13_": _watchtower, "14_": _attribution_patching,
    "15_": _sparse_feature_circuit, "16_": _acdc, "17_": _crosscoder, "18_": _interpscore, "19_": _logit_lens,
    "20_": _tuned_lens, "21_": _linear_probe, "22_": _ccs_probe, "23_": _reading_vector,
}


def workload(notebook: str, params: Mapping) -> Workload:
    """Each GPU notebook's default run as a Workload: what its source does with these parameters."""
    s = SHAPES[params.get("MODEL_ID")]
    layer = max(_layers_of(params["LAYER"], s.n_layers)) if params.get("LAYER") is not None else None
    for prefix, run in WORKLOADS.items():
        if notebook.startswith(prefix):
            return run(params, s, layer)
    raise ValueError(f"no workload model for notebook {notebook!r}: add one to tiers.WORKLOADS")


def train_placement(m: ModelSpec, g: GPUClass) -> str:
    """Where a training run's model and SAEs go on GPU class g (memory_breakdown's placement)."""
    if g.n_gpus == 1:
        return "one GPU"
    return {"spread": "spread", "auto": "split"}.get(m.placement, "one GPU")


def notebook_estimate(notebook: str, params: Mapping, gpu: str) -> Estimate:
    """Memory per GPU and minutes of a catalog notebook's run with `params` (its defaults) on `gpu`."""
    g = gpu_class(gpu)
    w = workload(notebook, params)
    s = SHAPES[w.model_id]
    named = {}
    placement = "one GPU"
    if w.train is not None:  # the training phase: memory_breakdown, as notebook 07 weighs it
        placement = train_placement(w.train.recipe, g)
        named["train"] = _training_memory(w.train, g, placement)
    named["inference"] = _inference_memory(w, s, g, placement, named.get("train"))
    parts = _minutes_by_part(w, s, g)
    return Estimate(notebook, g.name, _peak_per_gpu(named.values()), usable_gib(g), sum(parts.values()), parts,
                    w.what, g.basis, placement, named)


def _training_memory(train: TrainPhase, g: GPUClass, placement: str) -> dict:
    """GiB per part and GPU of a notebook's SAE training phase (memory_breakdown of its recipe)."""
    m = train.recipe
    layers = m.layers if train.n_saes == len(m.layers) else (m.layers[0],) * train.n_saes
    return memory_breakdown(m, g, layers, m.d_sae, m.fwd_batch_seqs, m.sae_batch_tokens, m.buffer_rows(),
                            placement, crosscoder=train.crosscoder)


def _inference_memory(w: Workload, s: ModelShape, g: GPUClass, placement: str, trained: dict | None) -> dict:
    """GiB per part and GPU of the inference phase (validation of a trained SAE, or the whole run of a notebook
    that uses one): the weights as the run places them, the logits on the GPU of the unembedding, the SAEs on
    theirs."""
    wbytes = _weight_bytes(g)
    n_gpus = len(trained) if trained else 1
    infer = [{"cuda_context": CUDA_CONTEXT_GB if g.name != "cpu" else 0.0} for _ in range(n_gpus)]
    if placement == "spread":
        for part, trained_part in zip(infer, trained.values()):
            part["weights"] = trained_part["weights"]
    else:
        infer[0]["weights"] = s.n_params * wbytes / GIB
    head = n_gpus - 1 if placement == "spread" else 0
    infer[0]["forward_activations"] = forward_gib(s, w.batch, w.seq, w.kept_layers, wbytes) * (s.n_layers if w.grad else 1)
    copies = LOGIT_COPIES + s.logit_softcap
    logits = (copies * w.batch * w.seq * wbytes if w.deepest is None else 0) + 4 * w.logit_rows
    if logits:
        infer[head]["logits"] = logits * s.vocab / GIB
    if w.kv_tokens:
        infer[0]["kv_cache"] = 2 * s.n_layers * s.kv_dim * w.kv_tokens * w.decode_batch * wbytes / GIB
    if w.saes:
        infer[n_gpus - 1 if placement != "one GPU" else 0]["saes"] = sum(
            (2 * d * n + d + n) * 4 + 2 * w.batch * w.seq * n * 4 for d, n in w.saes) / GIB
    for part in infer:
        part["total"] = sum(part.values())
    return {f"gpu{i}": part for i, part in enumerate(infer)}


def _peak_per_gpu(phases) -> dict:
    """Each GPU's parts in the phase where its total is largest."""
    memory: dict = {}
    for phase in phases:
        for dev, part in phase.items():
            if dev not in memory or part["total"] > memory[dev]["total"]:
                memory[dev] = part
    return memory


def _minutes_by_part(w: Workload, s: ModelShape, g: GPUClass) -> dict:
    """The run's minutes by part at g's rates: set-up, training, forwards, backwards, generation, SAE encoding,
    waiting on an LLM judge."""
    parts = {"setup": setup_minutes(s)}
    forward_tokens = w.forward_tokens
    if w.train is not None:
        m = w.train.recipe
        t_sae = sae_seconds_per_token(m.d_model, m.d_sae, w.train.n_saes, g)  # a crosscoder: n x d_in, one SAE
        t_fwd = forward_seconds_per_token(s, g, max(m.layers), m.ctx)
        parts["training"] = m.total_tokens * (t_fwd + t_sae) / 60
        forward_tokens -= m.total_tokens
    deepest = w.deepest if w.deepest is not None else s.n_layers - 1
    if forward_tokens > 0:
        parts["forwards"] = forward_tokens * forward_seconds_per_token(s, g, deepest, w.seq) / 60
    if w.full_forward_tokens:
        parts["forwards_with_logits"] = (w.full_forward_tokens * full_forward_flops_per_token(s, w.seq)
                                         / (_half_rate(g) * s.fwd_mfu_scale) / 60)
    if w.grad_tokens:
        parts["forward_backward"] = 3 * w.grad_tokens * full_forward_flops_per_token(s, w.seq) / _half_rate(g) / 60
    if w.forward_calls:
        parts["launch_bound_forwards"] = w.forward_calls * FORWARD_CALL_S_PER_LAYER * s.n_layers / 60
    if w.decode_steps:
        parts["generation"] = w.decode_steps * decode_seconds_per_step(s, g, w.decode_batch) / 60
    if w.encode_tokens and w.saes:
        parts["sae_encode"] = sum(w.encode_tokens * sae_encode_seconds_per_token(d, n, g) for d, n in w.saes) / 60
    if w.external_s:
        parts["llm_judge"] = w.external_s / 60
    return parts


# ---------------------------------------------------------------------------------------------
# The catalog's expected times against the model
# ---------------------------------------------------------------------------------------------
_TIME = re.compile(r"(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?\s*(min|h)\b(?:\s+on\s+([^,;()]+))?")
TIME_TOLERANCE = 0.25  # a stated time agrees with the model when the prediction is within 25 % of it (or its range)


def stated_times(expected_time: str, accelerator: str) -> list[tuple[float, float, str]]:
    """(low, high minutes, GPU class) of each "<time> on <GPU>" in a catalog expected_time ("about 3 h
    on a T4", "15-24 h on a 96 GB card"); with none, its first time on the accelerator's first class."""
    found = []
    for match in _TIME.finditer(expected_time):
        scale = 60 if match.group(3) == "h" else 1
        low = float(match.group(1)) * scale
        high = float(match.group(2) or match.group(1)) * scale
        found.append((low, high, match.group(4)))
    if not found:
        raise ValueError(f"expected_time {expected_time!r} states no time such as '5 min' or '2.5 h'")
    named = [(lo, hi, _gpu_named(where)) for lo, hi, where in found if where and _gpu_named(where)]
    return named or [(found[0][0], found[0][1], accelerator_classes(accelerator)[0])]


def _gpu_named(text: str) -> str | None:
    """The GPU class a phrase such as "a T4 for 2M tokens" or "Kaggle 2xT4" names, or None."""
    low = text.lower()
    if re.search(r"2\s*x\s*t4", low):
        return "2xT4"
    hits = [(low.find(p), key) for key, g in GPU_CLASSES.items() if key not in ("cpu", "2xT4")
            for p in (*g.patterns, key.lower(), key.lower().replace("-", " ")) if p in low]
    return min(hits)[1] if hits else None


def catalog_times(params_of: Callable[[str], Mapping]) -> list[dict]:
    """Every time a GPU notebook of the catalog states, next to this model's prediction for its default
    parameters on the GPU the statement names. `params_of(notebook_id)` gives those parameters."""
    rows = []
    for nb in NOTEBOOKS:
        if not accelerator_classes(nb["accelerator"]):
            continue
        for low, high, gpu in stated_times(nb["expected_time"], nb["accelerator"]):
            est = notebook_estimate(nb["id"], params_of(nb["id"]), gpu)
            rows.append({"notebook": nb["id"], "gpu": gpu, "stated": nb["expected_time"], "stated_minutes": (low, high),
                         "predicted_minutes": round(est.minutes, 1), "basis": est.basis,
                         "agrees": low * (1 - TIME_TOLERANCE) <= est.minutes <= high * (1 + TIME_TOLERANCE)})
    return rows


def catalog_anchor_check() -> dict:
    """Notebook 01's stated time next to this model's prediction for its defaults on a T4 (what 07 prints)."""
    m = MODELS["google/gemma-2-2b"]
    g = GPU_CLASSES["T4"]
    tps = tokens_per_second(m, g, m.layers, m.d_sae)
    stated = next(n["expected_time"] for n in NOTEBOOKS if n["id"] == m.notebook)
    flops = forward_flops_per_token(m, max(m.layers)) + sae_flops_per_token(m.d_model, m.d_sae)
    return {"notebook": m.notebook, "stated": stated, "tokens": m.total_tokens, "gflop_per_token": flops / 1e9,
            "model_tokens_per_s": tps, "model_minutes": setup_minutes(m.shape) + m.total_tokens / tps / 60,
            "assumed_mfu": g.mfu, "basis": g.basis}
