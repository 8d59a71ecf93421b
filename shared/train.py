"""The SAE training loop every tier shares: one model forward feeds one SAE per layer (or several:
TrainConfig.variants trains a set of named SAE configs at every layer on exactly the same batches).

Activations arrive in *blocks* (capture.ActivationBlocks): a fixed number of token batches run
through the model once (every requested layer captured in the same forward), shuffled with a
generator seeded by the block's index, and cut into training batches; the rows past the last
full batch are carried into the next block, so no forwarded token goes untrained. Blocks are the
unit of resume: a checkpoint is taken only between blocks and records the forwards consumed, the
block index and that carry, so a run killed at any moment restarts from its last complete
checkpoint, regenerates exactly the same batches, and ends with the same weights as a run never
interrupted (exact on CPU; on a GPU equal up to float round-off, since CUDA's atomic scatter-adds
are not deterministic). Re-running the same call is all a user does to resume.

Checkpoints land every `checkpoint_every_tokens` tokens and, whatever the throughput, before
`checkpoint_every_minutes` of training would go unsaved: at the last block boundary before that
time (a boundary is where a checkpoint can be exact; under torchrun rank 0's clock decides for
every rank). A resume re-reads the stream up to the checkpoint and checks it by the hash the
checkpoint recorded (replay.StreamLedger): a changed stream stops the run unless allowed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import torch

from . import checkpoint as ckpt
from . import distributed, replay, sessions, tiers
from .capture import (ActivationBlocks, block_batches_for_memory, check_layers, free_memory_bytes, layer_count,
                      residual_rows, total_memory_bytes)
from .hooks import resolve_layers
from .data import mix_streams, parse_source, token_batches
from .models import d_model, load_model, model_device
from .runtime import SPREAD, resolve_device, spread_max_memory as _spread_max_memory
from .sae import ARCHITECTURES, SAEConfig, build_sae, config_from_dict
from .sae_topk import TopKConfig
from .sessions import resolve_checkpoint_dir  # noqa: F401 - where notebooks 12 and 17 find it


@dataclass
class TrainConfig:
    """Every knob of a training run; the same values must be passed again to resume.

    `sae` is the SAE's own config (any registered architecture's, e.g. TopKConfig) with d_in left
    None: train() fills it with the model's width and seeds layer L's SAE with seed + L. A dict
    (say, from JSON) is turned into the config class its "architecture" names.

    `variants` ({name: SAE config}), when given, replaces `sae`: every layer trains one SAE per
    name, keyed "L<layer>/<name>", all on the same batches in the same order and all seeded
    seed + L (identical configs start and end identical; sweep.py builds a k sweep of them).
    """

    model_id: str
    layers: tuple[int, ...]
    dataset: tuple[str, ...] = ("synthetic",)  # data.parse_source specs; "spec@0.7" sets a mix weight
    context_len: int = 1024
    sae: SAEConfig = field(default_factory=TopKConfig)  # d_sae, k, dtype, b_dec_init, ... (d_in from the model)
    total_tokens: int = 50_000_000
    batch_tokens: int = 4096  # SAE training batch (tokens per optimiser step)
    model_batch_size: int = 8  # contexts per model forward
    block_batches: int | str = 32  # model forwards per shuffled block (the resume unit); "auto": from free memory
    shuffle_tokens: int = 10_000_000  # contexts shuffled across this many tokens (capped at total_tokens) before the
    #                                  forward: host memory 4 bytes a token (40 MB at 10M); 0: stream order (_token_stream)
    buffer_memory_fraction: float = 0.5  # share of the free memory the block store may take (it shrinks to fit)
    lr: float = 2e-4
    lr_min: float = 6e-5
    warmup_steps: int = 1000
    adam_betas: tuple[float, float] = (0.9, 0.999)
    checkpoint_every_tokens: int = 5_000_000
    checkpoint_every_minutes: float | None = 10.0  # also checkpoint before this much training goes unsaved
    keep_checkpoints: int = 2
    checkpoint_dir: str = "checkpoints"  # a folder (a mounted Drive too) or "hf:<user>/<repo>"
    model_device: str | None = None
    sae_device: str | None = None
    model_dtype: str | None = None  # None: bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU
    activation_dtype: str = "float32"  # dtype of the shuffled block store
    sae_autocast: bool = True  # bf16 autocast for the SAE step on GPUs with bf16 (weights stay fp32)
    geometric_median_tokens: int = 8192
    log_every: int = 10
    metrics_path: str | None = None  # JSONL; default: beside the checkpoints, so it survives with them
    wandb_project: str | None = None
    seed: int = 0
    variants: Mapping[str, SAEConfig] | None = None  # several SAEs per layer: {name: config}, see above
    allow_stream_change: bool = False  # resume even when the replayed stream differs (recorded), see replay.py

    def __post_init__(self):
        self.layers = tuple(int(x) for x in (self.layers if isinstance(self.layers, (list, tuple)) else [self.layers]))
        self.dataset = (self.dataset,) if isinstance(self.dataset, str) else tuple(self.dataset)
        if isinstance(self.sae, Mapping):
            self.sae = config_from_dict(self.sae)
        if not isinstance(self.sae, SAEConfig):
            raise ValueError(f"sae must be an SAE config such as TopKConfig(d_sae=..., k=...), got {type(self.sae).__name__}")
        if self.sae.seed != 0:
            raise ValueError(f"sae.seed={self.sae.seed}: a training run seeds layer L's SAE with seed + L; "
                             "set TrainConfig(seed=...) instead")
        if self.variants is not None:
            self.variants = _check_variants(self.variants)
        if not self.layers:
            raise ValueError("layers is empty: name at least one decoder layer to train an SAE on")
        if self.total_tokens <= 0 or self.batch_tokens <= 0:
            raise ValueError("total_tokens and batch_tokens must be positive")
        if self.context_len < 2:
            raise ValueError("context_len must be at least 2 (BOS plus one token)")
        if self.block_batches != "auto" and (isinstance(self.block_batches, bool)
                                             or not isinstance(self.block_batches, int) or self.block_batches < 1):
            raise ValueError(f"block_batches must be a positive number of forwards or 'auto', got {self.block_batches!r}")
        if isinstance(self.shuffle_tokens, bool) or not isinstance(self.shuffle_tokens, int) or self.shuffle_tokens < 0:
            raise ValueError(f"shuffle_tokens must be a number of tokens >= 0 (0: stream order), got {self.shuffle_tokens!r}")
        if not 0 < self.buffer_memory_fraction <= 1:
            raise ValueError(f"buffer_memory_fraction must be in (0, 1], got {self.buffer_memory_fraction}")
        if not 0 < self.lr_min <= self.lr:
            raise ValueError(f"need 0 < lr_min <= lr, got lr={self.lr}, lr_min={self.lr_min}")
        if self.checkpoint_every_minutes is not None and not self.checkpoint_every_minutes > 0:
            raise ValueError(f"checkpoint_every_minutes must be > 0 (or None for tokens only), "
                             f"got {self.checkpoint_every_minutes}")

    def resume_key(self) -> dict:
        """The settings that must match for a checkpoint to be resumed (others, e.g. logging, may change).

        Flat, as before the SAE config was nested: the run's settings with the SAE's in place of
        `sae` (less d_in, which the model fixes, and seed, which the run's seed fixes). A checkpoint
        stores model_dtype as the dtype the model really ran in; a change of it is not refused but
        recorded (see train: a float16 overflow is fixed by switching dtype and resuming)."""
        skip = {"checkpoint_dir", "log_every", "metrics_path", "wandb_project", "keep_checkpoints",
                "model_device", "sae_device", "checkpoint_every_tokens", "buffer_memory_fraction",
                "checkpoint_every_minutes", "allow_stream_change"}
        key = {}
        for name, value in asdict(self).items():
            if name == "sae":
                key.update({k: v for k, v in self.sae.to_dict().items() if k not in ("d_in", "seed")})
            elif name == "variants":
                if self.variants:  # absent for one SAE per layer, so those keys stay as they were
                    key[name] = {n: {k: v for k, v in c.to_dict().items() if k not in ("d_in", "seed")}
                                 for n, c in self.variants.items()}
            elif name not in skip:
                key[name] = value
        return key


def _check_variants(variants) -> dict[str, SAEConfig]:
    """TrainConfig.variants as {name: SAEConfig} (dicts become configs), or a one-line error."""
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError("variants must be a non-empty {name: SAE config} dict (or None for one SAE per layer "
                         f"from `sae`), got {variants!r}")
    out = {}
    for name, sae_cfg in variants.items():
        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise ValueError(f"variants name {name!r}: use a non-empty name without '/', e.g. 'topk-k32'")
        if isinstance(sae_cfg, Mapping):
            sae_cfg = config_from_dict(sae_cfg)
        if not isinstance(sae_cfg, SAEConfig):
            raise ValueError(f"variants[{name!r}] must be an SAE config such as TopKConfig(d_sae=..., k=...), "
                             f"got {type(sae_cfg).__name__}")
        if sae_cfg.seed != 0:
            raise ValueError(f"variants[{name!r}].seed={sae_cfg.seed}: a training run seeds layer L's SAEs with "
                             "seed + L; set TrainConfig(seed=...) instead")
        out[name] = sae_cfg
    return out


def sae_plan(cfg: TrainConfig, layers) -> dict[int | str, tuple[int, SAEConfig]]:
    """The run's SAEs: key -> (layer, config). One per layer keyed by the layer (cfg.sae), or with
    cfg.variants one per layer and name keyed "L<layer>/<name>"."""
    if not cfg.variants:
        return {layer: (layer, cfg.sae) for layer in layers}
    return {f"L{layer}/{name}": (layer, sae_cfg) for layer in layers for name, sae_cfg in cfg.variants.items()}


def variant_of(key: int | str) -> str | None:
    """The variant name in an SAE key ("L3/topk-k32" -> "topk-k32"); None for a layer key."""
    return None if isinstance(key, int) else str(key).split("/", 1)[1]


def sae_label(key: int | str) -> str:
    """The prefix of an SAE's metric names: "L<layer>" for a layer key, the key itself for a variant's."""
    return f"L{key}" if isinstance(key, int) else str(key)


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


def config_from_params(P: Mapping, checkpoint_dir: str | None = None) -> TrainConfig:
    """The TrainConfig of a tier notebook's checked parameters (notebook.check_parameters): the one
    mapping the notebooks and the command line share. checkpoint_dir: CHECKPOINT_DIR resolved
    (default: sessions.checkpoint_dir(P), which also stops a run that could not resume)."""
    P = {**TIER_DEFAULTS, **P}
    if checkpoint_dir is None:
        checkpoint_dir = sessions.checkpoint_dir(P)
    sae_cfg = TopKConfig(d_sae=P["D_SAE"], k=P["K"], dead_tokens_threshold=P["DEAD_TOKENS_THRESHOLD"])
    return TrainConfig(
        model_id=P["MODEL_ID"], layers=tuple(P["LAYER"]), dataset=P["DATASET"], context_len=P["CONTEXT_LEN"],
        sae=sae_cfg, total_tokens=P["TOTAL_TOKENS"], batch_tokens=P["BATCH_TOKENS"],
        model_batch_size=P["MODEL_BATCH_SIZE"], block_batches=P["BLOCK_BATCHES"], lr=P["LR"], lr_min=P["LR_MIN"],
        warmup_steps=P["WARMUP_STEPS"], checkpoint_every_tokens=P["CHECKPOINT_EVERY_TOKENS"],
        checkpoint_every_minutes=P["CHECKPOINT_EVERY_MINUTES"], checkpoint_dir=checkpoint_dir,
        sae_device=P["SAE_DEVICE"], seed=P["SEED"], allow_stream_change=P["ALLOW_STREAM_CHANGE"],
    )


def dataset_name(cfg: TrainConfig) -> str:
    """The training data in one string (the source, or the mix's sources with their weights): what
    exports record as dataset_path and reports as the data, for the notebooks and the command line."""
    return ", ".join(cfg.dataset)


def check_world(cfg: TrainConfig, world: int) -> None:
    """A data-parallel run splits every batch evenly over its processes: one line if it cannot."""
    if cfg.batch_tokens % world:
        lower = cfg.batch_tokens // world * world
        raise ValueError(f"BATCH_TOKENS = {cfg.batch_tokens} does not split over the {world} processes of this "
                         f"torchrun job: set BATCH_TOKENS to a multiple of {world} (e.g. {lower or world}) "
                         "or change --nproc-per-node")


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to the non-zero floor cfg.lr_min at the last step."""
    warmup = max(1, min(cfg.warmup_steps, total_steps // 10 or 1))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    saes: dict[int, torch.nn.Module]
    tokens: int
    steps: int
    resumed_from: int | None
    metrics_path: Path | None
    history: list[dict] = field(default_factory=list)
    # Tokens forwarded but never trained: the buffer's rest when training ended (under one
    # forward's rows; under one batch when the data ran out). Every other forwarded token is
    # trained exactly once, so tokens + unused_tokens = kept tokens of the forwards run.
    unused_tokens: int = 0
    # Tokens packed into contexts per mix source (data.TextSource.describe()), from the run's start:
    # the mix proportions as measured, in tokens (also logged as "mix" shares in the metrics).
    tokens_by_source: dict[str, int] = field(default_factory=dict)
    # The layer each SAE of `saes` reads (key -> layer; the identity without variants).
    layer_of: dict = field(default_factory=dict)
    # How the run resumed, for run_report.json: the stream's identity, the last replay (forwards,
    # seconds, verified), stream changes the user allowed, and the model dtype(s) it trained on.
    resume: dict = field(default_factory=dict)


def _sources(cfg: TrainConfig, revisions: Mapping[str, str | None] | None = None) -> list:
    """The run's training text sources (data.TextSource.part "train": never a validation document); an hf
    source streams the revision `revisions` pins for it."""
    sources = [dataclasses.replace(parse_source(spec, seed=cfg.seed), part="train") for spec in cfg.dataset]
    for source in sources:
        if source.kind == "hf":
            source.revision = (revisions or {}).get(source.describe())
    return sources


def _token_stream(cfg: TrainConfig, tokenizer, counts: dict | None = None,
                  revisions: Mapping[str, str | None] | None = None) -> Iterator[torch.Tensor]:
    """The run's token batches; `counts` (if given) receives the tokens per mix source of the contexts
    that reach the forward.

    The sources give their training part, mixed in tokens by their weights, packed into contexts
    (data.context_tokens: the model's own context start and document separator), and shuffled through a
    window of shuffle_window_contexts contexts before they are cut into forwards. Every step is seeded by
    cfg.seed and replays identically, which is what a resume relies on (and every rank under torchrun
    reads this stream); `revisions` pins each Hub source's commit (the first session's)."""
    texts = mix_streams(_sources(cfg, revisions), seed=cfg.seed, tokenizer=tokenizer)
    return token_batches(texts, tokenizer, cfg.context_len, cfg.model_batch_size, prepend_bos=True,
                         counts=counts, shuffle_window=shuffle_window_contexts(cfg), seed=cfg.seed)


def shuffle_window_contexts(cfg: TrainConfig) -> int:
    """Contexts in the run's shuffle window: cfg.shuffle_tokens (a run never needs a window larger than
    its total_tokens) over context_len. Its memory: that many contexts x context_len x 4 bytes."""
    return min(cfg.shuffle_tokens, cfg.total_tokens) // cfg.context_len


def validation_batches(cfg: TrainConfig, tokenizer, n_tokens: int, dataset: str | tuple[str, ...] | None = None,
                       seed_offset: int = 1_000) -> list[torch.Tensor]:
    """Held-out token batches (~n_tokens, fewer if the held-out documents run out) for validation.

    Only documents that data.split_of holds out (TextSource.part "test"), which training skips: of
    the `dataset` sources if given, else of the training sources (under another seed; the synthetic
    corpus from its test stream), so validation and training never share a document, even where
    the validation set overlaps the training set (a crawl and a sample of all crawls)."""
    specs = cfg.dataset if not dataset else ((dataset,) if isinstance(dataset, str) else tuple(dataset))
    seed = cfg.seed + seed_offset
    sources = [dataclasses.replace(parse_source(spec, seed=seed), part="test") for spec in specs]
    for source in sources:
        if source.kind == "synthetic":
            source.split = "test"
    n_batches = max(1, math.ceil(n_tokens / (cfg.model_batch_size * cfg.context_len)))
    texts = mix_streams(sources, seed=seed, cycle=False, tokenizer=tokenizer)
    batches = list(token_batches(texts, tokenizer, cfg.context_len, cfg.model_batch_size, prepend_bos=True,
                                 max_batches=n_batches))
    if len(batches) < n_batches:
        print(f"Validation: the held-out documents filled {len(batches)} of {n_batches} batches "
              f"({len(batches) * cfg.model_batch_size * cfg.context_len:,} of ~{n_tokens:,} tokens).")
    return batches


def activation_blocks(model, tokenizer, cfg: TrainConfig, device, state: dict | None = None,
                      group: distributed.Group | None = None, reserve=None,
                      ledger: replay.StreamLedger | None = None) -> ActivationBlocks:
    """The run's shuffling buffer over its token stream, from `state` (a checkpoint's "data") on.

    A block is `block_batches` forwards; this is the one place its size is chosen, and with it the
    buffer's memory (`ActivationBlocks.capacity` rows per layer): cfg.block_batches, or for "auto" as
    many as buffer_memory_fraction of the free memory holds (at most AUTO_BLOCK_BATCHES); either way the
    buffer shrinks its blocks when that share no longer holds them. The free memory counted is what the
    training steps leave (tiers.buffer_budget_bytes): less `reserve()` (step_reserve_bytes: Adam's
    moments torch has not allocated yet, one SAE's gradients and step tensors) and, on a GPU, the share
    tiers keeps for fragmentation. Under torchrun every rank takes the smallest size any rank can hold.
    The buffer's `tokens_by_source` counts the tokens packed per mix source. `ledger` (the trainer's)
    hashes every token batch as the forwards take it, the skipped ones of a resume included."""
    dtype = getattr(torch, cfg.activation_dtype)
    rows_per_forward = cfg.model_batch_size * cfg.context_len
    counts: dict[str, int] = {}
    device = torch.device(device)
    agree = group.min_int if group is not None else None

    def source(skip: int):
        counts.clear()  # the stream replays from its start (skipping `skip` forwards): recount
        rows = residual_rows if group is None else functools.partial(distributed.sharded_rows, group)
        batches = _token_stream(cfg, tokenizer, counts, ledger.identity["revisions"] if ledger else None)
        if ledger is not None:
            batches = ledger.track(batches, skip)
        return rows(model, tokenizer, batches, cfg.layers, device=device, dtype=dtype, skip=skip)

    def budget() -> int:
        total = total_memory_bytes(device) if device.type == "cuda" else 0
        return tiers.buffer_budget_bytes(free_memory_bytes(device), reserve() if reserve is not None else 0, total,
                                         cfg.buffer_memory_fraction)

    block_batches = cfg.block_batches
    if block_batches == "auto":
        row_bytes = d_model(model) * len(set(check_layers(model, cfg.layers))) * dtype.itemsize
        block_batches = block_batches_for_memory(budget(), row_bytes=row_bytes, rows_per_forward=rows_per_forward,
                                                 fixed_rows=cfg.batch_tokens, max_batches=AUTO_BLOCK_BATCHES)
        if agree is not None:
            block_batches = agree(block_batches)
    blocks = ActivationBlocks(source, batch_tokens=cfg.batch_tokens, block_batches=block_batches,
                              rows_per_forward=rows_per_forward, seed=cfg.seed, device=device, dtype=dtype,
                              state=state, memory_budget=budget, agree=agree)
    blocks.tokens_by_source = counts
    return blocks


def step_reserve_bytes(saes: Mapping, optimizers: Mapping, batch_tokens: int) -> int:
    """Bytes the training steps add to the memory after the buffer is sized (tiers.step_reserve_gib's
    terms, from the real SAEs): the two Adam moments of every parameter whose optimiser state torch has
    not allocated yet (it does at the first step; a resumed run has them), plus the largest single
    SAE's gradients and dense [batch_tokens, d_sae] step tensors (the SAEs step one at a time and free
    their gradients)."""
    pending, step = 0, 0
    for key, sae in saes.items():
        optimizer = optimizers[key]
        params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        pending += sum(2 * p.numel() * p.element_size() for p in params if not optimizer.state.get(p))
        grads = sum(p.numel() * p.element_size() for p in params)
        step = max(step, grads + tiers.SAE_ACT_COPIES * batch_tokens * sae.cfg.d_sae * 4)
    return pending + step


def spread_max_memory(P: Mapping, *, config=None, totals_gib=None) -> dict[int, int] | None:
    """`max_memory` for the tier recipe's model when MODEL_DEVICE is "spread" (None otherwise), so the
    model fills the GPUs in order and leaves room for what runs beside it: on the SAE's GPU (SAE_DEVICE,
    the last by default) its SAEs with Adam, step tensors and an integer BLOCK_BATCHES' buffer; on the
    others the forward's working set (shared.tiers' memory model). The model's last blocks, which the
    forward stops before, end up beside the SAE. config: the model's config (default: from the Hub);
    totals_gib: the GPUs' memory (default: torch's)."""
    if P["MODEL_DEVICE"] != SPREAD:
        return None
    if totals_gib is None:
        if not torch.cuda.is_available():
            return None
        totals_gib = [torch.cuda.get_device_properties(i).total_memory / tiers.GIB
                      for i in range(torch.cuda.device_count())]
    cfg = config_from_params(P, checkpoint_dir="-")
    if config is None:
        from .models import model_config

        config = model_config(cfg.model_id)
    d = config.hidden_size
    eager = "gemma2" in str(getattr(config, "model_type", ""))
    read = len(set(cfg.layers))
    n_gpus = len(totals_gib)
    sae_device = str(P.get("SAE_DEVICE") or "")
    sae_gpu = int(sae_device.split(":")[1]) if sae_device.startswith("cuda:") else n_gpus - 1
    forward = tiers.forward_gib_of(d, config.num_attention_heads, eager, cfg.model_batch_size, cfg.context_len, read, 2)
    sae = sum(tiers.sae_training_gib(d, cfg.sae.d_sae, len(sae_plan(cfg, cfg.layers)), cfg.batch_tokens).values())
    if isinstance(cfg.block_batches, int):
        rows = cfg.block_batches * cfg.model_batch_size * cfg.context_len + cfg.batch_tokens
        sae += rows * d * read * tiers.BUFFER_BYTES / tiers.GIB
    return _spread_max_memory(tiers.spread_reserve(n_gpus, sae_gpu, forward, sae), totals_gib)


AUTO_BLOCK_BATCHES = tiers.AUTO_BLOCK_BATCHES  # block_batches="auto" never goes above this many forwards per block


def _data_state(state: dict, cfg: TrainConfig) -> dict:
    """A checkpoint's data position. Checkpoints written before the carry existed hold only
    "blocks" (blocks done, their leftover rows dropped): they resume with an empty carry."""
    if "data" in state:
        return state["data"]
    if not isinstance(cfg.block_batches, int):
        raise ValueError("this checkpoint predates the saved block size: resume it with the integer "
                         "block_batches it was written with")
    return {"forwards": state["blocks"] * cfg.block_batches, "block": state["blocks"], "carry": {}}


def default_metrics_path(cfg: TrainConfig) -> Path:
    """cfg.metrics_path, else <checkpoint_dir>/metrics.jsonl (on Drive it outlives the VM, so the
    curves of a resumed run are whole); for a Hub store, ./metrics/<user>--<repo>.jsonl."""
    if cfg.metrics_path:
        return Path(cfg.metrics_path)
    if cfg.checkpoint_dir.startswith("hf:"):
        return Path("metrics") / (cfg.checkpoint_dir[3:].strip("/").replace("/", "--") + ".jsonl")
    return Path(cfg.checkpoint_dir) / "metrics.jsonl"


def _open_store(cfg: TrainConfig):
    return ckpt.open_store(cfg.checkpoint_dir, keep=cfg.keep_checkpoints)


class _MetricsLog:
    """Append-only JSONL of training metrics; on resume, entries past the checkpoint are dropped.

    That rewrite replaces the file atomically (temp file, fsync, rename): a crash during it leaves
    the old log whole, never a cut one."""

    def __init__(self, path: Path | None, resume_tokens: int):
        self.path = path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text() if path.exists() else None
        kept = []
        for line in (old or "").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if entry.get("tokens", 0) <= resume_tokens:
                kept.append(line)
        text = "".join(line + "\n" for line in kept)
        if text != old:
            ckpt.atomic_write_text(path, text)

    def write(self, entry: dict) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(entry) + "\n")


def train(cfg: TrainConfig, model=None, tokenizer=None, *, progress: bool = True) -> TrainResult:
    """Train one SAE per layer in cfg.layers, resuming from cfg.checkpoint_dir when it holds a checkpoint.

    Under torchrun (distributed.init called first) every process runs this with the same cfg: the
    forwards and each batch are shared out, and rank 0 alone writes checkpoints and metrics."""
    group = distributed.current()
    if group is not None:
        check_world(cfg, group.world)
        progress = progress and group.main
    torch.manual_seed(cfg.seed)
    model, tokenizer = _prepare_model(cfg, model, tokenizer)
    layers = sorted(resolve_layers(cfg.layers, layer_count(model), name="layers"))  # repeats refused
    sae_device = resolve_device(cfg.sae_device) if cfg.sae_device else model_device(model)
    plan = sae_plan(cfg, layers)
    layer_of = {key: layer for key, (layer, _) in plan.items()}
    saes = _build_saes(cfg, d_model(model), plan, sae_device)
    optimizers = {key: adam(sae.parameters(), lr=cfg.lr, betas=cfg.adam_betas, device=sae_device)
                  for key, sae in saes.items()}

    store = _open_store(cfg)
    resumed = _resume(cfg, store, saes, optimizers, group)
    tokens, step, state = resumed or (0, 0, {})
    main = group is None or group.main
    dtypes = _model_dtypes(state, _dtype_name(model), tokens, speak=main)
    ledger = _ledger(cfg, tokenizer, state.get("stream"), group)
    metrics_path = default_metrics_path(cfg)
    log = _MetricsLog(metrics_path if main else None, tokens)
    data = _data_state(state, cfg) if resumed else None
    blocks = activation_blocks(model, tokenizer, cfg, sae_device, data, group=group, ledger=ledger,
                               reserve=lambda: step_reserve_bytes(saes, optimizers, cfg.batch_tokens))

    def record() -> dict:
        """What a checkpoint keeps beyond the weights: the stream's hash and identity, the dtypes."""
        return {"stream": ledger.state_at(blocks.forwards), "model_dtypes": dtypes}

    def result(tokens, step, history) -> TrainResult:
        resume = {"stream_identity": ledger.identity, "replay": ledger.replay, "stream_changes": ledger.changes,
                  "model_dtypes": dtypes}
        return TrainResult(saes, tokens, step, resumed[0] if resumed else None, metrics_path, history,
                           blocks.carry_rows(), dict(blocks.tokens_by_source), layer_of, resume)

    if tokens >= cfg.total_tokens:
        print(f"Training already complete ({tokens:,} tokens); loaded the final SAEs.")
        return result(tokens, step, [])

    for sae in saes.values():
        sae.reducer = group
    try:
        tokens, step, history = _run_loop(cfg, saes, layer_of, optimizers, store, log, blocks, tokens=tokens,
                                          step=step, fresh=resumed is None, progress=progress, group=group,
                                          record=record)
    except FloatingPointError as e:  # an overflowing forward: say how a re-run gets past it
        raise FloatingPointError(f"{e} Run again after that: training resumes from its last checkpoint and "
                                 "the dtype switch is recorded in run_report.json.") from None
    finally:
        for sae in saes.values():
            sae.reducer = None
    return result(tokens, step, history)


def _dtype_name(model) -> str:
    """The dtype the model's weights (and so its activations) are in, e.g. "float16"."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _model_dtypes(state: dict, now: str, tokens: int, *, speak: bool) -> list[dict]:
    """The dtypes the run's activations came from, [{"from_tokens", "dtype"}, ...]: a checkpoint's
    record plus this session's dtype when it differs (a change is recorded, not refused: it is
    how a float16 overflow is fixed). A checkpoint from before the record says "unrecorded"."""
    if not state:
        return [{"from_tokens": 0, "dtype": now}]
    saved = state.get("model_dtypes") or [{"from_tokens": 0, "dtype": "unrecorded"}]
    then = saved[-1]["dtype"]
    if then == now:
        return list(saved)
    if speak and then != "unrecorded":
        print(f"The model now runs in {now}; the first {tokens:,} tokens were trained on {then} activations "
              "(recorded in the checkpoints and run_report.json).")
    return [*saved, {"from_tokens": tokens, "dtype": now}]


def _ledger(cfg: TrainConfig, tokenizer, expected: dict | None, group) -> replay.StreamLedger:
    """The run's stream ledger: the identity (the Hub revisions the first session pinned, else
    resolved now; rank 0's under torchrun) and the checkpoint's hash record to check on replay."""
    main = group is None or group.main
    identity = None
    if main:
        pinned = ((expected or {}).get("identity") or {}).get("revisions")
        identity = replay.stream_identity(_sources(cfg), tokenizer, pinned=pinned)
        unpinned = [name for name, revision in identity["revisions"].items() if revision is None]
        if unpinned:
            print(f"Could not pin the Hub revision of {', '.join(unpinned)} (offline or unreachable): a resume "
                  "still checks the stream by its hash.")
    if group is not None:
        identity = group.broadcast_object(identity)
    return replay.StreamLedger(identity, expected, allow_change=cfg.allow_stream_change, speak=main)


def _prepare_model(cfg: TrainConfig, model, tokenizer):
    """The model and tokenizer passed in, else cfg.model_id loaded on cfg.model_device in cfg.model_dtype."""
    if model is None:
        model, tokenizer = load_model(cfg.model_id, device=cfg.model_device, dtype=cfg.model_dtype)
    return model, tokenizer


def _build_saes(cfg: TrainConfig, d_in: int, plan: Mapping, device) -> dict[int | str, torch.nn.Module]:
    """The SAEs of sae_plan(cfg, ...), each with d_in the model's width and seed cfg.seed + its layer."""
    for sae_cfg in {id(c): c for _, c in plan.values()}.values():
        if sae_cfg.d_in is not None and sae_cfg.d_in != d_in:
            raise ValueError(f"sae.d_in={sae_cfg.d_in} but {cfg.model_id} has width {d_in}: leave d_in None "
                             "(the trainer fills it from the model)")
        arch = ARCHITECTURES.get(sae_cfg.architecture)
        if arch is not None and not arch.model.trainable:
            raise NotImplementedError(f"sae.architecture={sae_cfg.architecture!r} loads for inference only (its "
                                      "training terms are not written yet): train architecture 'topk'")
    return {key: build_sae(dataclasses.replace(sae_cfg, d_in=d_in, seed=cfg.seed + layer), device=device)
            for key, (layer, sae_cfg) in plan.items()}


def _resume(cfg: TrainConfig, store, saes, optimizers, group=None) -> tuple[int, int, dict] | None:
    """Load the latest checkpoint into saes and optimizers: (tokens, step, its state), or None if there is none.

    Under torchrun rank 0 picks the checkpoint and every rank loads that one (the ranks could
    judge a newest checkpoint being written or damaged differently)."""
    if group is None:
        resumed = store.load_latest()
    else:
        resumed = store.load_latest() if group.main else None
        name = group.broadcast_object(None if resumed is None else ckpt.checkpoint_name(resumed[0]))
        if name is not None and not group.main:
            resumed = store.load(name)
    if resumed is None:
        return None
    tokens, state = resumed
    changed = _resume_mismatch(state["config"], cfg)
    if changed:
        raise ValueError(
            f"{store} holds a checkpoint of a run with other settings ({', '.join(changed)}); "
            "use the same parameters to resume, or point checkpoint_dir at a new folder to start afresh")
    for key, sae in saes.items():
        sae.load_state_dict(state["saes"][str(key)])
        load_optimizer_state(optimizers[key], state["optimizers"][str(key)])
    step = state["step"]
    ckpt.set_rng_state(state["rng"])
    if group is None or group.main:
        print(f"Resumed from {store} at {tokens:,} tokens (step {step}, checkpoint {ckpt.checkpoint_name(tokens)}).")
    return tokens, step, state


def _resume_mismatch(saved: dict, cfg: TrainConfig) -> list[str]:
    """The names of the settings in which a checkpoint's resume key differs from cfg's.

    A setting the saved key lacks was not yet settable when it was written, so it ran at its
    default: checkpoints from before dtype, b_dec_init, ... could be set still resume."""
    wanted = _plain(cfg.resume_key())
    defaults = {f.name: f.default for cls in (type(cfg.sae), TrainConfig) for f in dataclasses.fields(cls)
                if f.default is not dataclasses.MISSING}
    saved = {**_plain({k: defaults[k] for k in wanted.keys() - saved.keys() if k in defaults}), **_plain(saved)}
    recorded = {"model_dtype"}  # a dtype switch is recorded (_model_dtypes), not refused
    return sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k) and k not in recorded)


