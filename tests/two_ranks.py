"""Checks that need two real ranks, run by tests/test_distributed.py under torchrun (gloo, 2 CPU
processes): `python -m torch.distributed.run --nproc-per-node 2 tests/two_ranks.py CHECK`. Each rank
prints one line "RESULT <json>" for the test to compare.

  blocks   ranks with different memory budgets (and rank 0's first large allocation out of memory)
           build the same activation blocks: one size, agreed by all, halved together
  auto     buffer.activation_blocks with BLOCK_BATCHES = "auto" and a different free memory per rank
  penalty  JumpReLU's L0 and ReLU's L1 penalties, each rank on its half of a batch under a reducer:
           their sum over ranks and their summed gradients equal one process's on the whole batch
  crosscoder  the crosscoder's loss (FVU with L1, or with AuxK) the same way
"""
from __future__ import annotations

import json
import os
import sys

import torch

from shared.training import distributed
from shared.training.buffer import ActivationBlocks


def _rows(skip: int):
    """Forty forwards of 64 rows x 8 features, the same on every rank (a source for ActivationBlocks)."""
    for i in range(skip, 40):
        yield {0: torch.randn(64, 8, generator=torch.Generator().manual_seed(i))}


def blocks(group: distributed.Group) -> dict:
    row_bytes = 8 * 4
    budgets = {0: 10**9, 1: (32 + 6 * 64) * row_bytes}  # rank 1 holds 6 forwards a block, rank 0 all 16
    real_empty = torch.empty
    failed = []

    def empty(*shape, **kw):  # rank 0's first store of more than 4 forwards runs out of memory
        size = shape[0] if shape and isinstance(shape[0], int) else None
        if group.rank == 0 and not failed and size is not None and size > 32 + 4 * 64 and len(shape) == 2:
            failed.append(size)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate (injected by the test)")
        return real_empty(*shape, **kw)

    torch.empty = empty
    try:
        buffer = ActivationBlocks(_rows, batch_tokens=32, block_batches=16, rows_per_forward=64, seed=0,
                                          memory_budget=lambda: budgets[group.rank], agree=group.min_int)
        sums = []
        while (block := buffer.next_block()) is not None:
            sums.append([round(float(batch[0].sum()), 4) for batch in block])
    finally:
        torch.empty = real_empty
    return {"block_batches": buffer.block_batches, "batches": sums, "injected_oom": failed}


def auto(group: distributed.Group) -> dict:
    from shared.model.loading import load_model
    from shared.training import buffer, config

    model, tok = load_model("tiny:gpt2", device="cpu")
    row_bytes = 64 * 4
    frees = {0: 2 * (256 + 40 * 8 * 32) * row_bytes, 1: 2 * (256 + 3 * 8 * 32) * row_bytes}
    buffer.free_memory_bytes = lambda device: frees[group.rank]
    cfg = config.TrainConfig(model_id="tiny:gpt2", layers=(1,), context_len=32, model_batch_size=8, batch_tokens=256,
                             block_batches="auto", total_tokens=2048)
    made = buffer.activation_blocks(model, tok, cfg, "cpu", group=group)
    return {"block_batches": made.block_batches}


def penalty(group: distributed.Group) -> dict:
    from shared.saes.architectures import build_sae
    from shared.saes.jumprelu import JumpReLUConfig
    from shared.saes.relu import ReLUConfig

    out = {}
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0)) * 0.5
    for cfg, term in ((JumpReLUConfig(d_in=16, d_sae=64, l0_coefficient=0.1, init_threshold=0.05, bandwidth=0.5,
                                      seed=1), "l0"),
                      (ReLUConfig(d_in=16, d_sae=64, l1_coefficient=0.1, seed=1), "l1")):
        sae = build_sae(cfg)
        one = sae(x)  # one process, the whole batch
        one.losses[term].backward()
        one_grads = {name: p.grad.clone() for name, p in sae.named_parameters() if p.grad is not None}
        sae.zero_grad(set_to_none=True)
        sae.reducer = group  # this rank's half of the same batch
        half = x[group.rank * 32:(group.rank + 1) * 32]
        mine = sae(half)
        mine.losses[term].backward()
        group.sum_grads(sae)
        total = group.all_reduce(mine.losses[term].detach().clone())
        out[term] = {"one_process": float(one.losses[term]), "ranks_summed": float(total),
                     "grad_max_diff": max(float((p.grad - one_grads[name]).abs().max())
                                          for name, p in sae.named_parameters() if name in one_grads),
                     "grad_scale": max(float(g.abs().max()) for g in one_grads.values())}
    return out


def crosscoder(group: distributed.Group) -> dict:
    from shared.saes.crosscoder import Crosscoder, CrosscoderConfig

    out = {}
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 3, 8, generator=gen) + torch.randn(3, 8, generator=gen)) * torch.tensor([1.0, 3.0, 10.0])[:, None]
    dead = torch.arange(32) >= 16  # AuxK on the second half of the latents
    for architecture in ("l1", "topk"):
        xc = Crosscoder(CrosscoderConfig(layers=(0, 1, 2), d_in=8, d_sae=32, architecture=architecture, k=4,
                                         l1_coefficient=0.1, seed=1))
        xc.initialise(x)
        one = xc(x, dead_mask=dead)  # one process, the whole batch
        one.loss.backward()
        one_grads = {name: p.grad.clone() for name, p in xc.named_parameters() if p.grad is not None}
        xc.zero_grad(set_to_none=True)
        xc.reducer = group  # this rank's half of the same batch
        mine = xc(x[group.rank * 32:(group.rank + 1) * 32], dead_mask=dead)
        mine.loss.backward()
        group.sum_grads(xc)
        total = group.all_reduce(mine.loss.detach().clone())
        out[architecture] = {"one_process": float(one.loss), "ranks_summed": float(total),
                             "terms": sorted(one.losses),
                             "grad_max_diff": max(float((p.grad - one_grads[name]).abs().max())
                                                  for name, p in xc.named_parameters() if name in one_grads),
                             "grad_scale": max(float(g.abs().max()) for g in one_grads.values())}
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    group = distributed.init(timeout_s=60)
    try:
        result = {"blocks": blocks, "auto": auto, "penalty": penalty, "crosscoder": crosscoder}[sys.argv[1]](group)
        # one write of the whole line: two ranks share the pipe, and print's separate writes of the text and
        # its newline could interleave ("...}RESULT {...")
        os.write(sys.stdout.fileno(), ("RESULT " + json.dumps({"rank": group.rank, **result}) + "\n").encode())
    finally:
        distributed.shutdown()
