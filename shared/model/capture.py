"""Residual-stream capture: every requested layer from one forward, the token masks, and per-prompt
pooled states.

Layer L is the residual stream OUTPUT of decoder block L (SAELens `blocks.{L}.hook_resid_post`).
For L < n_layers-1 that equals HF `output_hidden_states[L+1]`; for the LAST block HF returns the
hidden state after the final norm, so both capture methods here return the pre-norm output there
(`final_norm(capture[n-1]) == hidden_states[n]`). The hooks themselves live in `hooks`; method
"auto" takes them wherever the block list is found (hybrid Gated-DeltaNet models included) and
falls back to `output_hidden_states` where it is not.

Per-prompt states: `sequence_states` / `last_token_states` pool each prompt's residual (last real
token or mean over its kept tokens) into {layer: [n, d]} arrays for probes.

`residual_rows` runs the model on token batches (one forward for all layers, stopped after the
deepest layer), drops BOS/pad/special tokens and moves the rows to where they are used: the
training buffer (`training.buffer.ActivationBlocks`) and the evaluations read it.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .hooks import read_final_norm_input, read_residuals
from .layout import check_layers, decoder_layers, model_device, n_layers


METHODS = ("auto", "hooks", "hidden_states")


def capture_method(model: nn.Module, method: str = "auto") -> str:
    """The capture path for `model`: "auto" is "hooks" where layout.decoder_layers finds the block
    list (a hybrid model's too), else "hidden_states"; "hooks"/"hidden_states" are kept as asked."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if method != "auto":
        return method
    try:
        decoder_layers(model)
    except ValueError:
        return "hidden_states"
    return "hooks"


def capture_residuals(model: nn.Module, input_ids: torch.Tensor, layers, attention_mask=None,
                      stop_early: bool = True, method: str = "auto") -> dict[int, torch.Tensor]:
    """Residual stream after each requested block, {layer: [B, T, D]}, from ONE forward pass.

    method="hooks": forward hooks on the decoder blocks; with stop_early the forward is aborted
    right after the deepest requested block (nothing after it runs, not even lm_head).
    method="hidden_states": `output_hidden_states=True` (no block hooks; for models whose block
    list cannot be found), the last block read at the final norm's input; the whole forward runs.
    method="auto" (default): `capture_method`. Runs under no_grad; activations stay on the model's
    device and dtype.
    """
    method = capture_method(model, method)
    wanted = check_layers(model, layers)
    last = n_layers(model) - 1
    if method == "hidden_states" and last in wanted and capture_method(model) == "hidden_states":
        raise ValueError(f"layer {last} (the last) is read at the final norm's input, which needs the decoder "
                         "blocks: set model._sae_ladder_layers_path to their path, or pick an earlier layer.")
    device = model_device(model)
    kwargs = dict(input_ids=input_ids.to(device))
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(device)
    if getattr(getattr(model, "config", None), "use_cache", None) is not None:
        kwargs["use_cache"] = False
    with torch.no_grad():
        if method == "hooks":
            with read_residuals(model, wanted, stop_after_deepest=stop_early) as out:
                model(**kwargs, output_hidden_states=False)
        else:
            with read_final_norm_input(model) if last in wanted else nullcontext({}) as out:
                hidden = model(**kwargs, output_hidden_states=True).hidden_states
            for layer in wanted:
                if layer not in out:
                    out[layer] = hidden[layer + 1].detach()
    return {layer: out[layer] for layer in wanted}


def token_mask(input_ids: torch.Tensor, tokenizer, attention_mask: torch.Tensor | None = None,
               drop_first: bool = False) -> torch.Tensor:
    """BoolTensor like input_ids: False at BOS/EOS/pad/other special tokens and masked-out positions.

    Special tokens: the tokenizer's named ones and every added token flagged special (Qwen's
    "<|endoftext|>" starts and separates packed contexts, data.context_tokens, even where it is not
    the tokenizer's pad or EOS). drop_first also drops position 0 (the attention-sink token of
    models run without a BOS).
    """
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special = sorted(set(getattr(tokenizer, "all_special_ids", []) or []) |
                     {i for i, token in added.items() if getattr(token, "special", False)} |
                     {i for i in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "pad_token_id", None),
                                  getattr(tokenizer, "eos_token_id", None)) if i is not None})
    keep = ~torch.isin(input_ids, torch.tensor(special, dtype=input_ids.dtype, device=input_ids.device))
    if attention_mask is not None:
        keep &= attention_mask.to(keep.device).bool()
    if drop_first:
        keep[..., 0] = False
    return keep


