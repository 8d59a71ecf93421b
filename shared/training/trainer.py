"""The SAE trainer every tier shares: one model forward feeds one SAE per layer (or several:
TrainConfig.variants trains a set of named SAE configs at every layer on exactly the same batches; or
one crosscoder, TrainConfig(sae=CrosscoderConfig(...)), reading every layer's rows of each batch stacked).

Activations arrive in *blocks* (buffer.ActivationBlocks): a fixed number of token batches run
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

NaN/inf stop the run with one line (`NonFinite`), on every rank alike under torchrun, before any
checkpoint of them: activations from an overflowing forward (which layer, which source batch, which
dtype to set; a re-run resumes), or an SAE that diverged (its loss at a log step, its weights before a
checkpoint is written).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from ..model.layout import d_model, model_device, resolve_layers
from ..model.loading import load_model
from ..runtime import resolve_device
from ..saes.architectures import build_sae, registered
from ..saes.crosscoder import Crosscoder, CrosscoderConfig
from ..saes.kernels import all_finite
from . import checkpoint as ckpt, distributed, legacy, replay
from .buffer import ActivationBlocks, activation_blocks, step_reserve_bytes
from .config import TrainConfig, check_world, sae_label, sae_plan, sae_settings
from .schedule import CheckpointClock, lr_at
from .step import adam, load_optimizer_state, sae_step
from .stream import _sources, mix_shares


class NonFinite(FloatingPointError, distributed.Unanimous):
    """Training met NaN/inf, in the activations (an overflowing forward) or in an SAE (it diverged). One
    line; under torchrun every rank raises it alike, at the same point (distributed.Unanimous)."""


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
    # The layer each SAE of `saes` reads (key -> layer; the identity without variants; the crosscoder's:
    # the tuple of its layers).
    layer_of: dict = field(default_factory=dict)
    # How the run resumed, for the run's report ("resume" in run_report.json, crosscoder_report.json): the
    # stream's identity, the last replay (forwards, seconds, verified), stream changes the user allowed, and
    # the model dtype(s) it trained on.
    resume: dict = field(default_factory=dict)


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
    the old log whole, never a cut one. The entries also travel in every checkpoint (`entries`), so
    a session that resumes a Hub store on a fresh machine, where no log file survived, writes the
    whole log again from the checkpoint's copy."""

    def __init__(self, path: Path | None, resume_tokens: int, saved: list[dict] | None = None):
        self.path = path
        self.entries: list[dict] = []
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
                kept.append(entry)
        saved = [entry for entry in saved or [] if entry.get("tokens", 0) <= resume_tokens]
        self.entries = saved if len(saved) > len(kept) else kept  # the file lost entries: the checkpoint's copy
        text = "".join(json.dumps(entry) + "\n" for entry in self.entries)
        if text != old:
            ckpt.atomic_write_text(path, text)

    def write(self, entry: dict) -> None:
        if self.path is not None:
            self.entries.append(entry)
            with self.path.open("a") as f:
                f.write(json.dumps(entry) + "\n")


