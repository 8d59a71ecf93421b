"""Whole SAE-training pipelines side by side: ours, SAELens' runner, sparsify's Trainer, the forward alone.

Each implementation trains a TopK SAE of the same shape (d_sae latents, k) on the same layer of the
same randomly initialised model (one shape, built from its config: no download), over the same
number of tokens, at the same tokens per SAE step:

    ours      shared.training.trainer.train: forward stopped after the layer, shuffled activation blocks, TopK + AuxK
    saelens   sae_lens.LanguageModelSAETrainingRunner (TopK) on the same Hugging Face model through
              its HookedProxyLM (SAELens' documented path for a transformers model: the model stays
              the very same module), forward stopped after the hook as SAELens does
    sparsify  sparsify.Trainer with layers=[L] (one SAE; its forward runs every block and the LM head:
              it trains inside a forward hook and has no early stop)
    floor     the forward to the layer alone under inference_mode, on the same token batches: the
              time no trainer can beat

Every (implementation, round) runs in its own child process, so each peak memory is its own and no
allocator state carries over; the rounds interleave the implementations (the starting one rotates),
and the table reports the median over rounds. Tokens/s counts *trained* tokens (ours drops each
context's BOS; the peers train every token) and *forwarded* tokens; `x floor` is the wall time per
forwarded token over the floor's (1.00 = as fast as the forward alone). Time counts the training
call only (model build and data set-up excluded, reported as set-up seconds).

    python bench/whole_pipeline.py                       # the CPU configuration (a few minutes on 2 cores)
    python bench/whole_pipeline.py --config tier1 --device cuda --json out.json   # Gemma-2-2B shape, L12

Peers come from PyPI at the versions bench/README.md names, in their own venv (`.venv-bench`).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("floor", "ours", "saelens", "sparsify")


@dataclass(frozen=True)
class Setup:
    """One comparison: the model shape, the layer, the SAE and the token budget every implementation gets."""

    shape: str  # a key of SHAPES
    layer: int
    d_sae: int
    k: int
    context: int
    model_batch: int  # contexts per forward (SAELens store_batch_size_prompts; sparsify batch_size is
    #                   batch_tokens / context: it steps once per forward)
    batch_tokens: int  # tokens per SAE step
    tokens: int  # tokens each implementation trains on (rounded down to whole forwards)


CONFIGS = {
    # A GPT-2-shaped model a 2-core CPU trains in about a minute per implementation.
    "cpu": Setup("gpt2-6l", layer=3, d_sae=8192, k=32, context=256, model_batch=16, batch_tokens=4096,
                 tokens=327_680),
    # Tier 1 on a GPU: Gemma-2-2B's real shape, layer 12, 16k latents, k 64 (notebook 01's recipe).
    "tier1": Setup("gemma-2-2b", layer=12, d_sae=16384, k=64, context=1024, model_batch=8, batch_tokens=4096,
                   tokens=8_388_608),
    # Tier 2 on a GPU: the hybrid Qwen3.5-4B's real shape, layer 18, 40k latents, k 128 (notebook 02).
    "tier2": Setup("qwen3.5-4b", layer=18, d_sae=40960, k=128, context=1024, model_batch=4, batch_tokens=4096,
                   tokens=4_194_304),
}


# ------------------------------------------------------------------------------------------ the model

def build_model(setup: Setup, device: str):
    """The model and tokenizer every implementation shares the shape of (random weights, seed 0)."""
    import torch

    sys.path.insert(0, str(ROOT))
    if setup.shape == "gpt2-6l":
        from transformers import GPT2Config, GPT2LMHeadModel

        from shared.model.tiny import byte_tokenizer

        tok = byte_tokenizer()
        cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=512, n_layer=6, n_head=8,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        model = GPT2LMHeadModel(cfg).to(device)
    else:
        sys.path.insert(0, str(ROOT / "bench"))
        from train_loop import shaped_model

        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model, tok = shaped_model(setup.shape, device, dtype)
    return model.eval().requires_grad_(False), tok


def token_rows(setup: Setup, tok, extra_rows: int = 0):
    """The contexts every implementation reads: the built-in synthetic corpus packed as our trainer packs it
    (`extra_rows` more for a pipeline that reads ahead of what it trains on)."""
    import torch

    from shared.data import packing, sources

    n_rows = setup.tokens // setup.context + extra_rows
    blocks, have = [], 0
    for block in packing.pack(sources.text_stream("synthetic"), tok, setup.context):
        blocks.append(block)
        have += len(block)
        if have >= n_rows:
            break
    return torch.cat(blocks)[:n_rows]


# ------------------------------------------------------------------------------ one implementation

def run_floor(setup: Setup, model, tok, device: str) -> dict:
    import torch

    from shared.model import capture

    rows = token_rows(setup, tok).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(rows), setup.model_batch):
            capture.capture_residuals(model, rows[i:i + setup.model_batch], [setup.layer])
    sync()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "forwarded_tokens": rows.numel(), "trained_tokens": 0}


def run_forward_all(setup: Setup, model, tok, device: str) -> dict:
    """The whole model's forward (every block and the LM head) on the same rows: what sparsify runs a step
    before its SAE step (it trains inside a forward hook and does not stop at the layer)."""
    import torch

    rows = token_rows(setup, tok).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(rows), setup.model_batch):
            model(input_ids=rows[i:i + setup.model_batch], use_cache=False)
    sync()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "forwarded_tokens": rows.numel(), "trained_tokens": 0}


def run_ours(setup: Setup, model, tok, device: str) -> dict:
    from shared.saes.topk import TopKConfig
    from shared.training.config import TrainConfig
    from shared.training.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model_id="bench", layers=(setup.layer,), dataset=("synthetic",), context_len=setup.context,
                          sae=TopKConfig(d_sae=setup.d_sae, k=setup.k), total_tokens=setup.tokens,
                          batch_tokens=setup.batch_tokens, model_batch_size=setup.model_batch, block_batches=8,
                          warmup_steps=10, checkpoint_every_tokens=10**15, checkpoint_dir=tmp, log_every=10**9,
                          metrics_path=str(Path(tmp) / "metrics.jsonl"))
        start = time.perf_counter()
        result = train(cfg, model, tok, progress=False)
        wall = time.perf_counter() - start
    forwarded = -(-result.tokens // (setup.context - 1)) * setup.context  # contexts read (each drops its BOS)
    return {"wall_s": wall, "forwarded_tokens": forwarded, "trained_tokens": result.tokens,
            "settings": {"block_batches": 8, "sae_autocast": cfg.sae_autocast}}


def saelens_settings(device: str, compiled: bool) -> dict:
    """SAELens' speed settings: autocast for the LM and the SAE on a GPU (bf16), torch.compile of both
    when asked (its `compile_llm` / `compile_sae`), the LM's next batches prefetched on a thread."""
    gpu = device.startswith("cuda")
    return dict(autocast=gpu, autocast_lm=gpu, compile_llm=compiled, compile_sae=compiled,
                prefetch_llm_batches=os.environ.get("BENCH_SAELENS_PREFETCH", "1") == "1")


