"""A training run's configuration: `TrainConfig` (every knob; the same values resume a run), its resume key
(what a checkpoint must match), and the plan of SAEs it trains (`sae_plan`: one per layer, or a set of
named variants at every layer, all on the same batches)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

from ..saes.architectures import config_from_dict
from ..saes.base import SAEConfig
from ..saes.topk import TopKConfig


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
    # Adam's eps: 1e-8 (torch's); OpenAI used 6.25e-10. A latent whose gradient is near eps (rare, or
    # trained by AuxK alone) takes damped steps; BENCHMARKS.md "Recipe choices" measures it.
    adam_eps: float = 1e-8
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
        if not 0 < self.adam_eps < 1e-3:
            raise ValueError(f"adam_eps must be a small positive number such as 1e-8, got {self.adam_eps}")
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



def check_world(cfg: TrainConfig, world: int) -> None:
    """A data-parallel run splits every batch evenly over its processes: one line if it cannot."""
    if cfg.batch_tokens % world:
        lower = cfg.batch_tokens // world * world
        raise ValueError(f"BATCH_TOKENS = {cfg.batch_tokens} does not split over the {world} processes of this "
                         f"torchrun job: set BATCH_TOKENS to a multiple of {world} (e.g. {lower or world}) "
                         "or change --nproc-per-node")
