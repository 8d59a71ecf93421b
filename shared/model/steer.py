"""Steering: add a scaled unit direction to the residual stream at one layer, and sweep its strength.

`steering_hook` is an edit through hooks.edit_residual; `generate_steered` runs greedy continuations
for each alpha (RepE reading vectors, SAE feature directions); `steer_and_read` also measures whether
the steering took: the unsteered model re-reads each continuation and its residual over the
generated tokens is projected on the direction (RepE's reading). Every direction, a probe's too, is
checked and normalised by `unit_direction`.

Steering by an SAE feature: `feature_direction` is what one unit of the latent adds to the
residual stream, `typical_activation` its usual size (mean when fired over a baseline pass, by
default), so `steer_feature` adds alpha * typical * direction: alpha = 1 writes the feature in at
its typical strength. Per alpha it reports the continuation, the feature's activation on it and
its loss under the unsteered model (did it steer, and at what cost in fluency); `counterfactuals`
writes those texts in TraceData's shape (trace.json's `counterfactuals{"f<id>": {alpha: text}}`).
`find_features` searches a feature catalog's labels.
"""
from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from .capture import token_mask
from .hooks import edit_residual, read_residuals
from .layout import model_device


def as_float64(x, name: str) -> np.ndarray:
    """A numpy or torch array as float64 numpy; ValueError naming `name` if it is not numeric."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float32).cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric array (numpy or torch), got {type(x).__name__}") from e


def unit_direction(direction) -> np.ndarray:
    """A direction (numpy or torch) as a unit float64 vector; ValueError if it is not numeric or has zero
    or non-finite norm."""
    v = as_float64(direction, "direction").reshape(-1)
    norm = np.linalg.norm(v)
    if norm == 0 or not np.isfinite(norm):
        raise ValueError("direction has zero (or non-finite) norm; it cannot define a probe")
    return v / norm


@contextmanager
def steering_hook(model, layer: int, direction, alpha: float, scale: float = 1.0) -> Iterator[None]:
    """Within the block, add alpha * scale * unit(direction) to the residual output of decoder block `layer`.

    scale: pass typical_norm(acts) to express alpha in units of the layer's usual residual norm.
    """
    u = torch.as_tensor(unit_direction(direction), dtype=torch.float32)
    delta = float(alpha) * float(scale) * u

    def add_direction(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[-1] != delta.shape[0]:
            raise ValueError(f"steering direction has {delta.shape[0]} dims but layer {layer} has {hidden.shape[-1]}")
        return hidden + delta.to(device=hidden.device, dtype=hidden.dtype)

    with edit_residual(model, {int(layer): add_direction}):
        yield


def _prompt_ids(model, tokenizer, prompt: str) -> dict:
    if not isinstance(prompt, str):
        raise ValueError("prompt must be a single string")
    return tokenizer(prompt, return_tensors="pt").to(model_device(model))


@torch.no_grad()
def _steered_ids(model, tokenizer, enc, layer: int, direction, alpha: float, scale: float,
                 max_new_tokens: int, seed: int) -> torch.Tensor:
    """Greedy continuation of the encoded prompt under the steering edit: the full ids [1, T]."""
    torch.manual_seed(seed)
    with steering_hook(model, layer, direction, alpha, scale=scale):
        return model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=_pad_id(tokenizer))


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _stop_ids(model, tokenizer) -> set[int]:
    """The token ids that end a generation: the tokenizer's EOS and the model's generation_config EOS ids."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return {int(i) for i in [*eos, tokenizer.eos_token_id] if i is not None}