def run_saelens(setup: Setup, model, tok, device: str, compiled: bool = False) -> dict:
    import datasets
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
    from sae_lens.load_model import HookedProxyLM
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    from shared.model import layout

    hook = f"{layout.layers_path(model)}.{setup.layer}"
    n_train = setup.tokens // setup.context * setup.context
    # its mixing buffer holds n_batches_in_buffer x context tokens (default 20) and must hold a batch; it
    # reads ahead of what it trains on, so the data set carries that many rows more
    buffer_forwards = max(20, -(-2 * setup.batch_tokens // setup.context))
    rows = token_rows(setup, tok, extra_rows=buffer_forwards + 2 * setup.model_batch)
    dataset = datasets.Dataset.from_dict({"input_ids": rows.tolist()})
    settings = saelens_settings(device, compiled)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = LanguageModelSAERunnerConfig(
            sae=TopKTrainingSAEConfig(d_in=layout.d_model(model), d_sae=setup.d_sae, k=setup.k),
            model_name="bench", model_class_name="AutoModelForCausalLM", hook_name=hook,
            dataset_path="bench", is_dataset_tokenized=True, streaming=False, context_size=setup.context,
            training_tokens=n_train, train_batch_size_tokens=setup.batch_tokens,
            store_batch_size_prompts=setup.model_batch, n_batches_in_buffer=buffer_forwards, device=device,
            lr_warm_up_steps=10, logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0,
            checkpoint_path=str(Path(tmp) / "ckpt"), output_path=None, verbose=False, **settings)
        t0 = time.perf_counter()
        runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset,
                                                override_model=HookedProxyLM(model, tok, hook_names=[hook]))
        setup_s = time.perf_counter() - t0
        start = time.perf_counter()
        runner.run()
        wall = time.perf_counter() - start
    return {"wall_s": wall, "setup_s": setup_s, "forwarded_tokens": n_train, "trained_tokens": n_train,
            "settings": {**settings, "hook": hook, "n_batches_in_buffer": buffer_forwards}}


def run_sparsify(setup: Setup, model, tok, device: str) -> dict:
    import datasets
    from sparsify import SaeConfig, Trainer, TrainConfig

    rows = token_rows(setup, tok)
    dataset = datasets.Dataset.from_dict({"input_ids": rows.tolist()}).with_format("torch")
    per_step = setup.batch_tokens // setup.context  # sparsify steps once per forward of batch_size sequences
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(SaeConfig(num_latents=setup.d_sae, k=setup.k), batch_size=per_step, layers=[setup.layer],
                          log_to_wandb=False, save_every=10**9, save_dir=tmp)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, dataset, model)
        setup_s = time.perf_counter() - t0
        start = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - start
    return {"wall_s": wall, "setup_s": setup_s, "forwarded_tokens": rows.numel(), "trained_tokens": rows.numel(),
            "settings": {"batch_size": per_step, "optimizer": cfg.optimizer, "auxk_alpha": cfg.auxk_alpha}}


