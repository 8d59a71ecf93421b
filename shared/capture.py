"""Residual-stream capture and the block-shuffling activation buffer that feeds SAE training.

Layer L is the residual stream OUTPUT of decoder block L (SAELens `blocks.{L}.hook_resid_post`).
For L < n_layers-1 that equals HF `output_hidden_states[L+1]`; for the LAST block HF returns the
hidden state after the final norm, so both capture methods here return the pre-norm output there
(`final_norm(capture[n-1]) == hidden_states[n]`). The hooks themselves live in `hooks`; method
"auto" takes them wherever the block list is found (hybrid Gated-DeltaNet models included) and
falls back to `output_hidden_states` where it is not.

Per-prompt states: `sequence_states` / `last_token_states` pool each prompt's residual (last real
token or mean over its kept tokens) into {layer: [n, d]} arrays for probes.

Pipeline: `residual_rows` runs the model on token batches (one forward for all layers, stopped
after the deepest layer), drops BOS/pad/special tokens and moves the rows to the buffer device;
`ActivationBlocks` gathers them in blocks, shuffles each block and cuts it into training batches,
carrying the rows past the last full batch into the next block. The whole stream is a
deterministic function of (token stream, seed, sizes); `state_dict()` lets a run resume exactly.
Memory: given a budget (`free_memory_bytes`), the buffer lowers its block size to fit it
(`block_batches_for_memory`) and halves it on an out-of-memory allocation instead of failing.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .hooks import read_final_norm_input, read_residuals, resolve_layers
from .models import decoder_layers, model_device, text_config


METHODS = ("auto", "hooks", "hidden_states")


def capture_method(model: nn.Module, method: str = "auto") -> str:
    """The capture path for `model`: "auto" is "hooks" where models.decoder_layers finds the block
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


def layer_count(model: nn.Module) -> int:
    """Decoder layers: the block list's length, else (blocks unreachable) the text config's num_hidden_layers."""
    try:
        return len(decoder_layers(model))
    except ValueError:
        n = getattr(text_config(model), "num_hidden_layers", None)
        if not isinstance(n, int):
            raise
        return n


def check_layers(model: nn.Module, layers) -> list[int]:
    """Sorted unique layer indices (hooks.resolve_layers: negatives count from the end); ValueError naming the range."""
    return sorted(resolve_layers(layers, layer_count(model), dedupe=True))


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
    last = layer_count(model) - 1
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
    from .runtime import bf16_supported

    param = next(model.parameters())
    name = str(param.dtype).removeprefix("torch.")
    if param.dtype == torch.float32:
        return f"the model overflowed even in {name}: check its weights"
    better = "bfloat16" if param.dtype == torch.float16 and bf16_supported(param.device) else "float32"
    return f'the model overflowed in {name}: set MODEL_DTYPE = "{better}" to load it in {better}'


def _check_finite(acts: Mapping[int, torch.Tensor], batch_index: int, model) -> None:
    for layer, x in acts.items():
        if not torch.isfinite(x).all():
            bad = "NaN" if torch.isnan(x).any() else "inf"
            raise FloatingPointError(f"{bad} activations at layer {layer} (source batch {batch_index}): "
                                     f"{dtype_advice(model)}.")