def _save_checkpoint(store, cfg: TrainConfig, saes, optimizers, blocks: ActivationBlocks, *, tokens: int,
                     step: int, group=None, record=None) -> None:
    """Write a checkpoint: the resume key, SAEs, Adam states, step, data position (with the carried rows),
    RNG states and `record()` (the stream's hash record and the model dtypes; the key's model_dtype is
    the dtype really run). Under torchrun rank 0 writes it while the others wait (the ranks hold the
    same state)."""
    if group is not None and not group.main:
        group.barrier()
        return
    extra = record() if record is not None else {}
    key = cfg.resume_key()
    if extra.get("model_dtypes"):
        key["model_dtype"] = extra["model_dtypes"][-1]["dtype"]
    state = {
        "config": key,
        "saes": {str(key): sae.state_dict() for key, sae in saes.items()},
        "optimizers": {str(key): opt.state_dict() for key, opt in optimizers.items()},
        "step": step, "data": blocks.state_dict(), "rng": ckpt.get_rng_state(), **extra,
    }
    store.save(tokens, state, step=step)
    if group is not None:
        group.barrier()


def _init_from_first_block(cfg: TrainConfig, saes, layer_of, block) -> None:
    """Set each SAE's input scale and b_dec from a sample of the first block (a fresh run only;
    the SAEs of one layer get the same sample)."""
    for key, sae in saes.items():
        sample = block.rows[layer_of[key]][block.order[: cfg.geometric_median_tokens]]
        sae.estimate_norm_scale(sample)
        sae.init_b_dec(sample)


