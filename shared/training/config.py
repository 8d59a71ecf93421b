"""A training run's configuration: `TrainConfig` (every knob; the same values resume a run), its resume key
(what a checkpoint must match), and the plan of what it trains (`sae_plan`: one SAE per layer, a set of
named variants at every layer, or one crosscoder over all the layers, all on the same batches)."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Literal, Mapping, get_args

from ..saes.architectures import config_from_dict
from ..saes.base import SAEConfig
from ..saes.crosscoder import CrosscoderConfig
from ..saes.topk import TopKConfig

ModelDtype = Literal["auto", "bfloat16", "float16", "float32"]  # runtime.DTYPES
ActivationDtype = Literal["float32", "bfloat16", "float16"]
CROSSCODER_KEY = "xc"  # a crosscoder run's one model in sae_plan, TrainResult.saes and its metric names ("xc/fvu")


@dataclass
class TrainConfig:
    """Every knob of a training run; the same values must be passed again to resume.

    `sae` is the SAE's own config (any registered architecture's, e.g. TopKConfig) with d_in left
    None: train() fills it with the model's width and seeds layer L's SAE with seed + L. A dict
    (say, from JSON) is turned into the config class its "architecture" names.

    `variants` ({name: SAE config}), when given, replaces `sae`: every layer trains one SAE per
    name, keyed "L<layer>/<name>", all on the same batches in the same order and all seeded
    seed + L (identical configs start and end identical; sweep.py builds a k sweep of them).

    A `CrosscoderConfig` as `sae` trains one crosscoder (saes.crosscoder) instead, keyed "xc": it reads
    every layer of the run from the same batch, stacked [tokens, n_layers, d_in]. Its layers must equal
    `layers` (the run forwards and buffers exactly those); d_in is filled from the model and its seed is
    `seed`, as for an SAE. A dict with a "layers" key is a CrosscoderConfig.
    """

    model_id: str
    """The model: a Hugging Face id, or "tiny:<arch>" for a test model; loaded when train() is given none."""
    layers: tuple[int, ...]
    """Decoder blocks whose residual stream (output) is trained on; one int is one layer."""
    dataset: tuple[str, ...] = ("synthetic",)
    """Training text sources (data.parse_source specs); "spec@0.7" sets a source's mix weight."""
    context_len: int = 1024
    """Tokens per context fed to the model (BOS included)."""
    sae: SAEConfig | CrosscoderConfig = field(default_factory=TopKConfig)
    """What is trained: an SAE config (d_sae, k, dtype, b_dec_init, ...; d_in from the model) or a CrosscoderConfig."""
    total_tokens: int = 50_000_000
    """Training tokens; the run ends at the first batch that reaches them."""
    batch_tokens: int = 4096
    """SAE training batch: tokens per optimiser step (under torchrun, split evenly over the ranks)."""
    model_batch_size: int = 8
    """Contexts per model forward."""
    block_batches: int | Literal["auto"] = 32
    """Model forwards per shuffled block (the unit of resume); "auto": as many as the free memory holds."""
    shuffle_tokens: int = 10_000_000
    """Contexts are shuffled across this many tokens (capped at total_tokens) before the forward: host
    memory 4 bytes a token (40 MB at 10M); 0: stream order (stream._token_stream)."""
    buffer_memory_fraction: float = 0.5
    """Share of the free memory the block store may take (it shrinks to fit)."""
    lr: float = 2e-4
    """Peak learning rate, reached after the warm-up."""
    lr_min: float = 6e-5
    """The cosine decay's floor, reached at the last step."""
    warmup_steps: int = 1000
    """Steps of linear warm-up (at most a tenth of the run's steps)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's betas."""
    adam_eps: float = 1e-8
    """Adam's eps: 1e-8 (torch's); OpenAI used 6.25e-10. A latent whose gradient is near eps (rare, or
    trained by AuxK alone) takes damped steps; BENCHMARKS.md "Recipe choices" measures it."""
    checkpoint_every_tokens: int = 5_000_000
    """Checkpoint at the first block boundary past every this many tokens."""
    checkpoint_every_minutes: float | None = 10.0
    """Also checkpoint before this much training would go unsaved; None: by tokens only."""
    keep_checkpoints: int = 2
    """Checkpoints kept (the newest); older ones are deleted once a newer one is complete."""
    checkpoint_dir: str = "checkpoints"
    """Where checkpoints go: a folder (a mounted Drive too) or "hf:<user>/<repo>"."""
    model_device: str | None = None
    """Device of a model train() loads (runtime.resolve_device names); None: the default device."""
    sae_device: str | None = None
    """Device of the SAEs, their Adam state and the block store; None: the model's."""
    model_dtype: ModelDtype | None = None
    """Dtype of a model train() loads; None or "auto": bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU."""
    activation_dtype: ActivationDtype = "float32"
    """Dtype of the shuffled block store."""
    sae_autocast: bool = True
    """bf16 autocast for the SAE step on GPUs with bf16 (weights and Adam stay fp32)."""
    geometric_median_tokens: int = 8192
    """Rows of the first block that set each SAE's input scale and b_dec (a fresh run only)."""
    log_every: int = 10
    """Log metrics every this many steps (and at the last)."""
    metrics_path: str | None = None
    """The JSONL metrics log; None: beside the checkpoints, so it survives with them."""
    wandb_project: str | None = None
    """Also log to this Weights & Biases project (when wandb is installed)."""
    seed: int = 0
    """Seeds the token stream, the shuffles and the SAEs (layer L's SAE: seed + L; a crosscoder: seed)."""
    variants: Mapping[str, SAEConfig] | None = None
    """Several SAEs per layer, {name: SAE config}, replacing `sae` (see above); None: one per layer."""
    allow_stream_change: bool = False
    """Resume even when the replayed stream differs from the checkpoint's (recorded), see replay.py."""

    def __post_init__(self):
        self.layers = tuple(int(x) for x in (self.layers if isinstance(self.layers, (list, tuple)) else [self.layers]))
        self.dataset = (self.dataset,) if isinstance(self.dataset, str) else tuple(self.dataset)
        if isinstance(self.sae, Mapping):
            self.sae = _crosscoder_from_dict(self.sae) if "layers" in self.sae else config_from_dict(self.sae)
        if not isinstance(self.sae, (SAEConfig, CrosscoderConfig)):
            raise ValueError("sae must be an SAE config such as TopKConfig(d_sae=..., k=...) or a CrosscoderConfig, "
                             f"got {type(self.sae).__name__}")
        if self.sae.seed != 0:
            raise ValueError(f"sae.seed={self.sae.seed}: a training run seeds layer L's SAE with seed + L; "
                             "set TrainConfig(seed=...) instead")
        if self.variants is not None:
            self.variants = _check_variants(self.variants)
        if not self.layers:
            raise ValueError("layers is empty: name at least one decoder layer to train an SAE on")
        if isinstance(self.sae, CrosscoderConfig):
            _check_crosscoder(self)
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
        if self.model_dtype is not None and self.model_dtype not in get_args(ModelDtype):
            raise ValueError(f"model_dtype must be one of {', '.join(get_args(ModelDtype))} or None, got {self.model_dtype!r}")
        if self.activation_dtype not in get_args(ActivationDtype):
            raise ValueError(f"activation_dtype must be one of {', '.join(get_args(ActivationDtype))}, "
                             f"got {self.activation_dtype!r}")

    def resume_key(self) -> dict:
        """The settings that must match for a checkpoint to be resumed (others, e.g. logging, may change).

        Flat, as before the SAE config was nested: the run's settings with the SAE's in place of
        `sae` (less d_in, which the model fixes, and seed, which the run's seed fixes; a crosscoder's
        named "crosscoder.<field>"). A checkpoint stores model_dtype as the dtype the model really ran
        in; a change of it is not refused but recorded (see train: a float16 overflow is fixed by
        switching dtype and resuming)."""
        skip = {"checkpoint_dir", "log_every", "metrics_path", "wandb_project", "keep_checkpoints",
                "model_device", "sae_device", "checkpoint_every_tokens", "buffer_memory_fraction",
                "checkpoint_every_minutes", "allow_stream_change"}
        key = {}
        for name, value in asdict(self).items():
            if name == "sae":
                key.update(sae_settings(self.sae))
            elif name == "variants":
                if self.variants:  # absent for one SAE per layer, so those keys stay as they were
                    key[name] = {n: sae_settings(c) for n, c in self.variants.items()}
            elif name not in skip:
                key[name] = value
        return key