def train(cfg: TrainConfig, model=None, tokenizer=None, *, progress: bool = True) -> TrainResult:
    """Train one SAE per layer in cfg.layers (or cfg.variants at each, or one crosscoder over them all:
    config.sae_plan), resuming from cfg.checkpoint_dir when it holds a checkpoint.

    Under torchrun (distributed.init called first) every process runs this with the same cfg: the
    forwards and each batch are shared out, and rank 0 alone writes checkpoints and metrics."""
    group = distributed.current()
    if group is not None:
        check_world(cfg, group.world)
        progress = progress and group.main
    torch.manual_seed(cfg.seed)
    model, tokenizer = _prepare_model(cfg, model, tokenizer)
    layers = sorted(resolve_layers(cfg.layers, model, name="layers"))  # repeats refused
    sae_device = resolve_device(cfg.sae_device) if cfg.sae_device else model_device(model)
    plan = sae_plan(cfg, layers)
    layer_of = {key: layer for key, (layer, _) in plan.items()}
    saes = _build_saes(cfg, d_model(model), plan, sae_device)
    optimizers = {key: adam(sae.parameters(), lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
                             device=sae_device)
                  for key, sae in saes.items()}

    store = _open_store(cfg)
    resumed = _resume(cfg, store, saes, optimizers, group)
    tokens, step, state = resumed or (0, 0, {})
    main = group is None or group.main
    dtypes = _model_dtypes(state, _dtype_name(model), tokens, speak=main)
    ledger = _ledger(cfg, tokenizer, state.get("stream"), group)
    metrics_path = default_metrics_path(cfg)
    log = _MetricsLog(metrics_path if main else None, tokens, state.get("metrics"))
    data = legacy.data_position(state, cfg) if resumed else None
    blocks = activation_blocks(model, tokenizer, cfg, sae_device, data, group=group, ledger=ledger,
                               reserve=lambda: step_reserve_bytes(saes, optimizers, cfg.batch_tokens))

    def record() -> dict:
        """What a checkpoint keeps beyond the weights: the stream's hash and identity, the dtypes, the
        metrics logged so far (rank 0's, which writes the checkpoint)."""
        return {"stream": ledger.state_at(blocks.forwards), "model_dtypes": dtypes, "metrics": list(log.entries)}

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
    except NonFinite:
        raise
    except FloatingPointError as e:  # an overflowing forward (capture.check_finite): say how a re-run gets past it
        raise NonFinite(f"{e} Run again after that: training resumes from its last checkpoint and "
                        "the dtype switch is recorded in the report's 'resume'.") from None
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
              "(recorded in the checkpoints and the report's 'resume').")
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
    """The SAEs of sae_plan(cfg, ...), each with d_in the model's width and seed cfg.seed + its layer
    (a crosscoder: cfg.seed)."""
    for sae_cfg in {id(c): c for _, c in plan.values()}.values():
        if sae_cfg.d_in is not None and sae_cfg.d_in != d_in:
            raise ValueError(f"sae.d_in={sae_cfg.d_in} but {cfg.model_id} has width {d_in}: leave d_in None "
                             "(the trainer fills it from the model)")
        arch = None if isinstance(sae_cfg, CrosscoderConfig) else registered().get(sae_cfg.architecture)
        if arch is not None and not arch.model.trainable:
            raise NotImplementedError(f"sae.architecture={sae_cfg.architecture!r} loads for inference only (its "
                                      "training terms are not written yet): train architecture 'topk'")
    saes = {}
    for key, (where, sae_cfg) in plan.items():
        if isinstance(sae_cfg, CrosscoderConfig):
            saes[key] = Crosscoder(dataclasses.replace(sae_cfg, d_in=d_in, seed=cfg.seed), device=device)
        else:
            saes[key] = build_sae(dataclasses.replace(sae_cfg, d_in=d_in, seed=cfg.seed + where), device=device)
    return saes


def _input(rows: Mapping[int, torch.Tensor], where, index=slice(None)) -> torch.Tensor:
    """What an SAE reads of rows {layer: [n, d]}: its layer's rows[index], or for a crosscoder (`where`: its
    layers) every layer's, stacked [n, n_layers, d] in its layer order."""
    if isinstance(where, int):
        return rows[where][index]
    return torch.stack([rows[layer][index] for layer in where], dim=1)


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
    if legacy.is_crosscoder_loop_state(state):  # notebook 17's checkpoints before it trained through here
        state = legacy.from_crosscoder_loop(state, cfg, d_in=next(iter(saes.values())).cfg.d_in)
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
    defaults = {**sae_settings(cfg.sae, defaults=True),
                **{f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}}
    saved = {**_plain({k: defaults[k] for k in wanted.keys() - saved.keys() if k in defaults}), **_plain(saved)}
    recorded = {"model_dtype"}  # a dtype switch is recorded (_model_dtypes), not refused
    return sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k) and k not in recorded)


