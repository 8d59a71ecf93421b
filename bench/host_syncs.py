"""Kernel launches and host syncs per SAE step, counted on any machine (no GPU needed).

A GPU step of a few milliseconds is host-bound when the host spends longer issuing its kernels than
the GPU spends running them, and every host sync (a value read back: `.item()`, `bool(t)`, a
`nonzero` whose size the host must know) drains the GPU's queue so the host cannot run ahead into
the next step or forward. This bench runs one steady step of each path through a dispatch mode that
records every aten op: the ops that do work (views and metadata left out) approximate the kernels a
GPU launches, and the ops whose result the host must wait for are the syncs a GPU would make.

Paths: "gpu-dense" is what a GPU runs under bf16 autocast (our default there: the dense matmuls,
`sparse_kernels` False; counted under CPU bf16 autocast, whose casts stand for the GPU's), "sparse" the sparse kernels (CPU, fp32 on a GPU); each with the trainer's
settings (`check_finite=False`: the rows were checked at capture) and, for TopK, with
`sync_free_aux` (AuxK's dead latents picked by a masked top-k, no host read of the dead count).

    python bench/host_syncs.py [--json out.json]

Counts, not times: fused Adam is one op here and a few multi-tensor kernels on CUDA; a CPU op can be
several CUDA kernels (topk, sort) or one fused with its neighbour. Results in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Ops that only describe memory (no kernel on a GPU).
METADATA = {"view", "_unsafe_view", "as_strided", "t", "transpose", "expand", "slice", "select", "unsqueeze",
            "squeeze", "detach", "alias", "permute", "reshape", "_reshape_alias", "split", "split_with_sizes",
            "unbind", "narrow", "chunk", "lift_fresh", "promote_types", "_record_function_enter_new",
            "_record_function_exit", "result_type", "values", "indices", "sym_size", "sym_stride", "sym_numel",
            "dim", "is_same_size", "empty_like", "empty", "new_empty", "set_", "_has_compatible_shallow_copy_type"}
# Ops whose output the host must see before it goes on (on CUDA: a device-to-host wait).
SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
           "repeat_interleave", "bincount", "equal", "is_nonzero", "allclose", "item", "masked_scatter_"}


class OpCounter(TorchDispatchMode):
    """Counts the aten ops run under it by name; `syncs` lists the ones a GPU would wait on (SYNCING, and
    indexing by a bool mask, which runs a nonzero inside)."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        self.ops[name] += 1
        if name in SYNCING or (name in ("index", "index_put_", "index_put") and _bool_index(args)):
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))

    @property
    def launches(self) -> int:
        return sum(n for name, n in self.ops.items() if name not in METADATA)


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(torch.is_tensor(t) and t.dtype == torch.bool for t in indices or ())


def count_step(sae, x: torch.Tensor, dead: torch.Tensor, *, check_finite: bool = False, warm: int = 2,
               bf16: bool = False) -> OpCounter:
    """One steady sae_step (after `warm` steps: optimiser state made, CPU buffers allocated) under OpCounter;
    bf16: under bf16 autocast, as a GPU's step runs (its casts are launches too)."""
    import contextlib

    from shared.training.step import adam, sae_step

    opt = adam(sae.parameters(), lr=1e-3, device=x.device)
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        for _ in range(warm):
            sae_step(sae, opt, x, 1e-3, dead_mask=dead, check_finite=check_finite)
        with OpCounter() as counter:
            sae_step(sae, opt, x, 1e-3, dead_mask=dead, check_finite=check_finite)
    return counter


def build(arch: str, d_in: int, d_sae: int, k: int):
    """An SAE of each trainable architecture (a crosscoder over two layers) at the bench's shape."""
    from shared.saes.architectures import build_sae, registered
    from shared.saes.crosscoder import Crosscoder, CrosscoderConfig

    if arch == "crosscoder":
        return Crosscoder(CrosscoderConfig(d_in=d_in, d_sae=d_sae, layers=(0, 1), k=k, seed=0))
    cfg_cls = registered()[arch].config
    extra = {"k": k} if "k" in cfg_cls.__dataclass_fields__ else {}
    return build_sae(cfg_cls(d_in=d_in, d_sae=d_sae, seed=0, **extra))


def measure(d_in: int = 256, d_sae: int = 4096, k: int = 32, n: int = 1024, dead_frac: float = 0.03) -> list[dict]:
    """One row per (architecture, path, setting): launches, syncs and which ops sync."""
    from shared.saes.architectures import registered
    from shared.saes.topk import TopKSAE

    torch.manual_seed(0)
    rows = []
    archs = [a for a, entry in registered().items() if entry.model.trainable] + ["crosscoder"]
    for arch in archs:
        for path in ("gpu-dense", "sparse"):
            settings = [("trainer", False, False), ("step checks its rows", True, False)]
            if arch == "crosscoder" or issubclass(registered()[arch].model, TopKSAE):  # those with AuxK
                settings.append(("trainer+sync_free_aux", False, True))
            for label, check_finite, sync_free in settings:
                sae = build(arch, d_in, d_sae, k)
                if path == "sparse" and arch == "crosscoder":
                    continue  # one dense implementation
                sae.sparse_kernels = path == "sparse"
                if sync_free:
                    sae.sync_free_aux = True
                layers = (2,) if arch == "crosscoder" else ()
                x = torch.randn(n, *layers, d_in)
                dead = torch.zeros(d_sae, dtype=torch.bool)
                dead[torch.randperm(d_sae)[: int(dead_frac * d_sae)]] = True
                counter = count_step(sae, x, dead, check_finite=check_finite, bf16=path == "gpu-dense")
                rows.append({"architecture": arch, "path": path, "setting": label, "launches": counter.launches,
                             "syncs": len(counter.syncs), "syncing_ops": dict(collections.Counter(counter.syncs))})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = measure()
    print(f"{'architecture':20} {'path':10} {'setting':22} {'launches':>8} {'syncs':>5}  syncing ops")
    for r in rows:
        print(f"{r['architecture']:20} {r['path']:10} {r['setting']:22} {r['launches']:>8} {r['syncs']:>5}  "
              f"{r['syncing_ops'] or ''}")
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
