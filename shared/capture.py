"""Residual-stream capture and the shuffling activation buffer that feeds SAE training.

Layer L is the residual stream OUTPUT of decoder block L (SAELens `blocks.{L}.hook_resid_post`).
For L < n_layers-1 that equals HF `output_hidden_states[L+1]`; for the LAST block HF returns the
hidden state after the final norm, so both capture methods here return the pre-norm output there
(`final_norm(capture[n-1]) == hidden_states[n]`).

Pipeline: `activation_batches` runs the model on token batches (one forward for all layers,
stopped after the deepest layer), drops BOS/pad/special tokens, moves activations to the buffer
device and feeds an `ActivationBuffer`, which yields shuffled fixed-size batches. The whole stream
is a deterministic function of (token stream, seed, sizes); `state_dict()` lets a run resume.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import torch
from torch import nn

from .hooks import resolve_layers
from .models import decoder_layers, final_norm, model_device


class _StopForward(Exception):
    """Raised from a hook after the deepest requested layer to skip the rest of the forward."""


def check_layers(model: nn.Module, layers) -> list[int]:
    """Sorted unique layer indices (hooks.resolve_layers: negatives count from the end); ValueError naming the range."""
    return sorted(resolve_layers(layers, len(decoder_layers(model)), dedupe=True))


def _block_output(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def capture_residuals(model: nn.Module, input_ids: torch.Tensor, layers, attention_mask=None,
                      stop_early: bool = True, method: str = "hooks") -> dict[int, torch.Tensor]:
    """Residual stream after each requested block, {layer: [B, T, D]}, from ONE forward pass.

    method="hooks": forward hooks on the decoder blocks; with stop_early the forward is aborted
    right after the deepest requested block (nothing after it runs, not even lm_head).
    method="hidden_states": `output_hidden_states=True` (no block hooks; for models where hooks
    are awkward), the last block read at the final norm's input. Runs under no_grad; activations
    stay on the model's device and dtype.
    """
    if method not in ("hooks", "hidden_states"):
        raise ValueError(f"method must be 'hooks' or 'hidden_states', got {method!r}.")
    wanted = check_layers(model, layers)
    blocks = decoder_layers(model)
    last = len(blocks) - 1
    device = model_device(model)
    kwargs = dict(input_ids=input_ids.to(device))
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(device)
    if getattr(getattr(model, "config", None), "use_cache", None) is not None:
        kwargs["use_cache"] = False
    out: dict[int, torch.Tensor] = {}
    handles = []

    def hook_for(layer: int, stop: bool):
        def hook(module, args, output):
            out[layer] = _block_output(output).detach()
            if stop:
                raise _StopForward

        return hook

    def norm_pre_hook(module, args):
        out[last] = args[0].detach()

    try:
        if method == "hooks":
            for layer in wanted:
                stop = stop_early and layer == wanted[-1]
                handles.append(blocks[layer].register_forward_hook(hook_for(layer, stop)))
        elif last in wanted:
            norm = final_norm(model)
            if norm is not None:
                handles.append(norm.register_forward_pre_hook(norm_pre_hook))
        with torch.no_grad():
            try:
                result = model(**kwargs, output_hidden_states=method == "hidden_states")
            except _StopForward:
                result = None
        if method == "hidden_states":
            hidden = result.hidden_states
            for layer in wanted:
                if layer not in out:
                    out[layer] = hidden[layer + 1].detach()
    finally:
        for h in handles:
            h.remove()
    return {layer: out[layer] for layer in wanted}


def token_mask(input_ids: torch.Tensor, tokenizer, attention_mask: torch.Tensor | None = None,
               drop_first: bool = False) -> torch.Tensor:
    """BoolTensor like input_ids: False at BOS/EOS/pad/other special tokens and masked-out positions.

    drop_first also drops position 0 (the attention-sink token of models run without a BOS).
    """
    special = sorted(set(getattr(tokenizer, "all_special_ids", []) or []) |
                     {i for i in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "pad_token_id", None),
                                  getattr(tokenizer, "eos_token_id", None)) if i is not None})
    keep = ~torch.isin(input_ids, torch.tensor(special, dtype=input_ids.dtype, device=input_ids.device))
    if attention_mask is not None:
        keep &= attention_mask.to(keep.device).bool()
    if drop_first:
        keep[..., 0] = False
    return keep


class ActivationBuffer:
    """Shuffling store of activations for several layers at once, living on `device`.

    `add({layer: [N, D]})` writes rows into free slots (rows beyond capacity wait in a pending
    queue, so no token is ever dropped or repeated); `pop()` returns {layer: [batch_tokens, D]}
    rows drawn in a random order that is the SAME for every layer (a multi-layer SAE or crosscoder
    sees the same tokens). `stream(source)` drives it: fill completely, shuffle, yield until half
    drained, refill, reshuffle, ... until the source ends. Order comes from a torch.Generator
    seeded with `seed`, so the stream is deterministic; `state_dict()` / `load_state_dict()`
    carry the generator state and counters (and, if asked, the contents) for resuming.
    """

    def __init__(self, buffer_tokens: int, batch_tokens: int, device="cpu", dtype: torch.dtype = torch.float32,
                 seed: int = 0, refill_below: float = 0.5, drop_last: bool = True):
        if batch_tokens <= 0 or buffer_tokens < batch_tokens:
            raise ValueError(f"Need 0 < batch_tokens <= buffer_tokens, got batch_tokens={batch_tokens}, "
                             f"buffer_tokens={buffer_tokens}; raise buffer_tokens (e.g. 16x the batch).")
        self.capacity, self.batch_tokens = int(buffer_tokens), int(batch_tokens)
        self.device, self.dtype = torch.device(device), dtype
        self.refill_below, self.drop_last = refill_below, drop_last
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.store: dict[int, torch.Tensor] = {}
        self.order = torch.empty(0, dtype=torch.long)  # occupied slots, in the order they are popped (from the end)
        self.free = torch.arange(self.capacity)  # unoccupied slots, used from the front
        self.pending: list[dict[int, torch.Tensor]] = []
        self.source_batches = 0  # items consumed from the source by stream()
        self.batches_yielded = 0
        self.tokens_yielded = 0

    def __len__(self) -> int:
        """Tokens held (in slots; pending rows not counted)."""
        return len(self.order)

    def _alloc(self, acts: Mapping[int, torch.Tensor]) -> None:
        for layer, x in acts.items():
            self.store[layer] = torch.empty(self.capacity, x.shape[-1], device=self.device, dtype=self.dtype)

    def add(self, acts: Mapping[int, torch.Tensor]) -> None:
        """Append rows {layer: [N, D]} (any device/dtype); same N and same layers every call."""
        acts = {int(k): v.detach().reshape(-1, v.shape[-1]) for k, v in acts.items()}
        sizes = {x.shape[0] for x in acts.values()}
        if len(sizes) != 1:
            raise ValueError(f"All layers must add the same number of rows, got {({k: v.shape for k, v in acts.items()})}.")
        if not self.store:
            self._alloc(acts)
        if set(acts) != set(self.store):
            raise ValueError(f"Buffer holds layers {sorted(self.store)}, got {sorted(acts)}.")
        for layer, x in acts.items():
            if x.shape[-1] != self.store[layer].shape[-1]:
                raise ValueError(f"Layer {layer}: width {x.shape[-1]} != buffer width {self.store[layer].shape[-1]}.")
        self.pending.append(acts)
        self._drain_pending()

    def _drain_pending(self) -> None:
        while self.pending and len(self.free):
            acts = self.pending[0]
            n = next(iter(acts.values())).shape[0]
            take = min(n, len(self.free))
            slots, self.free = self.free[:take], self.free[take:]
            dev_slots = slots.to(self.device)
            for layer, x in acts.items():
                self.store[layer][dev_slots] = x[:take].to(self.device, self.dtype, non_blocking=True)
            self.order = torch.cat([self.order, slots])
            if take == n:
                self.pending.pop(0)
            else:
                self.pending[0] = {k: v[take:] for k, v in acts.items()}

    @property
    def full(self) -> bool:
        return len(self.free) == 0

    def needs_refill(self) -> bool:
        return len(self.order) <= max(self.batch_tokens, self.refill_below * self.capacity)

    def shuffle(self) -> None:
        """Randomly reorder the held tokens (one permutation shared by all layers)."""
        self.order = self.order[torch.randperm(len(self.order), generator=self.generator)]

    def pop(self, n: int | None = None) -> dict[int, torch.Tensor]:
        """The next `n` (default batch_tokens) tokens for every layer, as new tensors on `device`."""
        n = n or self.batch_tokens
        if n > len(self.order):
            raise RuntimeError(f"Buffer holds {len(self.order)} tokens, asked for {n}; refill it first.")
        slots, self.order = self.order[len(self.order) - n:], self.order[: len(self.order) - n]
        dev_slots = slots.to(self.device)
        batch = {layer: x[dev_slots] for layer, x in self.store.items()}
        self.free = torch.cat([self.free, slots])
        self.batches_yielded += 1
        self.tokens_yielded += n
        return batch

    def stream(self, source: Iterable[Mapping[int, torch.Tensor]]) -> Iterator[dict[int, torch.Tensor]]:
        """Yield shuffled batches from `source` (an iterable of {layer: [N, D]}) until it ends."""
        it = iter(source)
        exhausted = False
        while True:
            if self.needs_refill() and not exhausted:
                while not self.full and not exhausted:
                    self._drain_pending()
                    if self.full:
                        break
                    try:
                        acts = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    self.source_batches += 1
                    self.add(acts)
                self.shuffle()
            if len(self.order) >= self.batch_tokens:
                yield self.pop()
            elif exhausted:
                self._drain_pending()
                if self.pending or len(self.order) >= self.batch_tokens:
                    self.shuffle()
                    continue
                if len(self.order) and not self.drop_last:
                    yield self.pop(len(self.order))
                return

    def state_dict(self, include_contents: bool = False) -> dict:
        """Generator state and counters; with include_contents also the held tokens (exact resume)."""
        state = dict(seed=self.seed, capacity=self.capacity, batch_tokens=self.batch_tokens,
                     rng_state=self.generator.get_state(), source_batches=self.source_batches,
                     batches_yielded=self.batches_yielded, tokens_yielded=self.tokens_yielded)
        if include_contents:
            state.update(store={k: v.cpu() for k, v in self.store.items()}, order=self.order.clone(),
                         free=self.free.clone(), pending=[{k: v.cpu() for k, v in p.items()} for p in self.pending])
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()`. Without contents the buffer restarts empty (held tokens skipped)."""
        if state["capacity"] != self.capacity or state["batch_tokens"] != self.batch_tokens:
            raise ValueError(f"Buffer sizes changed since the checkpoint (capacity {state['capacity']}, batch "
                             f"{state['batch_tokens']}); resume with the same buffer_tokens and batch_tokens.")
        self.generator.set_state(state["rng_state"])
        self.source_batches = state["source_batches"]
        self.batches_yielded = state["batches_yielded"]
        self.tokens_yielded = state["tokens_yielded"]
        if "store" in state:
            self.store = {k: v.to(self.device, self.dtype) for k, v in state["store"].items()}
            self.order, self.free = state["order"].clone(), state["free"].clone()
            self.pending = [dict(p) for p in state["pending"]]
        else:
            self.store, self.pending = {}, []
            self.order, self.free = torch.empty(0, dtype=torch.long), torch.arange(self.capacity)