@torch.no_grad()
def greedy_continuations(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                         batch_size: int = 8) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids, special tokens included) up to max_new_tokens,
    cut before the first EOS: the continuation's ids, per prompt. Batches are left-padded, so each
    continuation starts right after its own prompt."""
    if int(max_new_tokens) < 1 or int(batch_size) < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} and batch_size={batch_size} must be >= 1")
    pad, stop, dev = _pad_id(tokenizer), _stop_ids(model, tokenizer), model_device(model)
    out: list[list[int]] = []
    for i in range(0, len(prompts), int(batch_size)):
        chunk = [list(map(int, p)) for p in prompts[i:i + int(batch_size)]]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=dev)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=dev)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=int(max_new_tokens),
                             do_sample=False, pad_token_id=pad)
        for row in gen[:, width:].tolist():
            cut = next((j for j, t in enumerate(row) if t in stop), len(row))
            out.append(row[:cut])
    return out


@torch.no_grad()
def generate_steered(model, tokenizer, prompt: str, layer: int, direction, alphas: Sequence[float],
                     max_new_tokens: int = 30, seed: int = 0, scale: float = 1.0) -> dict[float, str]:
    """Greedy continuation of prompt for each alpha, steering along direction at layer: {alpha: text}."""
    enc = _prompt_ids(model, tokenizer, prompt)
    n = enc["input_ids"].shape[1]
    return {float(a): tokenizer.decode(_steered_ids(model, tokenizer, enc, layer, direction, a, scale,
                                                    max_new_tokens, seed)[0, n:], skip_special_tokens=True)
            for a in alphas}


@torch.no_grad()
def steer_and_read(model, tokenizer, prompt: str, layer: int, direction, alphas: Sequence[float], *,
                   scale: float = 1.0, center: float = 0.0, max_new_tokens: int = 30, seed: int = 0) -> list[dict]:
    """Per alpha: {alpha, text, n_tokens, reading}: the greedy continuation steered by alpha * scale *
    unit(direction) at `layer`, and its reading: the mean over the generated tokens (special tokens
    left out) of the unsteered model's residual at `layer` projected on unit(direction), minus center
    (NaN when nothing was generated). Steering that took makes the reading rise with alpha."""
    u = torch.as_tensor(unit_direction(direction), dtype=torch.float32)
    enc = _prompt_ids(model, tokenizer, prompt)
    n = enc["input_ids"].shape[1]
    rows = []
    for alpha in alphas:
        ids = _steered_ids(model, tokenizer, enc, layer, direction, alpha, scale, max_new_tokens, seed)
        keep = token_mask(ids, tokenizer)[0, n:]
        reading = float("nan")
        if bool(keep.any()):
            with read_residuals(model, [layer]) as acts:
                model(input_ids=ids, use_cache=False)
            x = acts[layer][0, n:][keep.to(acts[layer].device)].float()
            reading = float((x @ u.to(x.device)).mean()) - float(center)
        rows.append({"alpha": float(alpha), "text": tokenizer.decode(ids[0, n:], skip_special_tokens=True),
                     "n_tokens": int(ids.shape[1] - n), "reading": reading})
    return rows


# ----------------------------------------------------------------------------- SAE features


def _check_feature(sae, feature_id) -> int:
    if isinstance(feature_id, bool) or not isinstance(feature_id, int) or not 0 <= feature_id < sae.cfg.d_sae:
        raise ValueError(f"feature_id={feature_id!r}: must be a latent index in 0..{sae.cfg.d_sae - 1}")
    return feature_id


@torch.no_grad()
def feature_direction(sae, feature_id: int) -> torch.Tensor:
    """What one unit of latent `feature_id` adds to the SAE's reconstruction, in the raw residual
    space: decode(e_j) - decode(0), i.e. W_dec[j] with any input normalisation undone. float32 [d_in]."""
    j = _check_feature(sae, feature_id)
    z = torch.zeros(2, sae.cfg.d_sae, device=sae.device, dtype=sae.dtype)
    z[1, j] = 1
    x = sae.decode(z).float()
    return (x[1] - x[0]).cpu()


def typical_activation(stats, feature_id: int, kind: str = "mean") -> float:
    """A feature's typical activation over a baseline pass (`features.stats.collect` -> FeatureStats):
    kind="mean" (default) its mean activation on the tokens where it fired, "max" its largest."""
    if kind not in ("mean", "max"):
        raise ValueError(f"kind must be 'mean' or 'max', got {kind!r}")
    if not 0 <= int(feature_id) < stats.d_sae:
        raise ValueError(f"feature_id={feature_id!r}: must be a latent index in 0..{stats.d_sae - 1}")
    if int(stats.fire_count[feature_id]) == 0:
        raise ValueError(f"feature {feature_id} never fired on the {stats.n_tokens} baseline tokens: pick another "
                         "feature or a baseline where it fires")
    value = stats.mean_when_fired[feature_id] if kind == "mean" else stats.act_max[feature_id]
    return float(value)


@torch.no_grad()
def _read_generation(model, tokenizer, sae, layer: int, feature_id: int, ids: torch.Tensor, n_prompt: int,
                     steer_with: tuple | None = None) -> tuple[float, float]:
    """(the feature's mean activation, the mean next-token loss) over the generated tokens ids[0, n_prompt:],
    from one forward of the unsteered model (or of the model steered by steer_with = (direction, alpha, scale))."""
    if ids.shape[1] <= n_prompt:
        return float("nan"), float("nan")
    ctx = steering_hook(model, layer, *steer_with) if steer_with else nullcontext()
    with ctx, read_residuals(model, [layer]) as acts:
        logits = model(input_ids=ids, use_cache=False).logits
    targets = ids[0, n_prompt:]
    loss = torch.nn.functional.cross_entropy(logits[0, n_prompt - 1:-1].float(), targets)
    keep = token_mask(ids, tokenizer)[0, n_prompt:]
    x = acts[layer][0, n_prompt:][keep.to(acts[layer].device)]
    act = sae.encode(x.to(sae.device, sae.dtype))[:, feature_id].float().mean() if x.shape[0] else torch.tensor(0.0)
    return float(act), float(loss)


@torch.no_grad()
def steer_feature(model, tokenizer, sae, layer: int, feature_id: int, prompt: str, alphas: Sequence[float], *,
                  typical: float, max_new_tokens: int = 30, seed: int = 0) -> list[dict]:
    """Greedy continuations of prompt with alpha * typical * feature_direction added at layer, per alpha:
    {alpha, text, token_ids, n_tokens, feature_activation, feature_activation_reread, loss}.

    feature_activation: the latent's mean over the generated tokens, from the residuals at layer
    as the steered model writes them (the SAE re-encodes the output's residuals: did the edit land
    on the feature); feature_activation_reread: the same with the text re-read by the unsteered
    model (did the text itself come to carry the feature; small models rarely do); loss: the mean
    next-token loss of the generated tokens under the unsteered model (the price in fluency).
    typical: the feature's typical activation (`typical_activation`), the unit of alpha.
    """
    j = _check_feature(sae, feature_id)
    if not typical > 0:
        raise ValueError(f"typical={typical!r}: must be the feature's (positive) typical activation")
    direction = feature_direction(sae, j)
    scale = float(typical) * float(direction.norm())
    enc = _prompt_ids(model, tokenizer, prompt)
    n = enc["input_ids"].shape[1]
    rows = []
    for alpha in alphas:
        ids = _steered_ids(model, tokenizer, enc, layer, direction, alpha, scale, max_new_tokens, seed)
        reread, loss = _read_generation(model, tokenizer, sae, layer, j, ids, n)
        act, _ = _read_generation(model, tokenizer, sae, layer, j, ids, n, (direction, alpha, scale))
        rows.append({"alpha": float(alpha), "text": tokenizer.decode(ids[0, n:], skip_special_tokens=True),
                     "token_ids": ids[0, n:].tolist(), "n_tokens": int(ids.shape[1] - n), "feature_activation": act,
                     "feature_activation_reread": reread, "loss": loss})
    return rows


def alpha_key(alpha: float) -> str:
    """How an alpha is written as a JSON key (TraceData): -3.0 -> "-3", 0.5 -> "0.5"."""
    return f"{float(alpha):g}"


def counterfactuals(feature_id: int, rows: Sequence[Mapping]) -> dict[str, dict[str, str]]:
    """steer_feature's rows as TraceData counterfactuals: {"f<feature_id>": {alpha_key(alpha): text}}."""
    return {f"f{int(feature_id)}": {alpha_key(r["alpha"]): r["text"] for r in rows}}


def find_features(catalog, query: str) -> list[dict]:
    """Entries of a feature catalog (feature_catalog.json: a path, its dict, or its "features" list)
    whose name or description contains every word of query (case-insensitive), in catalog order."""
    if isinstance(catalog, (str, Path)):
        path = Path(catalog)
        if not path.is_file():
            raise ValueError(f"feature catalog {str(path)!r} is not a file: pass a feature_catalog.json")
        catalog = json.loads(path.read_text(encoding="utf-8"))
    entries = catalog.get("features") if isinstance(catalog, Mapping) else catalog
    if not isinstance(entries, (list, tuple)):
        raise ValueError("catalog must be a feature_catalog.json path, its dict, or its 'features' list")
    words = str(query).lower().split()
    if not words:
        raise ValueError("query is empty: give words to look for in the feature labels")
    return [e for e in entries
            if all(w in f"{e.get('name', '')} {e.get('desc', '')}".lower() for w in words)]
