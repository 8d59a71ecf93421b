"""Time one TopK SAE training step: ours vs sae-lens vs EleutherAI sparsify, same inputs, one run.

A step = forward + AuxK (with dead latents) + backward + Adam step + decoder renorm, on one batch.
Also times one dense encoder matmul [batch, d_in] @ [d_in, d_sae] as the floor any TopK step pays.
Usage (see bench/README.md):  .venv-bench/bin/python bench/train_step.py [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared.saes import architectures  # noqa: E402
from shared.saes.topk import TopKConfig  # noqa: E402
from shared.training.step import adam, sae_step  # noqa: E402  (the trainer's optimiser and step)


PAGE = 4096


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where `resource` is missing, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(args, device, dead, kernels=None, autocast=False, sync_free_aux=False):
    """Our trainer's step; kernels "sparse" / "dense" force a path, None lets the SAE choose (as training does);
    sync_free_aux: AuxK's dead latents by a masked top-k (TopKSAE.sync_free_aux, no host sync)."""
    cfg = TopKConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k, aux_coef=1 / 32)
    sae = architectures.build_sae(cfg, device=device)
    sae.sparse_kernels = {None: None, "sparse": True, "dense": False}[kernels]
    sae.sync_free_aux = sync_free_aux
    opt = adam(sae.parameters(), lr=2e-4, device=device)

    def step(x):  # exactly the trainer's step (bf16 autocast only on GPUs with bf16; rows checked at capture)
        return sae_step(sae, opt, x, autocast=autocast, dead_mask=dead, check_finite=False)

    return step


def sparsify(args, device, dead):
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(args.d_in, SparseCoderConfig(num_latents=args.d_sae, k=args.k), device=device)
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4)

    def step(x):
        out = sae(x, dead_mask=dead)
        loss = out.fvu + out.auxk_loss / 32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
        return out.auxk_loss

    return step


def saelens(args, device, dead, sparse_acts=False):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    cfg = TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k, aux_loss_coefficient=1 / 32,
                                use_sparse_activations=sparse_acts, device=str(device))
    sae = TopKTrainingSAE(cfg)
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4)

    def step(x):
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead,
                                                       n_training_steps=0, is_logging_step=False))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()  # sae-lens' TopK trains with rescale_acts_by_decoder_norm: no renorm needed
        return out.losses["auxiliary_reconstruction_loss"]

    return step


def floor(args, device, dead, dtype=torch.float32, reuse_output=False):
    """One dense encoder matmul; with reuse_output into the same [batch, d_sae] tensor every call
    (the pure compute floor: no fresh pages, as our step's reused encoder output)."""
    W = torch.randn(args.d_in, args.d_sae, device=device, dtype=dtype) / args.d_in ** 0.5
    b = torch.zeros(args.d_sae, device=device, dtype=dtype)
    if reuse_output:
        out = torch.empty(args.batch, args.d_sae, device=device, dtype=dtype)
        return lambda x: torch.addmm(b, x.to(dtype), W, out=out)
    return lambda x: torch.addmm(b, x.to(dtype), W)


IMPLS = {
    "matmul-floor": floor,
    "matmul-floor-bf16": lambda a, d, m: floor(a, d, m, dtype=torch.bfloat16),
    "matmul-floor-reused": lambda a, d, m: floor(a, d, m, reuse_output=True),
    "ours": ours,  # fp32: the sparse kernels
    "ours-dense-ref": lambda a, d, m: ours(a, d, m, kernels="dense"),
    # bf16 autocast, as sparsify does on CUDA (and our trainer's default there): the SAE's own choice,
    # which is the dense tensor-core path on a GPU, and each path forced
    "ours-bf16": lambda a, d, m: ours(a, d, m, autocast=True),
    "ours-sparse-bf16": lambda a, d, m: ours(a, d, m, kernels="sparse", autocast=True),
    "ours-dense-bf16": lambda a, d, m: ours(a, d, m, kernels="dense", autocast=True),
    "ours-bf16-syncfree": lambda a, d, m: ours(a, d, m, autocast=True, sync_free_aux=True),
    "sparsify": sparsify,
    "sae-lens": saelens,
    "sae-lens-sparse": lambda a, d, m: saelens(a, d, m, sparse_acts=True),
}


def check_grads(device):
    """Sparse kernels vs dense autograd on a small float32 problem on `device`; prints the max error."""
    cfg = TopKConfig(d_in=64, d_sae=1024, k=16, k_aux=32)
    x = torch.randn(512, 64, device=device) * 2 + 0.5
    dead = torch.zeros(1024, dtype=torch.bool, device=device)
    dead[::4] = True
    res = []
    for sparse in (True, False):
        sae = architectures.build_sae(cfg, device=device)
        sae.sparse_kernels = sparse
        sae(x, dead_mask=dead).loss.backward()
        res.append([p.grad for p in sae.parameters()])
    err = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(*res))
    print(f"gradient check on {device}: max relative error sparse vs dense = {err:.2e}")
    if err > 1e-3:
        raise SystemExit("gradient check FAILED")