def _save_checkpoint(store, cfg: TrainConfig, saes, optimizers, blocks: ActivationBlocks, *, tokens: int,
                     step: int, group=None, record=None) -> None:
    """Write a checkpoint: the resume key, SAEs, Adam states, step, data position (with the carried rows),
    RNG states and `record()` (the stream's hash record and the model dtypes; the key's model_dtype is
    the dtype really run). Under torchrun rank 0 writes it while the others wait (the ranks hold the
    same state)."""
    _check_weights(saes, step=step, tokens=tokens, group=group)
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


def _diverged(label: str, what: str, *, step: int, tokens: int) -> NonFinite:
    """The one line a diverged SAE stops training with."""
    return NonFinite(f"Training diverged at step {step} ({tokens:,} tokens): the SAE {label}'s {what}. Nothing "
                     "since the last checkpoint was saved; lower lr and train again in a new checkpoint_dir (a "
                     "re-run with these settings resumes from that checkpoint and would likely diverge again).")


def _check_loss(entry: Mapping, keys, *, step: int, tokens: int) -> None:
    """Stop on a NaN/inf loss in a log entry. The entry is the one already reduced over the ranks for
    the log (a NaN on one rank is NaN in the sum on every rank), so every rank stops at this same step
    with no collective added; the per-step losses are not read between log steps (a GPU sync each)."""
    for key in keys:
        value = entry[f"{sae_label(key)}/loss"]
        if not math.isfinite(value):
            raise _diverged(sae_label(key), f"loss is {value}", step=step, tokens=tokens)


def _check_weights(saes, *, step: int, tokens: int, group=None) -> None:
    """Refuse to checkpoint NaN/inf weights: a diverging step can turn them non-finite before the next
    log step reads a loss. Checked once per checkpoint, and agreed over the ranks there (one small
    all-reduce per checkpoint, at most one per block, none per step): the ranks hold the same weights,
    and the agreement keeps every rank stopping together even if they did not."""
    bad = next((key for key, sae in saes.items() if not all(all_finite(p.detach()) for p in sae.parameters())),
               None)
    if group is not None:
        first = group.min_int(len(saes) if bad is None else list(saes).index(bad))
        bad = None if first == len(saes) else list(saes)[first]
    if bad is not None:
        raise _diverged(sae_label(bad), "weights hold NaN or inf", step=step, tokens=tokens)


def _init_from_first_block(cfg: TrainConfig, saes, layer_of, block) -> None:
    """Set each SAE's input scale and b_dec from a sample of the first block (a fresh run only;
    the SAEs of one layer get the same sample; a crosscoder its layers' rows of it, stacked)."""
    for key, sae in saes.items():
        sample = _input(block.rows, layer_of[key], block.order[: cfg.geometric_median_tokens])
        if isinstance(sae, Crosscoder):
            sae.initialise(sample)  # per-layer scales and b_dec
        else:
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
            for key, sae in saes.items():
                x = _input(batch, layer_of[key], rows)
                # check_finite=False: every forward's rows were checked at capture (capture.residual_rows, or
                # distributed.sharded_rows after its gather): a check here would be a host sync each step
                metrics = sae_step(sae, optimizers[key], x, lr, autocast=cfg.sae_autocast, check_finite=False)
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
                _check_loss(entry, keys, step=step, tokens=tokens)
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


def _reduce_entry(entry: dict, group) -> dict:
    """A log entry's per-rank metrics as the whole batch's: each rank's loss terms are its share of the
    global ones (they are normalised by the global variance), so they add; l0 averages."""
    names = [name for name, value in entry.items() if torch.is_tensor(value) and not name.endswith("dead_pct")]
    values = group.all_reduce(torch.stack([entry[name].detach().float() for name in names]))
    out = dict(entry)
    for name, value in zip(names, values):
        out[name] = value / group.world if name.endswith("/l0") else value
    return out



def _plain(obj):
    """JSON-normal form (tuples become lists) so saved and current settings compare equal."""
    return json.loads(json.dumps(obj))



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
