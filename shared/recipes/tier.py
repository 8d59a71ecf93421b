"""A tier notebook's parameters as a training run: the parameters the tier recipe takes (TIER_PARAMETERS,
with defaults for those added after the first parameter files), `config_from_params` (the one mapping
from them to a TrainConfig that the notebooks and `python -m shared.train` share), the training data in
one string (`dataset_name`), and the `max_memory` a model spread over GPUs loads under
(`spread_max_memory`: room kept for the SAE)."""
from __future__ import annotations

from typing import Mapping

import torch

from ..model.loading import load_config
from ..planning import memory
from ..runtime import SPREAD
from ..saes.crosscoder import CrosscoderConfig
from ..saes.topk import TopKConfig
from ..training.config import TrainConfig, sae_plan
from . import sessions


# The tier notebooks' parameters (notebooks_src/tier_recipe.py's parameters cell): what
# config_from_params reads and the command line (python -m shared.train) takes.
TIER_PARAMETERS = (
    "MODEL_ID", "LAYER", "DATASET", "VAL_DATASET", "CONTEXT_LEN", "D_SAE", "K", "TOTAL_TOKENS", "BATCH_TOKENS",
    "MODEL_BATCH_SIZE", "BLOCK_BATCHES", "LR", "LR_MIN", "WARMUP_STEPS", "DEAD_TOKENS_THRESHOLD",
    "CHECKPOINT_EVERY_TOKENS", "CHECKPOINT_EVERY_MINUTES", "CHECKPOINT_DIR", "RUN_NAME", "HF_USERNAME",
    "ALLOW_UNRESUMABLE", "ALLOW_STREAM_CHANGE", "MODEL_DEVICE", "MODEL_DTYPE", "SAE_DEVICE",
    "VAL_TOKENS", "HF_REPO", "HF_PRIVATE", "OUTPUT_DIR", "SEED",
)
# Tier parameters added after the first parameter files were written: a file without them takes these.
TIER_DEFAULTS = {"CHECKPOINT_EVERY_MINUTES": 10, "HF_USERNAME": "", "ALLOW_UNRESUMABLE": False,
                 "ALLOW_STREAM_CHANGE": False}


def config_from_params(P: Mapping, checkpoint_dir: str | None = None, *,
                       sae: CrosscoderConfig | None = None) -> TrainConfig:
    """The TrainConfig of a tier notebook's checked parameters (notebook.parameters.check_parameters): the one
    mapping the notebooks and the command line share. checkpoint_dir: CHECKPOINT_DIR resolved
    (default: sessions.checkpoint_dir(P), which also stops a run that could not resume).

    sae: a crosscoder to train instead of the tier's TopK SAE (D_SAE, K, DEAD_TOKENS_THRESHOLD at LAYER):
    notebook 17's parameters, whose run reads the crosscoder's layers (LAYERS) on the model's device
    (no SAE_DEVICE); the data, schedule and checkpoint parameters map as a tier's do."""
    P = {**TIER_DEFAULTS, **P}
    if checkpoint_dir is None:
        checkpoint_dir = sessions.checkpoint_dir(P)
    if sae is None:
        sae, layers = TopKConfig(d_sae=P["D_SAE"], k=P["K"], dead_tokens_threshold=P["DEAD_TOKENS_THRESHOLD"]), P["LAYER"]
    else:
        layers = sae.layers
    return TrainConfig(
        model_id=P["MODEL_ID"], layers=tuple(layers), dataset=P["DATASET"], context_len=P["CONTEXT_LEN"],
        sae=sae, total_tokens=P["TOTAL_TOKENS"], batch_tokens=P["BATCH_TOKENS"],
        model_batch_size=P["MODEL_BATCH_SIZE"], block_batches=P["BLOCK_BATCHES"], lr=P["LR"], lr_min=P["LR_MIN"],
        warmup_steps=P["WARMUP_STEPS"], checkpoint_every_tokens=P["CHECKPOINT_EVERY_TOKENS"],
        checkpoint_every_minutes=P["CHECKPOINT_EVERY_MINUTES"], checkpoint_dir=checkpoint_dir,
        sae_device=P.get("SAE_DEVICE"), seed=P["SEED"], allow_stream_change=P["ALLOW_STREAM_CHANGE"],
    )


def dataset_name(cfg: TrainConfig) -> str:
    """The training data in one string (the source, or the mix's sources with their weights): what
    exports record as dataset_path and reports as the data, for the notebooks and the command line."""
    return ", ".join(cfg.dataset)


def spread_max_memory(P: Mapping, *, config=None, totals_gib=None) -> dict[int, int] | None:
    """`max_memory` for the tier recipe's model when MODEL_DEVICE is "spread" (None otherwise), so the
    model fills the GPUs in order and leaves room for what runs beside it: on the SAE's GPU (SAE_DEVICE,
    the last by default) its SAEs with Adam, step tensors and an integer BLOCK_BATCHES' buffer; on the
    others the forward's working set (planning's memory model; each GPU's usable share less its CUDA context:
    memory.spread_limits). The model's last blocks, which the forward stops before, end up beside the SAE.
    config: the model's config (default: model.loading.load_config);
    totals_gib: the GPUs' memory (default: torch's)."""
    if P["MODEL_DEVICE"] != SPREAD:
        return None
    if totals_gib is None:
        if not torch.cuda.is_available():
            return None
        totals_gib = [torch.cuda.get_device_properties(i).total_memory / memory.GIB
                      for i in range(torch.cuda.device_count())]
    cfg = config_from_params(P, checkpoint_dir="-")
    if config is None:
        config = load_config(cfg.model_id)
    d = config.hidden_size
    eager = "gemma2" in str(getattr(config, "model_type", ""))
    read = len(set(cfg.layers))
    n_gpus = len(totals_gib)
    sae_device = str(P.get("SAE_DEVICE") or "")
    sae_gpu = int(sae_device.split(":")[1]) if sae_device.startswith("cuda:") else n_gpus - 1
    forward = memory.forward_gib_of(d, config.num_attention_heads, eager, cfg.model_batch_size, cfg.context_len, read, 2)
    sae = sum(memory.sae_training_gib(d, cfg.sae.d_sae, len(sae_plan(cfg, cfg.layers)), cfg.batch_tokens).values())
    if isinstance(cfg.block_batches, int):
        rows = cfg.block_batches * cfg.model_batch_size * cfg.context_len + cfg.batch_tokens
        sae += rows * d * read * memory.BUFFER_BYTES / memory.GIB
    limits = memory.spread_limits(list(totals_gib), memory.spread_reserve(n_gpus, sae_gpu, forward, sae))
    return {i: int(limit * memory.GIB) for i, limit in enumerate(limits)}  # bytes per GPU index
