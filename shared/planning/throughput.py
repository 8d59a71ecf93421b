"""The time model: seconds per token of a forward and an SAE step on a GPU class, training tokens per
second, a decoding step, the fixed set-up minutes of a run.

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
"""

from __future__ import annotations

from .gpus import GPUClass, weight_bytes
from .models import ModelShape, ModelSpec

# Constants of the model. Each is an assumption; the comment says where it comes from.
SAE_FLOPS_PER_PARAM_PAIR = 10  # TopK SAE step on a bf16 GPU: dense on tensor cores, encoder forward and weight
#                         gradient (2 + 2), decoder forward, input and weight gradients (2 + 2 + 2)
SAE_FP32_FLOPS_PER_PARAM_PAIR = 2.8  # the fp32 sparse step (a T4): ~1.4 encoder matmuls of 2 d_in d_sae
#                         (BENCHMARKS.md, CPU: the step costs 1.2-1.4x one encoder matmul at 1-3 % dead),
#                         run at the fp32 peak times the GPU's sustained-GEMM share
SETUP_MINUTES = 3.0  # fixed minutes per run: pip install, model load to the GPU, reports and figures
DOWNLOAD_GB_PER_S = 0.15  # hub download speed on Colab / Kaggle (typ. 100-200 MB/s)
FORWARD_CALL_S_PER_LAYER = 5e-4  # a forward call's launch-bound floor per decoder block (~20-30 kernels and
#                         hooks at ~20 us each): what a loop of tiny forwards (patching, decoding) pays
DECODE_BW_SHARE = 0.6  # share of the memory bandwidth a decoding step reads the weights at


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


def half_rate(g: GPUClass) -> float:
    """FLOP/s a run reaches on one GPU of class g at the half-precision peak (its MFU)."""
    return g.peak_tflops * 1e12 * g.mfu


def sae_seconds_per_token(d_in: int, d_sae: int, n_saes: int, g: GPUClass) -> float:
    """Seconds per token of `n_saes` SAE training steps: dense bf16 on a bf16 GPU, sparse fp32 elsewhere."""
    if g.bf16:
        return sae_flops_per_token(d_in, d_sae, n_saes) / half_rate(g)
    return SAE_FP32_FLOPS_PER_PARAM_PAIR * d_in * d_sae * n_saes / (g.fp32_tflops * 1e12 * g.gemm_share)


def sae_encode_seconds_per_token(d_in: int, d_sae: int, g: GPUClass) -> float:
    """Seconds per token of an fp32 SAE encode (inference: one [d_in, d_sae] matmul)."""
    return 2 * d_in * d_sae / (g.fp32_tflops * 1e12 * g.gemm_share)


def forward_seconds_per_token(s: ModelShape, g: GPUClass, deepest: int, ctx: int) -> float:
    return forward_flops_per_token(s, deepest, ctx) / (half_rate(g) * s.fwd_mfu_scale)


def tokens_per_second(m: ModelSpec, g: GPUClass, layers: tuple[int, ...], d_sae: int) -> float:
    """Estimated training tokens/s of `len(layers)` SAEs fed by one forward on GPU class g (the forward
    and the SAE steps in series, on one GPU or two)."""
    t_fwd = forward_seconds_per_token(m.shape, g, max(layers), m.ctx)
    return 1.0 / (t_fwd + sae_seconds_per_token(m.d_model, d_sae, len(layers), g))


def decode_seconds_per_step(s: ModelShape, g: GPUClass, batch: int = 1) -> float:
    """One generation step of `batch` sequences: the weights read once (bandwidth-bound), or the
    matmuls when the batch is large, plus the step's launch-bound floor."""
    read = s.n_params * weight_bytes(g) / (g.mem_bw_gbs * 1e9 * DECODE_BW_SHARE)
    compute = 2 * s.n_params * batch / half_rate(g)
    return max(read, compute) + FORWARD_CALL_S_PER_LAYER * s.n_layers


def setup_minutes(s: ModelShape) -> float:
    """Install, download of the checkpoint, load, and the reports at the end."""
    return SETUP_MINUTES + s.n_params * s.checkpoint_bytes / 1e9 / DOWNLOAD_GB_PER_S / 60
