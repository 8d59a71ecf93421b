"""Training a crosscoder (`saes.crosscoder`) on a model's residual stream at several layers at once: every
layer from the same forward pass, shuffled in blocks by the SAE trainer's buffer (`buffer.activation_blocks`),
stepped by its `step.sae_step` on its schedule (`schedule.lr_at`), with its own resume (checkpoints of the
crosscoder, its Adam state, the data position and the RNGs). Kept apart for now; the SAE trainer is to
take it over."""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Iterable, NamedTuple

import torch
from torch import Tensor

from ..model.layout import check_layers, d_model, model_device
from ..saes.crosscoder import Crosscoder, CrosscoderConfig, stacked
from . import checkpoint as ckpt
from .buffer import activation_blocks, step_reserve_bytes
from .config import TrainConfig
from .schedule import lr_at
from .step import adam, load_optimizer_state, sae_step


def fit(xc: Crosscoder, batches: Iterable[Tensor], steps: int, *, lr: float = 2e-4, lr_min: float = 6e-5,
        warmup_steps: int = 1000, log_every: int = 10, initialise: bool = True, progress: bool = False,
        optimizer=None, start_step: int = 0, start_tokens: int = 0, bar=None) -> list[dict]:
    """Train `xc` from step `start_step` up to `steps` Adam steps on batches [N, n_layers, d_in] (fewer
    if they run out) with schedule.lr_at's warm-up + cosine schedule over `steps` and step.sae_step; at
    step 0 the first batch sets the scales and b_dec when `initialise`. Pass `optimizer` (and a
    progress `bar`) to go on from an earlier call. -> logged entries {"step", "tokens", "lr",
    "xc/loss", "xc/fvu", ...}, steps and tokens counted from the run's start."""
    if steps < 1:
        raise ValueError(f"steps={steps}: train for at least one step (raise the token budget).")
    schedule = SimpleNamespace(lr=lr, lr_min=lr_min, warmup_steps=warmup_steps)
    optimizer = optimizer or adam(xc.parameters(), lr=lr, device=xc.W_enc.device)
    history, tokens = [], start_tokens
    own_bar = bar is None
    bar = _progress(steps, progress, start_step) if own_bar else bar
    for step, x in zip(range(start_step, steps), batches):
        x = x.to(xc.W_enc.device)
        if step == 0 and initialise:
            xc.initialise(x)
        rate = lr_at(step, schedule, steps)
        metrics = sae_step(xc, optimizer, x, rate)
        tokens += x.shape[0]
        bar.update(1)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            entry = {"step": step + 1, "tokens": tokens, "lr": rate,
                     **{f"xc/{k}": float(v) for k, v in metrics.items()}}
            history.append(entry)
            bar.set_postfix_str(f"fvu {entry['xc/fvu']:.3f} l0 {entry['xc/l0']:.1f}")
    if own_bar:
        bar.close()
    return history


def _progress(total: int, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", disable=not enabled, desc="crosscoder",
                dynamic_ncols=True)


class TrainedCrosscoder(NamedTuple):
    crosscoder: Crosscoder
    history: list[dict]
    tokens: int
    run: object  # the config.TrainConfig that fed it (data, batch sizes, schedule)


