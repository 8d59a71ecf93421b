"""The block-shuffling activation buffer that feeds SAE training, and the memory it is sized by.

`ActivationBlocks` gathers the rows of `model.capture.residual_rows` in blocks, shuffles each block and
cuts it into training batches, carrying the rows past the last full batch into the next block, so
every forwarded token is trained exactly once. The whole stream is a deterministic function of
(token stream, seed, sizes); `state_dict()` lets a run resume exactly. Memory: given a budget
(`free_memory_bytes`), the buffer lowers its block size to fit it (`block_batches_for_memory`) and
halves it on an out-of-memory allocation instead of failing.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Iterator, Mapping

import torch

from ..model.capture import residual_rows
from ..model.layout import check_layers, d_model
from ..saes.kernels import all_finite
from . import distributed, replay
from .config import TrainConfig
from .memory import AUTO_BLOCK_BATCHES, SAE_ACT_COPIES, buffer_budget_bytes
from .stream import _token_stream


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
        if not all(all_finite(x) for x in carry.values()):
            # every rank loads the same checkpoint, so all refuse it here (a bad row would otherwise
            # reach one rank's slice of a batch, and only that rank's SAE would refuse it)
            raise ValueError("The checkpoint's carried activation rows hold NaN or inf: it is damaged; remove it "
                             "from checkpoint_dir to resume from the one before.")
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
    return _meminfo_bytes("MemAvailable", "SC_AVPHYS_PAGES")


def total_memory_bytes(device) -> int:
    """Bytes of memory `device` has in all: the GPU's as torch reports it; MemTotal on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return _meminfo_bytes("MemTotal", "SC_PHYS_PAGES")


def _meminfo_bytes(field: str, pages: str) -> int:
    """A /proc/meminfo field in bytes; where there is none, that many physical pages (os.sysconf `pages`)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE"))


def block_batches_for_memory(budget_bytes: int, *, row_bytes: int, rows_per_forward: int, fixed_rows: int,
                             max_batches: int | None = None) -> int:
    """The most forwards per block whose store (fixed_rows + block_batches * rows_per_forward rows of
    row_bytes each: every layer's width times the dtype's bytes) fits budget_bytes; at least 1
    (the allocation then decides), at most max_batches."""
    fit = (int(budget_bytes) // max(1, row_bytes) - fixed_rows) // rows_per_forward
    fit = max(1, fit)
    return min(fit, max_batches) if max_batches is not None else fit


# ----------------------------------------------------------------------------- a training run's buffer

def activation_blocks(model, tokenizer, cfg: TrainConfig, device, state: dict | None = None,
                      group: distributed.Group | None = None, reserve=None,
                      ledger: replay.StreamLedger | None = None) -> ActivationBlocks:
    """The run's shuffling buffer over its token stream, from `state` (a checkpoint's "data") on.

    A block is `block_batches` forwards; this is the one place its size is chosen, and with it the
    buffer's memory (`ActivationBlocks.capacity` rows per layer): cfg.block_batches, or for "auto" as
    many as buffer_memory_fraction of the free memory holds (at most AUTO_BLOCK_BATCHES); either way the
    buffer shrinks its blocks when that share no longer holds them. The free memory counted is what the
    training steps leave (memory.buffer_budget_bytes): less `reserve()` (step_reserve_bytes: Adam's
    moments torch has not allocated yet, one SAE's gradients and step tensors) and, on a GPU, the share
    memory.USABLE_FRACTION leaves to fragmentation. Under torchrun every rank takes the smallest size any
    rank can hold.
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
        return buffer_budget_bytes(free_memory_bytes(device), reserve() if reserve is not None else 0, total,
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
    """Bytes the training steps add to the memory after the buffer is sized (planning.memory.step_reserve_gib's
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
        step = max(step, grads + SAE_ACT_COPIES * batch_tokens * sae.cfg.d_sae * 4)
    return pending + step