def run_ours_profiled(setup: Setup, model, tok, device: str) -> dict:
    """Our trainer under torch.profiler: where the wall time goes (top ops by device and host time, and
    how much of the wall the device was busy), written to $BENCH_PROFILE (default profile-ours.txt)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from shared.model import capture
    from shared.training import buffer, trainer

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    phases = {"phase: forward": (capture, "capture_residuals"), "phase: sae step": (trainer, "sae_step"),
              "phase: block (forwards, store, shuffle)": (buffer.ActivationBlocks, "next_block")}
    originals = {name: getattr(owner, attr) for name, (owner, attr) in phases.items()}
    for name, (owner, attr) in phases.items():
        setattr(owner, attr, _ranged(name, originals[name]))
    try:
        with profile(activities=acts) as prof:
            out = run_ours(setup, model, tok, device)
    finally:
        for name, (owner, attr) in phases.items():
            setattr(owner, attr, originals[name])
    events = prof.key_averages()
    cuda = device.startswith("cuda")
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    busy_us = sum(getattr(e, "self_device_time_total", 0) for e in events)
    ranges = [e for e in events if e.key.startswith("phase: ")]
    out["phases_s"] = {e.key[7:]: {"host_s": round(e.cpu_time_total / 1e6, 3), "calls": e.count,
                                   **({"device_s": round(e.device_time_total / 1e6, 3)} if cuda else {})}
                       for e in ranges}
    lines = [f"wall {out['wall_s']:.2f} s under the profiler; device time summed over ops "
             f"{busy_us / 1e6:.2f} s (ops and their kernels both counted: an upper bound on busy time)",
             "phases (host time inclusive; 'block' holds the forwards; device time of the kernels each launched):",
             *(f"  {name:42} {json.dumps(v)}" for name, v in out["phases_s"].items()),
             events.table(sort_by=key, row_limit=40)]
    Path(os.environ.get("BENCH_PROFILE", "profile-ours.txt")).write_text("\n".join(lines))
    return out


def _ranged(name: str, fn):
    """fn inside a profiler range called `name` (a phase of ours-profiled's table)."""
    import functools

    import torch

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.profiler.record_function(name):
            return fn(*args, **kwargs)
    return wrapper


LEVERS = {
    "flex": "attention by torch's flex_attention (keeps Gemma-2's logit soft-cap, which sdpa drops)",
    "sdpa": "attention by torch's scaled_dot_product_attention (not for Gemma-2: no soft-cap)",
    "compile": "torch.compile of each decoder block (regional: the hooks between blocks stay eager)",
    "syncfree": "the SAE step's AuxK without a host sync (TopKSAE.sync_free_aux: a masked top-k over all latents)",
}


def apply_levers(model, levers: list[str]) -> None:
    """Speed levers on the forward or our step, named after '+' in an implementation (e.g. ours+flex+compile),
    so a GPU session measures each against the same implementation without it."""
    from shared.model import layout
    from shared.saes.topk import TopKSAE

    for lever in levers:
        if lever in ("flex", "sdpa"):
            model.set_attn_implementation("flex_attention" if lever == "flex" else "sdpa")
        elif lever == "compile":
            for block in layout.decoder_layers(model):
                block.compile()
        elif lever == "syncfree":
            TopKSAE.sync_free_aux = True
        else:
            raise SystemExit(f"unknown lever {lever!r}: choose from {', '.join(LEVERS)}")


def child(impl: str, setup: Setup, device: str) -> dict:
    """Build the model, run one implementation, and measure its peak memory (in this process only)."""
    import torch

    if not device.startswith("cuda"):
        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    impl, *levers = impl.split("+")
    t0 = time.perf_counter()
    model, tok = build_model(setup, device)
    apply_levers(model, levers)
    build_s = time.perf_counter() - t0
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_start = _rss_gib()
    load_before = os.getloadavg()[0]  # the machine's 1-minute load: a shared box's other work shows here
    runner = {"floor": run_floor, "forward-all": run_forward_all, "ours": run_ours, "saelens": run_saelens, "sparsify": run_sparsify,
              "saelens-compiled": lambda *a: run_saelens(*a, compiled=True), "ours-profiled": run_ours_profiled}[impl]
    out = runner(setup, model, tok, device)
    out.update(impl="+".join([impl, *levers]), levers=levers, build_s=build_s, torch=torch.__version__,
               peak_rss_gib=_peak_rss_gib(), rss_at_start_gib=rss_start,
               load_avg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
               peak_gpu_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None)
    return out


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ------------------------------------------------------------------------------------------ the table

def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("torch", "transformers", "sae-lens", "eai-sparsify", "transformer-lens", "datasets"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found


def loaded(run: dict, max_load: float) -> bool:
    """Whether other work shared the machine during a run: its 1-minute load average, before or after,
    above max_load (a run's own threads count too, so max_load sits above the cores it uses)."""
    return max(run.get("load_avg_1min") or [0.0]) > max_load


def summarise(runs: list[dict], max_load: float = float("inf")) -> dict:
    """Median per implementation over the rounds, each next to the floor. Rounds run under a load
    above max_load are left out of an implementation's median when it has a round that was not
    (their number is reported as `loaded_rounds_left_out`)."""
    table = {}
    for impl in dict.fromkeys(r["impl"] for r in runs):
        mine = [r for r in runs if r["impl"] == impl and "error" not in r]
        quiet = [r for r in mine if not loaded(r, max_load)]
        left_out = len(mine) - len(quiet) if quiet else 0
        mine = quiet or mine
        if not mine:
            table[impl] = {"error": next(r["error"] for r in runs if r["impl"] == impl)}
            continue
        fwd = statistics.median(r["forwarded_tokens"] / r["wall_s"] for r in mine)
        row = {"rounds": len(mine), "forwarded_tokens_per_s": round(fwd),
               "wall_s": round(statistics.median(r["wall_s"] for r in mine), 2),
               "peak_rss_gib": round(max(r["peak_rss_gib"] for r in mine), 2)}
        if mine[0]["trained_tokens"]:
            row["trained_tokens_per_s"] = round(statistics.median(r["trained_tokens"] / r["wall_s"] for r in mine))
        if mine[0].get("peak_gpu_gib") is not None:
            row["peak_gpu_gib"] = round(max(r["peak_gpu_gib"] for r in mine), 2)
        if "setup_s" in mine[0]:
            row["setup_s"] = round(statistics.median(r["setup_s"] for r in mine), 2)
        if "settings" in mine[0]:
            row["settings"] = mine[0]["settings"]
        if left_out:
            row["loaded_rounds_left_out"] = left_out
        table[impl] = row
    floor = table.get("floor", {}).get("forwarded_tokens_per_s")
    for impl, row in table.items():
        if floor and "forwarded_tokens_per_s" in row:
            row["x_floor"] = round(floor / row["forwarded_tokens_per_s"], 2)
    ours = table.get("ours", {}).get("trained_tokens_per_s")
    peers = [table[p]["trained_tokens_per_s"] for p in table if p.startswith(("saelens", "sparsify"))
             and "trained_tokens_per_s" in table[p]]
    if ours and peers:
        table["ours_vs_fastest_peer"] = round(ours / max(peers), 2)
    return table


def print_table(table: dict) -> None:
    print(f"{'impl':18} {'trained tok/s':>14} {'fwd tok/s':>10} {'x floor':>8} {'wall s':>8} {'peak GiB':>9}")
    for impl, row in table.items():
        if not isinstance(row, dict):
            continue
        if "error" in row:
            print(f"{impl:18} failed: {row['error']}")
            continue
        peak = row.get("peak_gpu_gib", row["peak_rss_gib"])
        print(f"{impl:18} {row.get('trained_tokens_per_s', '-'):>14} {row['forwarded_tokens_per_s']:>10} "
              f"{row.get('x_floor', '-'):>8} {row['wall_s']:>8} {peak:>9}"
              + (f"  ({row['loaded_rounds_left_out']} loaded round(s) left out)" if "loaded_rounds_left_out" in row
                 else ""))
    if "ours_vs_fastest_peer" in table:
        print(f"ours / fastest peer (trained tokens/s): {table['ours_vs_fastest_peer']}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="cpu", choices=sorted(CONFIGS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--impls", default=",".join(IMPLS),
                   help=f"comma list of {', '.join(IMPLS)}, saelens-compiled (torch.compile of the LM and the "
                        "SAE), ours-profiled (ours under torch.profiler, table in $BENCH_PROFILE); any of them with "
                        "+lever for a speed lever on the forward: " + "; ".join(f"{k}: {v}" for k, v in LEVERS.items()))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tokens", type=int, default=None, help="override the configuration's token budget")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one child may take")
    p.add_argument("--json", default=None)
    p.add_argument("--max-load", type=float, default=(os.cpu_count() or 1) + 2,
                   help="leave out of the medians the rounds run while the 1-minute load average was above this "
                        "(default: cores + 2); their runs stay in the JSON")
    p.add_argument("--summarise", metavar="JSON", default=None,
                   help="print the table of an earlier --json file again (under this --max-load) and stop")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.summarise:
        print_table(summarise(json.loads(Path(args.summarise).read_text())["runs"], args.max_load))
        return
    setup = CONFIGS[args.config] if args.tokens is None else replace(CONFIGS[args.config], tokens=args.tokens)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, setup, args.device)), flush=True)
        return
    impls = args.impls.split(",")
    runs = []
    for r in range(args.rounds):
        order = impls[r % len(impls):] + impls[:r % len(impls)]  # rotate who goes first
        for impl in order:
            cmd = [sys.executable, __file__, "--child", impl, "--config", args.config, "--device", args.device]
            if args.tokens is not None:
                cmd += ["--tokens", str(args.tokens)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
                line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                errors = [x for x in done.stderr.splitlines() if "Error" in x or "error" in x] or ["no output"]
                run = json.loads(line[-1][7:]) if line else {"impl": impl, "error": errors[-1][:300]}
            except subprocess.TimeoutExpired:
                run = {"impl": impl, "error": f"timed out after {args.timeout:.0f} s"}
            run["round"] = r
            runs.append(run)
            print(f"round {r} {impl}: " + (f"{run['wall_s']:.1f} s" if "wall_s" in run else run["error"]), flush=True)
            if args.json:  # after every run: a caller's time limit that cuts the bench keeps what it measured
                write_json(args, setup, runs)
    print_table(summarise(runs, args.max_load))


def write_json(args, setup: Setup, runs: list[dict]) -> None:
    """The runs so far and their table, as --json names."""
    Path(args.json).write_text(json.dumps({"config": args.config, "setup": asdict(setup), "device": args.device,
                                           "versions": versions(), "max_load": args.max_load,
                                           "table": summarise(runs, args.max_load), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