def train_crosscoder(model, tokenizer, cfg: CrosscoderConfig, *, total_tokens: int, dataset="synthetic",
                     context_len: int = 1024, batch_tokens: int = 4096, model_batch_size: int = 8,
                     block_batches: int | str = 32, lr: float = 2e-4, lr_min: float = 6e-5,
                     warmup_steps: int = 1000, seed: int = 0, device=None, log_every: int = 10,
                     checkpoint_dir: str | None = None, checkpoint_every_tokens: int = 5_000_000,
                     keep_checkpoints: int = 3, progress: bool = True) -> TrainedCrosscoder:
    """Train a crosscoder on `model`'s residual stream at cfg.layers: every layer from the same
    forward pass (stopped after the deepest), shuffled in blocks as the SAE trainer does (its
    activation_blocks), then `fit`.

    With `checkpoint_dir` (a folder, a mounted Drive, or "hf:<user>/<repo>") the crosscoder, its Adam
    state, the data position and the RNGs are saved at the first block end past every
    `checkpoint_every_tokens` and at the end (checkpoint.py's crash-safe store), and a call with the
    same settings resumes from the newest checkpoint to the weights an uninterrupted run ends with
    (exactly on CPU; equal to float round-off on GPU, where CUDA's atomic scatter-adds are not deterministic).
    A checkpoint of other settings is refused, never overwritten."""
    import dataclasses

    resolved = check_layers(model, cfg.layers)
    width = d_model(model)
    if cfg.d_in not in (None, width):
        raise ValueError(f"the crosscoder config has d_in={cfg.d_in}, the model's width is {width}.")
    cfg = dataclasses.replace(cfg, d_in=width)
    run = TrainConfig(model_id="crosscoder", layers=tuple(resolved), dataset=dataset, context_len=context_len,
                      total_tokens=total_tokens, batch_tokens=batch_tokens, model_batch_size=model_batch_size,
                      block_batches=block_batches, lr=lr, lr_min=lr_min, warmup_steps=warmup_steps, seed=seed)
    device = torch.device(device) if device is not None else model_device(model)
    torch.manual_seed(seed)
    xc = Crosscoder(cfg, device=device)
    optimizer = adam(xc.parameters(), lr=lr, device=device)
    store = ckpt.open_store(checkpoint_dir, keep=keep_checkpoints) if checkpoint_dir else None
    key = _resume_key(cfg, run)
    step, history, data = 0, [], None
    resumed = store.load_latest() if store is not None else None
    if resumed is not None:
        tokens, state = resumed
        changed = sorted(k for k in key.keys() | state["config"].keys() if key.get(k) != state["config"].get(k))
        if changed:
            raise ValueError(f"{store} holds a crosscoder checkpoint of other settings ({', '.join(changed)}); "
                             "use the same parameters to resume, or point checkpoint_dir at a new folder.")
        xc.load_state_dict(state["crosscoder"])
        load_optimizer_state(optimizer, state["optimizer"])
        step, history, data = state["step"], list(state["history"]), state["data"]
        ckpt.set_rng_state(state["rng"])
        print(f"Resumed from {store} at {tokens:,} tokens (step {step}).")
    blocks = activation_blocks(model, tokenizer, run, device, data,  # "auto": sized after counting Adam and the step
                               reserve=lambda: step_reserve_bytes({"xc": xc}, {"xc": optimizer}, batch_tokens))
    steps = math.ceil(total_tokens / batch_tokens)
    next_checkpoint = (step * batch_tokens // checkpoint_every_tokens + 1) * checkpoint_every_tokens
    bar = _progress(steps, progress, step)
    while step < steps and (block := blocks.next_block(max_rows=(steps - step) * batch_tokens)) is not None:
        history += fit(xc, stacked(block, cfg.layers), steps, lr=lr, lr_min=lr_min, warmup_steps=warmup_steps,
                       log_every=log_every, optimizer=optimizer, start_step=step, start_tokens=step * batch_tokens,
                       bar=bar)
        step += block.used  # the batches this block gave (fit stops at `steps` before taking another)
        tokens = step * batch_tokens
        if store is not None and (tokens >= next_checkpoint or step >= steps):
            store.save(tokens, {"config": key, "crosscoder": xc.state_dict(), "optimizer": optimizer.state_dict(),
                                "step": step, "history": history, "data": blocks.state_dict(),
                                "rng": ckpt.get_rng_state()}, step=step)
            next_checkpoint = (tokens // checkpoint_every_tokens + 1) * checkpoint_every_tokens
    bar.close()
    tokens = history[-1]["tokens"] if history else 0
    return TrainedCrosscoder(xc, history, tokens, run)


def _resume_key(cfg: CrosscoderConfig, run) -> dict:
    """What a checkpoint must match to be resumed: the crosscoder's settings and the run's (data, batch
    sizes, schedule), as plain JSON values."""
    import json

    key = {f"crosscoder.{k}": v for k, v in cfg.to_dict().items()}
    sae_fields = set(run.sae.to_dict())  # the TrainConfig's SAE is not this run's: its fields are left out
    key.update({f"run.{k}": v for k, v in run.resume_key().items() if k not in sae_fields})
    return json.loads(json.dumps(key, default=str))


