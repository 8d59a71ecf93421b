"""Data parallelism for the trainer under `torchrun`: every rank holds the same SAEs and the same
shuffled blocks, trains on its own slice of each global batch, and sums gradients.

Forwards are sharded: rank r runs forwards r, r+W, ... of each group of W (world size) token
batches, and the rows of the group are all-gathered, so every rank builds the block the
one-process run builds, bit for bit. Each global batch of `batch_tokens` rows is cut into W
contiguous slices; the batch statistics the losses normalise by (the centred variance of the
input and of the residual) and the set of latents that fired are reduced over the ranks, and the
gradients are summed: each step is the one-process step up to the order of fp32 sums. The cost:
every rank holds the whole block (the one-process memory) and receives every row once.

A collective that fails or waits past the timeout (a rank died) raises one `RankFailure` line
instead of hanging. An error every rank raises alike from facts all ranks share (`Unanimous`: NaN/inf
activations seen after the all-gather, a diverged SAE) ends every rank at once, with no collective
left waiting, and rank 0 alone reports it.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.distributed as dist

from ..model.capture import check_finite, residual_rows
from ..saes.kernels import all_finite, loss_precision

TIMEOUT_ENV = "SAE_COLLECTIVE_TIMEOUT_S"  # seconds a collective may wait for the other ranks
DEFAULT_TIMEOUT_S = 1800.0  # long enough for rank 0's checkpoint upload while the others wait
_timeout_s: float | None = None  # the timeout `init` set


class RankFailure(RuntimeError):
    """A collective failed or timed out: another rank died or stalled. One line."""


class Unanimous(Exception):
    """Marks an error every rank raises alike, at the same point, from facts every rank holds (rows
    every rank gathered, metrics reduced over the ranks): no rank is left waiting in a collective,
    and rank 0 alone needs to report it."""


@dataclass
class Group:
    """This process's place in a data-parallel job: rank, world size, and the collectives' timeout."""

    rank: int
    world: int
    timeout_s: float

    @property
    def main(self) -> bool:
        return self.rank == 0

    def _call(self, what: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - gloo/NCCL raise assorted types; all mean: the job is broken
            reason = " ".join(str(e).split())[:200]
            raise RankFailure(
                f"rank {self.rank} of {self.world}: {what} failed or waited past the {self.timeout_s:g} s "
                f"collective timeout ({reason}); another rank probably died: see its log above") from None

    def all_reduce(self, t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        self._call("an all-reduce", dist.all_reduce, t, op=op)
        return t

    def min_int(self, value: int) -> int:
        """The smallest of every rank's `value` (every rank calls it at the same point): how ranks agree
        on one activation-block size, or on whether any rank ran out of memory (0 from that rank)."""
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.comm_device())
        self.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    @staticmethod
    def comm_device() -> torch.device:
        """Where collectives' tensors live: the rank's GPU under NCCL, the CPU under gloo."""
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

    def broadcast_object(self, obj):
        box = [obj]
        self._call("a broadcast", dist.broadcast_object_list, box, src=0)
        return box[0]

    def barrier(self) -> None:
        self._call("a barrier", dist.barrier)

    def all_gather_rows(self, rows: torch.Tensor | None, width: tuple[int, ...], dtype, device) -> list[torch.Tensor]:
        """Every rank's `rows` [n_r, *width] (None: none), in rank order; n_r may differ."""
        n = torch.tensor([0 if rows is None else rows.shape[0]], device=device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        self._call("an all-gather", dist.all_gather, sizes, n)
        most = max(int(s) for s in sizes)
        padded = torch.zeros(most, *width, dtype=dtype, device=device)
        if rows is not None:
            padded[:rows.shape[0]] = rows
        out = [torch.empty_like(padded) for _ in range(self.world)]
        self._call("an all-gather", dist.all_gather, out, padded)
        return [x[:int(s)] for x, s in zip(out, sizes)]

    # ---- what the SAE step needs (SparseAutoencoder.reducer)
    def centered_sq_sum(self, x: torch.Tensor) -> torch.Tensor:
        """sum of (x - mean)^2 over the rows of every rank (two passes: the mean first, so no
        cancellation beyond the one-process computation's)."""
        xf = loss_precision(x)
        stats = torch.cat([xf.sum(0), xf.new_tensor([x.shape[0]])])
        self.all_reduce(stats)
        mean = stats[:-1] / stats[-1]
        return self.all_reduce((xf - mean).square().sum())

    def any(self, mask: torch.Tensor) -> torch.Tensor:
        """Elementwise OR of a bool tensor over the ranks."""
        return self.all_reduce(mask.to(torch.uint8), op=dist.ReduceOp.MAX).bool()

    def min(self, t: torch.Tensor) -> torch.Tensor:
        """Elementwise minimum of a tensor over the ranks (in place): BatchTopK's smallest kept activation."""
        return self.all_reduce(t, op=dist.ReduceOp.MIN)

    def sum_grads(self, module: torch.nn.Module) -> None:
        """Sum every parameter's gradient over the ranks (one flat all-reduce)."""
        params = [p for p in module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        self.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()


def world_size() -> int:
    """The world size torchrun set (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """The rank torchrun gave this process (0 outside torchrun), known before `init`: rank 0 speaks for
    the job (one line for an error every rank would raise alike, one probe of a Hub store)."""
    return int(os.environ.get("RANK", "0"))


def init(timeout_s: float | None = None) -> Group | None:
    """Join the torchrun job (once): gloo on CPU, NCCL on GPUs (each rank on cuda:LOCAL_RANK);
    None outside torchrun or with one process."""
    if world_size() <= 1:
        return None
    global _timeout_s
    if timeout_s is None:
        timeout_s = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    if not dist.is_initialized():
        _timeout_s = timeout_s
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return current()


def shutdown() -> None:
    """Leave the job: destroy the process group, so gloo's threads end before the interpreter does
    (left running, they abort the process at exit: "terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current() -> Group | None:
    """The job this process joined with `init`, or None."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    timeout = _timeout_s if _timeout_s is not None else float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    return Group(dist.get_rank(), dist.get_world_size(), timeout)


def sharded_rows(group: Group, model, tokenizer, token_batches: Iterable, layers, *, device, dtype,
                 skip: int = 0) -> Iterator[dict[int, torch.Tensor]]:
    """`capture.residual_rows` with the forwards shared out: every rank reads the same token
    stream; of each group of W batches rank r forwards the r-th, and the group's rows are gathered
    so every rank yields every forward's rows, in stream order (exactly what one process yields).

    NaN/inf rows (a float16 overflow in one rank's forward) are looked for after the all-gather, on
    every rank, not in the forward: there every rank holds the same rows, so every rank raises the same
    FloatingPointError (capture.check_finite: the layer, the forward's index in the stream, the dtype to
    set) at the same point, with no collective added. Checked in the forward, only the overflowing rank
    would raise, and the others would wait in this all-gather until the collective timeout."""
    it = iter(token_batches)
    for _ in range(skip):
        if next(it, None) is None:
            return
    layers = list(layers)
    comm = group.comm_device()
    index = skip  # the stream index of the group's first batch
    while True:
        batches = []
        for _ in range(group.world):
            b = next(it, None)
            if b is None:
                break
            batches.append(b)
        if not batches:
            return
        mine = None
        if group.rank < len(batches):
            part = next(residual_rows(model, tokenizer, [batches[group.rank]], layers, device=comm, dtype=dtype,
                                      check=False))
            mine = torch.stack([part[layer] for layer in layers], 1)  # [n, n_layers, D]
        width = (len(layers), _width(model))
        gathered = group.all_gather_rows(mine, width, dtype, comm)[:len(batches)]
        for j, rows in enumerate(gathered):
            if not all_finite(rows):
                check_finite({layer: rows[:, i] for i, layer in enumerate(layers)}, index + j, model)
        index += len(batches)
        for rows in gathered:
            yield {layer: rows[:, i].to(device) for i, layer in enumerate(layers)}


def _width(model) -> int:
    from ..model.layout import d_model

    return d_model(model)