def _check_finite(acts: Mapping[int, torch.Tensor], batch_index: int) -> None:
    for layer, x in acts.items():
        if not torch.isfinite(x).all():
            bad = "NaN" if torch.isnan(x).any() else "inf"
            raise FloatingPointError(
                f"{bad} activations at layer {layer} (source batch {batch_index}). The model overflowed in "
                f"{x.dtype}: load it in bfloat16 or float32 instead of float16, or check its weights.")


def residual_rows(model, tokenizer, token_batches: Iterable, layers, *, device, dtype: torch.dtype = torch.float32,
                  method: str = "hooks", stop_early: bool = True, drop_first: bool = False,
                  skip: int = 0) -> Iterator[dict[int, torch.Tensor]]:
    """For each token batch (after skipping `skip`), the kept tokens' activations {layer: [n, D]}.

    One forward per batch captures every layer; BOS/pad/special tokens are dropped; rows are cast
    to `dtype` on `device`; NaN/inf raise an error naming the layer. The input pipeline of both
    the shuffling buffer and the trainer's blocks.
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
        _check_finite(out, index)
        index += 1
        yield out


class ActivationStream:
    """Iterator of shuffled {layer: [batch_tokens, D]} batches with `state_dict()` for resuming.

    Built by `activation_batches`; the source batch counter in the state says how many token
    batches have been consumed, and a resumed stream skips that many from the (deterministic)
    token iterator itself.
    """

    def __init__(self, model, tokenizer, token_batches, layers, buffer: ActivationBuffer, *, method: str,
                 stop_early: bool, drop_first: bool, skip: int):
        self.model, self.tokenizer, self.buffer = model, tokenizer, buffer
        self.layers = check_layers(model, layers)
        self.method, self.stop_early, self.drop_first = method, stop_early, drop_first
        source = self._activations(token_batches, skip)
        self._it = buffer.stream(source)

    def _activations(self, token_batches, skip: int):
        return residual_rows(self.model, self.tokenizer, token_batches, self.layers, device=self.buffer.device,
                             dtype=self.buffer.dtype, method=self.method, stop_early=self.stop_early,
                             drop_first=self.drop_first, skip=skip)

    def __iter__(self):
        return self

    def __next__(self) -> dict[int, torch.Tensor]:
        return next(self._it)

    def state_dict(self, include_contents: bool = False) -> dict:
        return self.buffer.state_dict(include_contents)


def activation_batches(model, tokenizer, token_batches: Iterable, layers, batch_tokens: int, buffer_tokens: int,
                       device=None, *, dtype: torch.dtype = torch.float32, seed: int = 0, method: str = "hooks",
                       stop_early: bool = True, drop_first: bool = False, state: dict | None = None,
                       refill_below: float = 0.5, drop_last: bool = True) -> ActivationStream:
    """Shuffled activation batches {layer: [batch_tokens, D]} on `device` from a stream of token batches.

    token_batches yields LongTensor [B, T] (or dicts with input_ids / attention_mask). One forward
    per token batch captures every layer (hooks, stopped after the deepest layer); BOS/pad/special
    tokens are dropped; activations are cast to `dtype` and moved to `device` (default: the
    model's device; may differ, e.g. model on cuda:0 and buffer on cuda:1). NaN/inf raise an error
    naming the layer. Pass `state=stream.state_dict()` from an earlier run (same token stream,
    seed and sizes) to resume: the consumed token batches are skipped; with
    `state_dict(include_contents=True)` the resumed stream is identical to an uninterrupted one.
    """
    device = torch.device(device) if device is not None else model_device(model)
    buffer = ActivationBuffer(buffer_tokens, batch_tokens, device=device, dtype=dtype, seed=seed,
                              refill_below=refill_below, drop_last=drop_last)
    skip = 0
    if state is not None:
        buffer.load_state_dict(state)
        skip = state["source_batches"]
    return ActivationStream(model, tokenizer, token_batches, layers, buffer, method=method,
                            stop_early=stop_early, drop_first=drop_first, skip=skip)