def residual_rows(model, tokenizer, token_batches: Iterable, layers, *, device, dtype: torch.dtype = torch.float32,
                  method: str = "auto", stop_early: bool = True, drop_first: bool = False,
                  skip: int = 0) -> Iterator[dict[int, torch.Tensor]]:
    """For each token batch (after skipping `skip`), the kept tokens' activations {layer: [n, D]}.

    One forward per batch captures every layer; BOS/pad/special tokens are dropped; rows are cast
    to `dtype` on `device`; NaN/inf raise an error naming the layer. The source of `ActivationBlocks`.
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
        _check_finite(out, index, model)
        index += 1
        yield out


class Block:
    """One shuffled block: rows {layer: [n, D]} (views into the buffer's store) and the permutation
    `order` shared by every layer. Iterating yields its full batches {layer: [batch_tokens, D]} and
    counts them in `used`; the rows after the used batches are the carry into the next block."""

    def __init__(self, index: int, rows: dict[int, torch.Tensor], order: torch.Tensor, batch_tokens: int):
        self.index, self.rows, self.order, self.batch_tokens = index, rows, order, batch_tokens
        self.used = 0

    def __len__(self) -> int:
        return self.order.numel() // self.batch_tokens

    def __iter__(self) -> Iterator[dict[int, torch.Tensor]]:
        while self.used < len(self):
            idx = self.order[self.used * self.batch_tokens:(self.used + 1) * self.batch_tokens]
            self.used += 1
            yield {layer: x[idx] for layer, x in self.rows.items()}

    def rest(self) -> torch.Tensor:
        """Indices (into rows) of the rows not yielded yet, in shuffled order."""
        return self.order[self.used * self.batch_tokens:]


class ActivationBlocks:
    """The shuffling buffer that feeds training: every forwarded token is trained exactly once.

    Block b holds the rows carried over from block b-1 followed by the kept rows of the next
    `block_batches` forwards; one permutation from a generator seeded by (seed, b), shared by all
    layers, orders them, the block yields its full batches of `batch_tokens`, and the rest (fewer
    than one batch) is carried into block b+1. Memory: one store of `capacity` rows per layer,
    reused by every block. `block_batches` is the block size, the one knob that sets that memory;
    it may be changed between blocks (e.g. lowered when memory is short): the store follows.

    `source(skip)` must return the rows {layer: [n, D]} of each forward after the first `skip`
    (`residual_rows(..., skip=skip)`). `state_dict()` between blocks is (forwards consumed, next
    block index, carry); a buffer built with that `state` yields exactly the batches the
    uninterrupted one yields after that point; the block size in force is part of that state.

    `memory_budget()` (optional) gives the bytes the buffer may take beyond its store (say, a
    fraction of `free_memory_bytes`): before each block the size is lowered to fit it, and an
    out-of-memory allocation halves it; either way the run goes on with smaller blocks. `agree(n)`
    (optional; under torchrun the smallest n of every rank) makes every rank take the same size and
    halve together, so their blocks, and the collectives over them, stay identical.
    `tokens_by_source` is filled by a source that counts its tokens per mix source (the trainer's).
    """

    def __init__(self, source: Callable[[int], Iterator[Mapping[int, torch.Tensor]]], *, batch_tokens: int,
                 block_batches: int, rows_per_forward: int, seed: int = 0, device="cpu",
                 dtype: torch.dtype = torch.float32, state: Mapping | None = None,
                 memory_budget: Callable[[], int] | None = None, agree: Callable[[int], int] | None = None):
        if batch_tokens <= 0 or block_batches <= 0 or rows_per_forward <= 0:
            raise ValueError(f"batch_tokens, block_batches and rows_per_forward must be positive, got "
                             f"{batch_tokens}, {block_batches}, {rows_per_forward}.")
        self.batch_tokens, self.rows_per_forward = batch_tokens, rows_per_forward
        self.seed, self.device, self.dtype = seed, torch.device(device), dtype
        state = dict(state or {})
        self.block_batches = int(state.get("block_batches", block_batches))  # the size in force when saved
        self.memory_budget, self.agree = memory_budget, agree
        self.tokens_by_source: dict[str, int] = {}
        self.forwards = int(state.get("forwards", 0))  # token batches consumed from the source
        self.block_index = int(state.get("block", 0))  # index of the next block
        self.store: dict[int, torch.Tensor] = {}
        carry = {int(k): v for k, v in (state.get("carry") or {}).items()}
        n_carry = next(iter(carry.values())).shape[0] if carry else 0
        if n_carry:
            self._reserve(carry, n_carry)
            for layer, x in carry.items():
                self.store[layer][:n_carry] = x.to(self.device, self.dtype)
        self._carry_rows = n_carry  # carry held at store[:n] while no block is open
        self.block: Block | None = None
        self._source, self._rows = source, None  # opened at the first block: a finished run reads no data
        self._exhausted = False

    @property
    def capacity(self) -> int:
        """Rows per layer the store needs for one block plus a carry: block_batches * rows_per_forward
        + batch_tokens (times the layers' widths and the dtype's bytes, the buffer's memory)."""
        return self.block_batches * self.rows_per_forward + self.batch_tokens

    def carry_rows(self) -> int:
        """Rows forwarded but not trained yet (the carry, or the open block's rest)."""
        return self.block.rest().numel() if self.block is not None else self._carry_rows

    def store_bytes(self) -> int:
        """Bytes the store holds now."""
        return sum(x.numel() * x.element_size() for x in self.store.values())

    def _fit_memory(self, like: Mapping[int, torch.Tensor], keep: int) -> None:
        """Lower block_batches until the store fits memory_budget() plus what it holds already."""
        if self.memory_budget is None:
            return
        row_bytes = sum(x.shape[-1] for x in like.values()) * self.dtype.itemsize
        fit = block_batches_for_memory(self.memory_budget() + self.store_bytes(), row_bytes=row_bytes,
                                       rows_per_forward=self.rows_per_forward,
                                       fixed_rows=max(self.batch_tokens, keep))
        if self.agree is not None:
            fit = self.agree(fit)
        if fit < self.block_batches:
            print(f"Activation buffer: {fit} forwards per block fit in memory (was {self.block_batches}).")
            self.block_batches = fit

    def _reserve(self, like: Mapping[int, torch.Tensor], keep: int) -> None:
        """(Re)allocate the store for `capacity` rows (more if the carry needs it), keeping rows [:keep];
        the block size is first fitted to the memory budget and halved while the allocation runs out of
        memory (on any rank, with `agree`: all halve together)."""
        self._fit_memory(like, keep)
        while True:
            size = max(self.capacity, keep + self.block_batches * self.rows_per_forward)
            if self.store and set(self.store) == set(like) and next(iter(self.store.values())).shape[0] == size:
                return
            error = None
            try:
                new = {layer: torch.empty(size, x.shape[-1], device=self.device, dtype=self.dtype)
                       for layer, x in like.items()}
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not _is_oom(e):
                    raise
                new, error = None, e
            failed = error is not None if self.agree is None else self.agree(int(error is None)) == 0
            if not failed:
                break
            new = None
            if self.block_batches == 1:
                if error is not None:
                    raise error
                raise RuntimeError("Activation buffer: another rank ran out of memory even for 1 forward per block")
            print(f"Activation buffer: out of memory for {self.block_batches} forwards per block"
                  f"{'' if error is not None else ' on another rank'}; trying {self.block_batches // 2}.")
            self.block_batches //= 2
        for layer, x in new.items():
            if keep and layer in self.store:
                x[:keep] = self.store[layer][:keep]
        self.store = new

    def next_block(self, max_rows: int | None = None) -> Block | None:
        """The next shuffled block (the previous one's rows are overwritten), or None once the source
        is spent and the carry is short of a batch. With max_rows, stop forwarding once the block
        holds that many rows (the trainer's remaining need; no forward is run for nothing)."""
        n = self._close_block()
        if self._rows is None:
            self._rows = iter(self._source(self.forwards))
        limit = max_rows if max_rows is not None else float("inf")
        added = 0
        while added < self.block_batches and n < limit and not self._exhausted:
            part = next(self._rows, None)
            if part is None:
                self._exhausted = True
                break
            m = next(iter(part.values())).shape[0]
            if m > self.rows_per_forward:
                raise ValueError(f"A forward gave {m} rows, more than rows_per_forward={self.rows_per_forward}; "
                                 "pass model_batch_size * context_len.")
            if set(self.store) != set(part):
                if n:
                    raise ValueError(f"The source gave layers {sorted(part)}, the carry holds {sorted(self.store)}.")
                self._reserve(part, 0)
            for layer, x in part.items():
                self.store[layer][n:n + m] = x
            n += m
            added += 1
            self.forwards += 1
        if n < self.batch_tokens and (self._exhausted or added == 0):
            self._carry_rows = n
            return None
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.block_index)
        order = torch.randperm(n, generator=generator).to(self.device)
        rows = {layer: x[:n] for layer, x in self.store.items()}
        self.block = Block(self.block_index, rows, order, self.batch_tokens)
        self.block_index += 1
        return self.block

    def _close_block(self) -> int:
        """Move the open block's rest to the front of the store (growing it if block_batches grew or
        the rest is long); the carry's length."""
        if self.block is not None:
            rest = self.block.rest()
            for layer, x in self.store.items():
                x[:rest.numel()] = x[rest]  # the gather copies first, so overlapping rows are safe
            self._carry_rows, self.block = rest.numel(), None
        if self.store:
            self._reserve(self.store, self._carry_rows)
        return self._carry_rows

    def state_dict(self) -> dict:
        """Where the stream stands: forwards consumed, next block index, and the carry rows (on the
        CPU, in the buffer's dtype). Take it between blocks, after the open block's batches are
        used: that carry is under one batch."""
        if self.block is not None:
            rest = self.block.rest()
            carry = {str(layer): x[rest].cpu() for layer, x in self.block.rows.items()}
        else:
            carry = {str(layer): x[:self._carry_rows].cpu() for layer, x in self.store.items()}
        return {"forwards": self.forwards, "block": self.block_index, "carry": carry,
                "block_batches": self.block_batches}


def _is_oom(error: BaseException) -> bool:
    """An allocation that ran out of memory (CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError)."""
    text = str(error).lower()
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def free_memory_bytes(device) -> int:
    """Bytes free on `device` now: torch.cuda.mem_get_info on a GPU; MemAvailable of /proc/meminfo
    (else the free physical pages) on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def total_memory_bytes(device) -> int:
    """Bytes of memory `device` has in all: the GPU's as torch reports it; MemTotal on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def block_batches_for_memory(budget_bytes: int, *, row_bytes: int, rows_per_forward: int, fixed_rows: int,
                             max_batches: int | None = None) -> int:
    """The most forwards per block whose store (fixed_rows + block_batches * rows_per_forward rows of
    row_bytes each: every layer's width times the dtype's bytes) fits budget_bytes; at least 1
    (the allocation then decides), at most max_batches."""
    fit = (int(budget_bytes) // max(1, row_bytes) - fixed_rows) // rows_per_forward
    fit = max(1, fit)
    return min(fit, max_batches) if max_batches is not None else fit