def sae_settings(sae_cfg: SAEConfig | CrosscoderConfig, defaults: bool = False) -> dict:
    """An SAE config's entries in the resume key: its settings less d_in (the model fixes it) and seed (the
    run's seed fixes it); a crosscoder's are named "crosscoder.<field>", so they never pass for an SAE's.
    defaults: the config class's field defaults under the same names instead (what a key written before a
    field existed ran at)."""
    prefix = "crosscoder." if isinstance(sae_cfg, CrosscoderConfig) else ""
    if defaults:
        items = {f.name: f.default for f in dataclasses.fields(sae_cfg) if f.default is not dataclasses.MISSING}
    else:
        items = sae_cfg.to_dict()
    return {prefix + k: v for k, v in items.items() if k not in ("d_in", "seed")}


def _crosscoder_from_dict(fields: Mapping) -> CrosscoderConfig:
    """A CrosscoderConfig from a dict (say, its cfg.json): keys it does not declare are ignored."""
    names = {f.name for f in dataclasses.fields(CrosscoderConfig)}
    return CrosscoderConfig(**{k: v for k, v in fields.items() if k in names})


def _check_crosscoder(cfg: TrainConfig) -> None:
    """A crosscoder run: one model over exactly the run's layers, no variants (one line otherwise)."""
    if cfg.variants is not None:
        raise ValueError("variants train several SAEs per layer; a crosscoder (sae=CrosscoderConfig) is one model "
                         "over all the layers: leave variants None")
    if cfg.sae.layers != cfg.layers:
        raise ValueError(f"sae.layers={list(cfg.sae.layers)} but layers={list(cfg.layers)}: a crosscoder reads "
                         "exactly the run's layers; give both the same list")


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