def versions():
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("sae-lens", "eai-sparsify"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def machine(device):
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--d-in", type=int, default=768)
    p.add_argument("--expansion", type=int, default=16)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--dead-frac", default="0.01,0.03,0.125",
                   help="fraction(s) of latents marked dead, comma-separated: one table each (AuxK runs when > 0)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=1, help="rounds over all impls (interleaved, for noisy boxes)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--impls", default="matmul-floor,matmul-floor-reused,ours,sparsify,sae-lens,sae-lens-sparse",
                   help=f"comma list from {list(IMPLS)}")
    p.add_argument("--json", default=None, help="write all timings here")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="also profile 5 steps of each impl (first dead fraction) with torch.profiler: "
                        "the top kernels and the device-busy vs wall time per step, written to FILE")
    p.add_argument("--check-grads", action="store_true",
                   help="first check our sparse gradients against dense autograd on this device")
    args = p.parse_args(argv)
    args.d_sae = args.d_in * args.expansion
    args.dead_fracs = [float(f) for f in str(args.dead_frac).split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU: run on a GPU machine or drop --device.")

    if args.check_grads:
        check_grads(device)
    runs = [run_one(args, device, frac) for frac in args.dead_fracs]
    if args.profile:
        profile(args, device, args.dead_fracs[0], Path(args.profile))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(config={k: v for k, v in vars(args).items() if k != "json"},
                                                   machine=machine(device), versions=versions(), runs=runs),
                                              indent=2))
        print(f"wrote {args.json}")


def profile(args, device, dead_frac: float, path: Path) -> None:
    """torch.profiler over 5 steps of each impl: where the step's time goes (kernels vs launch/host)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x, dead = inputs(args, device, dead_frac)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    lines = []
    for name in args.impls.split(","):
        try:
            f = IMPLS[name](args, device, dead)
            for _ in range(3):
                f(x)
            sync(device)
            t0 = time.perf_counter()
            with torch_profile(activities=activities) as prof:
                for _ in range(5):
                    f(x)
                sync(device)
            wall = (time.perf_counter() - t0) / 5
        except Exception as e:
            lines.append(f"== {name}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:160]})\n")
            continue
        events = prof.key_averages()
        busy = sum(getattr(e, key, 0) for e in events) / 5 / 1e3
        n_kernels = sum(e.count for e in events if getattr(e, key, 0) > 0) / 5
        # on CUDA an op's row carries its kernels' time and each kernel has a row too: about half is busy time
        lines.append(f"== {name}: wall {wall * 1e3:.2f} ms/step (profiled), {key} summed over rows {busy:.2f} "
                     f"ms/step (ops and their kernels both counted on CUDA), {n_kernels:.0f} timed rows per step\n")
        lines.append(events.table(sort_by=key, row_limit=25, max_name_column_width=70) + "\n")
    path.write_text("".join(lines))
    print(f"wrote {path}")


def inputs(args, device, dead_frac: float):
    """The bench's batch [batch, d_in] and a dead mask with dead_frac of the latents set (seeded)."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(args.batch, args.d_in, generator=gen) * 2 + 0.5).to(device)
    dead = torch.zeros(args.d_sae, dtype=torch.bool)
    dead[torch.randperm(args.d_sae, generator=gen)[: int(dead_frac * args.d_sae)]] = True
    return x, dead.to(device)


def run_one(args, device, dead_frac: float) -> dict:
    """Time every implementation on one batch with `dead_frac` of the latents marked dead; print a table."""
    x, dead = inputs(args, device, dead_frac)
    steps, skipped = {}, {}
    for name in args.impls.split(","):
        try:
            steps[name] = IMPLS[name](args, device, dead)
        except Exception as e:  # a peer that cannot import is reported, not fatal
            skipped[name] = f"{type(e).__name__}: {e}"
            print(f"skip {name}: {skipped[name]}", file=sys.stderr)

    for n, f in list(steps.items()):  # warm-up (allocator, kernels, Adam state)
        try:
            for _ in range(max(1, args.warmup)):
                f(x)
            sync(device)
        except Exception as e:  # e.g. a peer's code path that this torch/device does not support
            skipped[n] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            print(f"skip {n}: {skipped[n]}", file=sys.stderr)
            del steps[n]
    times = {n: [] for n in steps}
    faults = {n: 0 for n in steps}  # first touches of fresh pages (expensive on VMs): a CPU-side cost
    for _ in range(args.rounds):
        for n, f in steps.items():
            for _ in range(args.steps):
                sync(device)
                f0 = minor_faults()
                t0 = time.perf_counter()
                f(x)
                sync(device)
                times[n].append(time.perf_counter() - t0)
                faults[n] += minor_faults() - f0

    med = {n: statistics.median(t) for n, t in times.items()}
    ref = med.get("sparsify")
    fl = med.get("matmul-floor")
    n_dead = int(dead.sum())
    print(f"\nTopK train step: d_in={args.d_in} d_sae={args.d_sae} k={args.k} batch={args.batch} "
          f"dead={n_dead} ({100 * n_dead / args.d_sae:.1f}%) device={device} threads={torch.get_num_threads()}")
    print(f"{'impl':<20}{'median ms':>11}{'min ms':>9}{'tokens/s':>12}{'vs sparsify':>13}{'x floor':>9}"
          f"{'MB faulted/step':>17}")
    rows = []
    for n, t in med.items():
        row = dict(impl=n, median_ms=t * 1e3, min_ms=min(times[n]) * 1e3, tokens_per_s=args.batch / t,
                   speedup_vs_sparsify=(ref / t) if ref else None, times_floor=(t / fl) if fl else None,
                   n=len(times[n]), faulted_mb_per_step=faults[n] * PAGE / 2 ** 20 / len(times[n]))
        rows.append(row)
        vs = f"{row['speedup_vs_sparsify']:.2f}x" if ref else "-"
        xf = f"{row['times_floor']:.2f}" if fl else "-"
        print(f"{n:<20}{row['median_ms']:>11.1f}{row['min_ms']:>9.1f}{row['tokens_per_s']:>12.0f}{vs:>13}{xf:>9}"
              f"{row['faulted_mb_per_step']:>17.0f}")
    for n, why in skipped.items():
        print(f"{n:<20} skipped: {why}")
    return dict(dead_frac=dead_frac, n_dead=n_dead, rows=rows, raw_seconds=times, skipped=skipped)


if __name__ == "__main__":
    main()