@torch.no_grad()
def content_mask(ids: torch.Tensor, tokenizer, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: each row's non-special, non-pad tokens (token_mask), or all its real tokens when it
    has no other (an all-special prompt still pools something)."""
    keep = token_mask(ids, tokenizer, attention_mask)
    return torch.where(keep.any(1, keepdim=True), keep, attention_mask.bool())


def masked_mean(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """[B, T, d] -> [B, d]: the mean over each row's kept positions."""
    m = keep.to(h.device, h.dtype)[..., None]
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


def sequence_states(model, tokenizer, prompts: Sequence[str], layers: Sequence[int], batch_size: int = 16,
                    pool: str = "last", max_length: int | None = None,
                    progress: bool = False) -> dict[int, np.ndarray]:
    """Residual stream [n, d] per layer for each prompt: last non-pad token ("last") or the mean over
    its non-special tokens ("mean"; BOS/pad excluded). max_length truncates long prompts (keeps the start);
    progress shows a bar over batches."""
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    if pool not in ("last", "mean"):
        raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")
    if batch_size > 1 and len(prompts) > 1 and tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token = tokenizer.eos_token "
                         "or pass batch_size=1")
    layers = [int(x) for x in layers]
    device = model_device(model)
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be a positive number of tokens or None, got {max_length}")
    trunc = dict(truncation=True, max_length=int(max_length)) if max_length else {}
    starts = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="residual states", unit="batch")
    for start in starts:
        enc = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True, **trunc)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        acts = capture_residuals(model, ids, layers, attention_mask=mask)
        positions = torch.arange(ids.shape[1], device=device)
        last = (mask * positions).argmax(1)  # last real token, for left or right padding
        for layer in layers:
            h = acts[layer].float()
            if pool == "last":
                pooled = h[torch.arange(h.shape[0], device=h.device), last.to(h.device)]
            else:
                pooled = masked_mean(h, content_mask(ids, tokenizer, mask))
            out[layer].append(pooled.cpu().numpy())
    return {layer: np.concatenate(chunks) for layer, chunks in out.items()}


def last_token_states(model, tokenizer, prompts: Sequence[str], layers: Sequence[int],
                      batch_size: int = 16) -> dict[int, np.ndarray]:
    """Residual stream at the last non-pad token of each prompt: {layer: [n, d]}."""
    return sequence_states(model, tokenizer, prompts, layers, batch_size=batch_size, pool="last")


def dtype_advice(model) -> str:
    """What to set when `model`'s forward gave NaN/inf: the MODEL_DTYPE to load it in instead (bfloat16
    where the GPU runs it natively, else float32; Gemma-2 overflows float16 on a T4)."""
    from ..runtime import bf16_supported

    param = next(model.parameters())
    name = str(param.dtype).removeprefix("torch.")
    if param.dtype == torch.float32:
        return f"the model overflowed even in {name}: check its weights"
    better = "bfloat16" if param.dtype == torch.float16 and bf16_supported(param.device) else "float32"
    return f'the model overflowed in {name}: set MODEL_DTYPE = "{better}" to load it in {better}'


def check_finite(acts: Mapping[int, torch.Tensor], batch_index: int, model) -> None:
    """Raise FloatingPointError, one line, if a forward's rows {layer: [n, D]} hold NaN/inf: the first such
    layer, the forward's index in the token stream, and the dtype to load the model in (dtype_advice)."""
    for layer, x in acts.items():
        if not torch.isfinite(x).all():
            bad = "NaN" if torch.isnan(x).any() else "inf"
            raise FloatingPointError(f"{bad} activations at layer {layer} (source batch {batch_index}): "
                                     f"{dtype_advice(model)}.")


def residual_rows(model, tokenizer, token_batches: Iterable, layers, *, device, dtype: torch.dtype = torch.float32,
                  method: str = "auto", stop_early: bool = True, drop_first: bool = False,
                  skip: int = 0, check: bool = True) -> Iterator[dict[int, torch.Tensor]]:
    """For each token batch (after skipping `skip`), the kept tokens' activations {layer: [n, D]}.

    One forward per batch captures every layer; BOS/pad/special tokens are dropped; rows are cast
    to `dtype` on `device`; NaN/inf raise an error naming the layer (`check_finite`; check=False leaves
    that to the caller: training.distributed.sharded_rows checks after its all-gather, on every rank).
    The source of `training.buffer.ActivationBlocks`.
    """
    layers = check_layers(model, layers)
    it = iter(token_batches)
    for _ in range(skip):
        if next(it, None) is None:
            return
    index = skip
    for batch in it:
        input_ids = batch["input_ids"] if isinstance(batch, Mapping) else batch
        attention_mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
        acts = capture_residuals(model, input_ids, layers, attention_mask=attention_mask,
                                 stop_early=stop_early, method=method)
        keep = token_mask(input_ids, tokenizer, attention_mask, drop_first=drop_first).reshape(-1)
        out = {}
        for layer, x in acts.items():
            flat = x.reshape(-1, x.shape[-1])
            out[layer] = flat[keep.to(flat.device)].to(device, dtype)
        if check:
            check_finite(out, index, model)
        index += 1
        yield out


