"""The memory model: GiB per part and per GPU of a training run (weights, the forward's working set,
the SAEs with their gradients and Adam state, the step's tensors, the activation buffer), how a model
spread over several GPUs splits, and what a GPU class can hold.

Memory (per GPU, GiB): weights + the forward's working set + the SAEs with gradients (one SAE's at a
time) and two Adam moments + the step's dense [batch, d_sae] tensors + the activation buffer + the
CUDA context; it fits when that total stays <= USABLE_FRACTION of the memory torch reports. Where
a model is spread over several GPUs (MODEL_DEVICE = "spread") its blocks are split as
transformers' device_map="auto" splits them under the `max_memory` that `spread_limits` gives it,
so the SAE's GPU keeps room for the SAE; tests/test_planning.py checks this arithmetic against
transformers' own split of each default model built from its real config (tests/data/models).
"""

from __future__ import annotations

from ..training.memory import AUTO_BLOCK_BATCHES, SAE_ACT_COPIES, USABLE_FRACTION, buffer_budget_bytes
from .gpus import GPUClass, weight_bytes
from .models import ModelShape, ModelSpec

GIB = 1024**3

# Constants of the model. Each is an assumption; the comment says where it comes from. The terms the
# trainer itself is sized by (USABLE_FRACTION, SAE_ACT_COPIES, the auto buffer's share and cap) are
# training/memory.py's, imported above.
CUDA_CONTEXT_GB = 0.8  # CUDA context + torch's kernels in a fresh process (typ. 0.3-1 GiB by nvidia-smi)
ACT_WORKSET_PER_D = 16  # peak forward working set per token, in units of d_model elements: residual,
#                         q/k/v/o and the gated MLP intermediate (2 * d_ff ~ 8 * d_model) of one block
#                         under torch.no_grad (earlier blocks' activations are freed as the forward goes)
SAE_STATE_COPIES = 4  # fp32 params + grads + Adam exp_avg + exp_avg_sq
BUFFER_BYTES = 4  # the shuffling activation buffer holds fp32 activations
LOGIT_COPIES = 2  # [batch, seq, vocab] tensors in the model dtype alive in a forward that returns logits
#                   (the head's output and a reference kept for a KL; Gemma-2's soft-cap adds a third)


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
    largest module not placed yet (for an offloaded layer). tests/test_planning.py checks it against
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
    wbytes = weight_bytes(g)
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