def _run_loop(cfg: TrainConfig, saes, layer_of, optimizers, store, log, blocks: ActivationBlocks, *, tokens: int,
              step: int, fresh: bool, progress: bool, group=None, record=None) -> tuple[int, int, list[dict]]:
    """Train from (tokens, step) to cfg.total_tokens, logging and checkpointing on the way;
    -> (tokens, step, logged entries). Every SAE steps on its layer's rows of the same batch (SAEs
    sharing a layer see identical rows). Under torchrun each rank trains on its slice of every batch.
    Checkpoints: see CheckpointClock (tokens or minutes, at block boundaries)."""
    keys = tuple(saes)
    total_steps = math.ceil(cfg.total_tokens / cfg.batch_tokens)
    main = group is None or group.main
    rows = slice(None) if group is None else slice(group.rank * cfg.batch_tokens // group.world,
                                                   (group.rank + 1) * cfg.batch_tokens // group.world)
    die_at = _test_death(group)
    wandb_run = _start_wandb(cfg, not fresh) if main else None
    history: list[dict] = []
    bar = _progress(cfg.total_tokens, tokens, progress)
    clock = CheckpointClock(cfg, tokens, group=group, speak=main)
    save = functools.partial(_save_checkpoint, store, cfg, saes, optimizers, blocks, group=group, record=record)
    started, window_tokens = time.perf_counter(), 0
    while tokens < cfg.total_tokens:
        clock.block_started()
        block = blocks.next_block(max_rows=(total_steps - step) * cfg.batch_tokens)
        if block is None:
            break
        if step == 0 and fresh:
            _init_from_first_block(cfg, saes, layer_of, block)
        for batch in block:
            lr = lr_at(step, cfg, total_steps)
            entry = {"step": step, "tokens": tokens + cfg.batch_tokens, "lr": lr}
            if die_at is not None and step == die_at[0]:
                _die(die_at[1])
            for key, sae in saes.items():
                x = batch[layer_of[key]][rows]
                metrics = sae_step(sae, optimizers[key], x, lr, autocast=cfg.sae_autocast)
                entry.update({f"{sae_label(key)}/{name}": value for name, value in metrics.items()})
            step += 1
            tokens += cfg.batch_tokens
            window_tokens += cfg.batch_tokens
            bar.update(cfg.batch_tokens)
            if step % cfg.log_every == 0 or tokens >= cfg.total_tokens:
                if group is not None:
                    entry = _reduce_entry(entry, group)
                entry = {name: float(value) for name, value in entry.items()}
                entry["step"] = int(entry["step"])
                entry["tokens"] = int(entry["tokens"])
                elapsed = time.perf_counter() - started
                entry["tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                entry["mix"] = mix_shares(blocks.tokens_by_source)
                started, window_tokens = time.perf_counter(), 0
                log.write(entry)
                history.append(entry)
                bar.set_postfix_str(_postfix(entry, keys))
                if wandb_run is not None:
                    wandb_run.log(entry, step=step)
            if tokens >= cfg.total_tokens:
                break
        if tokens >= cfg.total_tokens or clock.due(tokens):
            save(tokens=tokens, step=step)
            clock.saved(tokens)
    bar.close()
    if tokens < cfg.total_tokens:
        save(tokens=tokens, step=step)
        print(f"The data ran out after {tokens:,} of {cfg.total_tokens:,} tokens ({blocks.carry_rows():,} more "
              "were forwarded, short of a batch); saved what was trained.")
    if wandb_run is not None:
        wandb_run.finish()
    return tokens, step, history


def _clock() -> float:
    """Seconds on a monotonic clock: what the minutes cadence reads (tests replace it)."""
    return time.monotonic()


class CheckpointClock:
    """When to checkpoint: every `checkpoint_every_tokens` tokens, and before `checkpoint_every_minutes`
    of training would go unsaved, whatever the throughput (5.5k tokens/s or 100k).

    A checkpoint can only be exact at a block boundary (the buffer's state there is the forwards
    consumed, the block index and a carry of under one batch: the mid-block alternative would save
    the whole shuffled block). So the time rule saves at the last boundary before the limit: when
    the time since the last checkpoint plus the last block's duration reaches it. A crash then loses
    at most the limit, as long as a block takes less (a one-time notice says when one does not).
    Under torchrun every rank must save at the same step: rank 0's decision is broadcast."""

    def __init__(self, cfg: TrainConfig, tokens: int, *, group=None, speak: bool = True):
        self.every_tokens = cfg.checkpoint_every_tokens
        self.limit_s = None if cfg.checkpoint_every_minutes is None else 60.0 * cfg.checkpoint_every_minutes
        self.group, self.speak, self.warned = group, speak, False
        self.next_tokens = (tokens // self.every_tokens + 1) * self.every_tokens
        self.last_save = self.block_start = _clock()
        self.block_s = 0.0

    def block_started(self) -> None:
        self.block_start = _clock()

    def due(self, tokens: int) -> bool:
        """At a block's end: save now? (the same answer on every rank)"""
        now = _clock()
        self.block_s = now - self.block_start
        due = tokens >= self.next_tokens
        if self.limit_s is not None:
            due = due or now - self.last_save + self.block_s >= self.limit_s
            if self.block_s > self.limit_s and not self.warned and self.speak:
                self.warned = True
                print(f"A block of forwards takes {self.block_s / 60:.1f} min, longer than the "
                      f"{self.limit_s / 60:g} min checkpoint interval: a crash can lose one block; lower "
                      "BLOCK_BATCHES for a tighter bound.")
            if self.group is not None:
                due = bool(self.group.broadcast_object(due))
        return due

    def saved(self, tokens: int) -> None:
        self.next_tokens = (tokens // self.every_tokens + 1) * self.every_tokens
        self.last_save = _clock()


def mix_shares(tokens_by_source: Mapping[str, int]) -> dict[str, float]:
    """Each mix source's share of the tokens packed so far (the measured mix, for the metrics log)."""
    total = sum(tokens_by_source.values())
    return {name: n / total for name, n in tokens_by_source.items()} if total else {}


def _reduce_entry(entry: dict, group) -> dict:
    """A log entry's per-rank metrics as the whole batch's: each rank's loss terms are its share of the
    global ones (they are normalised by the global variance), so they add; l0 averages."""
    names = [name for name, value in entry.items() if torch.is_tensor(value) and not name.endswith("dead_pct")]
    values = group.all_reduce(torch.stack([entry[name].detach().float() for name in names]))
    out = dict(entry)
    for name, value in zip(names, values):
        out[name] = value / group.world if name.endswith("/l0") else value
    return out


def _test_death(group) -> tuple[int, str] | None:
    """Tests only: SAE_TEST_DIE="<rank>:<step>[:hang]" makes that rank exit (as a crash would) or
    stall forever (as a wedged GPU would) at that step: (step, how) on that rank."""
    spec = os.environ.get("SAE_TEST_DIE", "")
    if group is None or not spec:
        return None
    rank, step, *how = spec.split(":")
    return (int(step), how[0] if how else "exit") if int(rank) == group.rank else None


def _die(how: str) -> None:
    if how == "hang":
        while True:
            time.sleep(60)
    os._exit(1)


def adam(params, lr: float, betas=(0.9, 0.999), device=None) -> torch.optim.Adam:
    """The trainer's optimiser: Adam, fused on CPU / CUDA (one kernel per parameter; same update up to
    float rounding as torch's default for-loop Adam, about 2x faster on CPU, deterministic)."""
    device = torch.device(device) if device is not None else None
    fused = device is not None and device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """optimizer.load_state_dict plus a shape check torch does not make (fused Adam would walk a
    transposed moment as flat memory without complaint). Checkpoints written before the encoder
    was held latent-major carry its Adam moments as [d_in, d_sae]: those are transposed in place."""
    optimizer.load_state_dict(state)
    for param, param_state in optimizer.state.items():
        for key, value in param_state.items():
            if not torch.is_tensor(value) or value.ndim == 0 or value.shape == param.shape:
                continue
            if value.ndim == 2 and value.shape == param.shape[::-1]:
                param_state[key] = value.t().contiguous()
            else:
                raise ValueError(f"The checkpoint's optimizer state {key!r} has shape {tuple(value.shape)} for a "
                                 f"parameter of shape {tuple(param.shape)}: it belongs to another SAE; resume with "
                                 "the same settings or start in a new checkpoint_dir.")


def _plain(obj):
    """JSON-normal form (tuples become lists) so saved and current settings compare equal."""
    return json.loads(json.dumps(obj))


def _autocast(device: torch.device, enabled: bool):
    """bf16 autocast on GPUs that have bf16 (the matmuls run in bf16, weights and Adam stay fp32);
    off on CPU and on fp16-only GPUs such as the T4, where fp16 would need loss scaling. (torch's plain
    is_bf16_supported() says True on a T4 too, counting its slow emulated bf16: not counted here.)"""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sae_step(sae, optimizer, x: torch.Tensor, lr: float | None = None, *, autocast: bool = True,
             dead_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One optimiser step of one SAE on rows x: forward (AuxK on dead_mask, default the SAE's own
    tokens-since-fired tracking), backward, the architecture's gradient constraint (decoder-parallel
    part removed), Adam, its weight constraint (decoder rows back to unit norm), dead tracking
    updated. Logs each named loss term of the architecture beside fvu and aux as "<name>_loss". Returns 0-dim metric tensors (read them only when
    logging: turning them into floats every step would stall a GPU on each one)."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    with _autocast(x.device, autocast):
        out = sae(x, dead_mask=sae.dead_mask() if dead_mask is None else dead_mask)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if sae.reducer is not None:
        sae.reducer.sum_grads(sae)  # every rank's share of the batch's gradient
    sae.constrain_grads()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # free the gradients now: with several SAEs only one holds them at a time
    sae.constrain_weights()
    dead = sae.update_dead_tracking(out.latent_idx, x.shape[0], out.latent_vals)
    named = {f"{name}_loss": term.detach() for name, term in out.losses.items() if name not in ("fvu", "aux")}
    return {"loss": out.loss.detach(), "fvu": out.fvu.detach(), "l0": out.l0, "aux_loss": out.aux_loss.detach(),
            **named, "dead_pct": 100.0 * dead.float().mean()}


def _postfix(entry: dict, keys) -> str:
    p = sae_label(keys[0])
    return (f"{p} loss {entry[f'{p}/loss']:.3f} fvu {entry[f'{p}/fvu']:.3f} l0 {entry[f'{p}/l0']:.0f} "
            f"dead {entry[f'{p}/dead_pct']:.1f}% {entry.get('tokens_per_s', 0):,.0f} tok/s")


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="tok", unit_scale=True, disable=not enabled,
                desc="training", dynamic_ncols=True)


def _start_wandb(cfg: TrainConfig, resumed: bool):
    if not cfg.wandb_project:
        return None
    try:
        import wandb
    except ImportError:
        print("wandb is not installed; metrics go to the JSONL log only (pip install wandb to enable).")
        return None
    return wandb.init(project=cfg.wandb_project, config=asdict(cfg), resume="allow" if resumed else None)


def load_metrics(path: str | Path) -> list[dict]:
    """The JSONL metrics log as a list of dicts (for plots)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]



def train_tiny_sae(model, tokenizer, model_id: str, layer: int, dataset: str, folder: str | Path, *,
                   total_tokens: int = 20_000, d_sae: int | None = None, k: int = 8, context_len: int = 64,
                   seed: int = 0, progress: bool = False) -> Path:
    """Train a small TopK SAE (d_sae = 4 x d_model unless given) at `layer` on `dataset` in about a
    minute on a CPU, export it in SAELens format and return its folder, folder/blocks.<L>.hook_resid_post.
    What a smoke run, or a model with no published SAE, uses in place of a real one."""
    from .data import context_tokens
    from .export import ExportInfo, export_run
    from .models import layers_path

    folder = Path(folder)
    sae_cfg = TopKConfig(d_sae=d_sae or 4 * d_model(model), k=k, dead_tokens_threshold=4000)
    cfg = TrainConfig(model_id=model_id, layers=(int(layer),), dataset=(dataset,), context_len=context_len,
                      sae=sae_cfg, total_tokens=total_tokens, batch_tokens=512, model_batch_size=8,
                      block_batches=8, warmup_steps=10, checkpoint_every_tokens=10 * total_tokens,
                      checkpoint_dir=str(folder / "checkpoints"), seed=seed)
    result = train(cfg, model, tokenizer, progress=progress)
    info = ExportInfo(model_name=model_id, layers_path=layers_path(model), context_size=context_len,
                      dataset_path=dataset, tokens_trained=result.tokens, **context_tokens(tokenizer).export_fields())
    return export_run(result.saes, folder, info)[int(layer)]


if __name__ == "__main__":
    from .train_cli import main

    main()