def sae_plan(cfg: TrainConfig, layers) -> dict[int | str, tuple[int | tuple[int, ...], SAEConfig | CrosscoderConfig]]:
    """What the run trains: key -> (what it reads, config). One SAE per layer keyed by the layer (cfg.sae);
    with cfg.variants one per layer and name keyed "L<layer>/<name>"; a crosscoder (cfg.sae a
    CrosscoderConfig) keyed CROSSCODER_KEY, reading every layer of `layers` (a tuple, in order)."""
    if isinstance(cfg.sae, CrosscoderConfig):
        return {CROSSCODER_KEY: (tuple(layers), cfg.sae)}
    if not cfg.variants:
        return {layer: (layer, cfg.sae) for layer in layers}
    return {f"L{layer}/{name}": (layer, sae_cfg) for layer in layers for name, sae_cfg in cfg.variants.items()}


def variant_of(key: int | str) -> str | None:
    """The variant name in an SAE key ("L3/topk-k32" -> "topk-k32"); None for a layer key or the crosscoder's."""
    return str(key).split("/", 1)[1] if isinstance(key, str) and "/" in key else None


def sae_label(key: int | str) -> str:
    """The prefix of an SAE's metric names: "L<layer>" for a layer key, the key itself for a variant's or the
    crosscoder's ("xc")."""
    return f"L{key}" if isinstance(key, int) else str(key)


def check_world(cfg: TrainConfig, world: int) -> None:
    """A data-parallel run splits every batch evenly over its processes: one line if it cannot."""
    if cfg.batch_tokens % world:
        lower = cfg.batch_tokens // world * world
        raise ValueError(f"BATCH_TOKENS = {cfg.batch_tokens} does not split over the {world} processes of this "
                         f"torchrun job: set BATCH_TOKENS to a multiple of {world} (e.g. {lower or world}) "
                         "or change --nproc-per-node")
