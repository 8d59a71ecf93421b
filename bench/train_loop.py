"""Tokens/s and peak memory of the whole trainer (model forward + capture + shuffled blocks + SAE
steps + logging), and (--fit-check) a GPU notebook's default training run on the memory of its GPU.

The model is a randomly initialised transformer built from the tier model's real config (shipped in
tests/data/models: e.g. Gemma-2-2B, d_model 2304, 26 blocks, its 256k vocabulary) fed by a byte
tokenizer: no download, so it runs on a machine without network. Only the blocks up to the hooked
layer run (the capture stops the forward there), so the numbers are the tier recipe's real compute.

    python bench/train_loop.py --device cuda --tokens 4000000
    python bench/train_loop.py --device cuda --fit-check 01_hobbyist_gemma2_2b_colab --json fit.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.model.tiny import byte_tokenizer  # noqa: E402
from shared.saes.topk import TopKConfig  # noqa: E402
from shared.training.config import TrainConfig  # noqa: E402
from shared.training.trainer import train  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "models"

# The tiers' models by their short names: each is built from its real config, shipped in
# tests/data/models/<org>__<name>/config.json (the same file tests/test_planning.py checks shared/planning/models.py
# against), and "toy", a small Llama for a quick CPU check of the script itself.
SHAPES = {
    "gemma-2-2b": "google/gemma-2-2b",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "mistral-7b": "mistralai/Mistral-7B-v0.3",
    "phi-3-mini": "microsoft/Phi-3-mini-4k-instruct",
    "qwen3.5-4b": "Qwen/Qwen3.5-4B",
    "qwen3.6-27b": "Qwen/Qwen3.6-27B",
    "toy": None,
}
TOY = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
       "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 32000}


def model_config(model_id: str | None):
    """A model's config from its shipped config.json (None: the toy)."""
    from transformers import AutoConfig

    fields = TOY if model_id is None else json.loads((MODELS_DIR / model_id.replace("/", "__") / "config.json").read_text())
    return AutoConfig.for_model(**fields)


def shaped_model(name: str, device: str, dtype: torch.dtype):
    """A randomly initialised model built from the named model's real config on `device` (the real
    vocabulary size, so the embedding weighs what it does in the real model; the byte tokenizer only
    uses its first ids). `name`: a key of SHAPES or a Hub id with a shipped config."""
    from transformers import AutoModelForCausalLM

    cfg = model_config(SHAPES.get(name, name))
    tok = byte_tokenizer()
    text = cfg.get_text_config()
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(text, attr, getattr(tok, attr))
    if text.model_type == "gemma2":
        cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: a 27B model never passes through host memory
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval().requires_grad_(False), tok


def predicted(name: str, layers: tuple[int, ...], d_sae: int, model_batch: int, batch_tokens: int,
              buffer_tokens: int) -> dict | None:
    """What shared/planning predicts for this run on this GPU: peak GiB and tokens/s (None on CPU)."""
    from shared.planning import gpus, memory, models, throughput

    model_id = SHAPES[name]
    if model_id is None or not torch.cuda.is_available():
        return None
    m, g = models.MODELS[model_id], gpus.gpu_class(gpus.classify_gpu_name(torch.cuda.get_device_name(0)))
    mem = memory.memory_breakdown(m, g, layers, d_sae, fwd_batch_seqs=model_batch, batch_tokens=batch_tokens,
                                  buffer_tokens=buffer_tokens)
    return {"gpu_class": g.name, "peak_gib": round(mem["gpu0"]["total"], 2),
            "tokens_per_s": round(throughput.tokens_per_second(m, g, layers, d_sae))}


T0 = time.perf_counter()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gemma-2-2b", choices=sorted(SHAPES))
    p.add_argument("--layers", default=None,
                   help="hooked layers, e.g. 11,31,55 (one SAE each, one forward); default the tier's layers "
                        "in shared/planning/models.py (12 of Gemma-2-2B's 26), else the middle one")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--tokens", type=int, default=4_000_000)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--model-batch", type=int, default=8)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--block-batches", type=int, default=8)
    p.add_argument("--no-autocast", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--log-every", type=int, default=16,
                   help="SAE steps per logged window (a multiple of a block's steps keeps windows alike)")
    p.add_argument("--dense-kernels", action="store_true",
                   help="train with the SAEs' dense tensor-core path instead of the sparse kernels")
    p.add_argument("--seconds", type=float, default=None,
                   help="wall-clock budget: when it runs out, summarise the windows logged so far and exit "
                        "(for a lent GPU's few minutes; the summary says stopped_early)")
    p.add_argument("--fit-check", default=None, metavar="NOTEBOOK",
                   help="a catalog notebook's training run (its default model from its real config, random weights, "
                        "its default parameters) for --steps SAE steps under the memory of the GPU it names, "
                        "the peak next to shared/planning's prediction (see fit_check)")
    p.add_argument("--platform", default=None, help="--fit-check: the GPU class to emulate (default: the notebook's)")
    p.add_argument("--steps", type=int, default=200, help="--fit-check: SAE steps")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="--fit-check: override a notebook parameter (JSON value), e.g. for a toy dry run")
    args = p.parse_args()
    if args.fit_check:
        return fit_check(args)
    model_id = SHAPES[args.model]
    if args.layers:
        layers = tuple(int(x) for x in args.layers.split(","))
    elif model_id in ("google/gemma-2-2b", None):
        layers = (12,) if model_id else (TOY["num_hidden_layers"] // 2,)
    else:
        from shared.planning import models

        layers = models.MODELS[model_id].default_layers()

    if args.dense_kernels:
        from shared.saes.base import SparseAutoencoder

        SparseAutoencoder.sparse_kernels = False
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    cuda = args.device.startswith("cuda")
    t_build = time.perf_counter()
    model, tok = shaped_model(args.model, args.device, dtype)
    build_s = time.perf_counter() - t_build

    def summary(history: list[dict], wall: float, stopped_early: bool) -> dict:
        rates = [e["tokens_per_s"] for e in history[1:]]  # the first window includes warm-up
        window = args.log_every * args.batch_tokens
        return {
            "model_shape": args.model, "layers": list(layers), "device": args.device,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
            "transformers": transformers.__version__,
            "linear_attention_kernel": linear_attention_kernel(model),
            "d_sae": args.d_sae, "k": args.k, "context": args.context, "model_batch": args.model_batch,
            "batch_tokens": args.batch_tokens, "block_batches": args.block_batches,
            "tokens": history[-1]["tokens"] if history else 0, "windows": len(history),
            "model_build_s": round(build_s, 1), "wall_s": round(wall, 1), "stopped_early": stopped_early,
            "tokens_per_s": round(len(rates) * window / sum(window / r for r in rates)) if rates else None,
            "tokens_per_s_median": round(statistics.median(rates)) if rates else None,
            "tokens_per_s_windows": [round(r) for r in rates],
            "final_fvu": {layer: history[-1][f"L{layer}/fvu"] for layer in layers} if history else None,
            "sae_autocast": not args.no_autocast,
            "sae_kernels": "dense" if args.dense_kernels else "auto (SparseAutoencoder.use_sparse_kernels)",
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None,
            "predicted": predicted(args.model, layers, args.d_sae, args.model_batch, args.batch_tokens,
                                   args.block_batches * args.model_batch * args.context + args.batch_tokens),
        }

    def write(result: dict) -> None:
        text = json.dumps(result, indent=1)
        print(text, flush=True)
        if args.json:
            Path(args.json).write_text(text)

    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        cfg = TrainConfig(model_id=f"shaped:{args.model}", layers=layers,
                          sae=TopKConfig(d_sae=args.d_sae, k=args.k),
                          total_tokens=args.tokens, batch_tokens=args.batch_tokens, context_len=args.context,
                          model_batch_size=args.model_batch, block_batches=args.block_batches, warmup_steps=100,
                          checkpoint_every_tokens=10**12, checkpoint_dir=tmp, log_every=args.log_every,
                          sae_autocast=not args.no_autocast, metrics_path=str(metrics))
        start = time.perf_counter()
        if args.seconds:  # out of time (counted from the script's start): summarise the log, leave at once
            def out_of_time():
                from shared.training.trainer import load_metrics

                try:
                    write(summary(load_metrics(metrics), time.perf_counter() - start, True))
                finally:
                    os._exit(0)

            timer = threading.Timer(max(1.0, args.seconds - (time.perf_counter() - T0)), out_of_time)
            timer.daemon = True
            timer.start()
        result = train(cfg, model, tok, progress=False)
        wall = time.perf_counter() - start
    write(summary(result.history, wall, False))


TRAINING_NOTEBOOKS = ("01_", "02_", "03_", "08_", "09_", "10_", "12_", "17_")  # what --fit-check can run


def notebook_parameters(notebook: str, sets: list[str]) -> dict:
    """A catalog notebook's default parameters (its source's parameters cell and the catalog's overrides,
    as tests/test_planning.py reads them), with NAME=VALUE overrides."""
    sys.path.insert(0, str(MODELS_DIR.parents[2]))
    import build_notebooks as bn

    entry = {e.id: e for e in bn.load_catalog(MODELS_DIR.parents[2])}[notebook]
    source = (MODELS_DIR.parents[2] / "notebooks_src" / entry.source).read_text()
    params = bn.parameter_defaults(source.split('# %% tags=["parameters"]')[1].split("# %%")[0])
    params.update(entry.parameters or {})
    for item in sets:
        name, _, value = item.partition("=")
        try:
            params[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[name.strip()] = value
    params["_accelerator"] = entry.accelerator
    return params


def emulate_memory(gib: float, device: str) -> dict:
    """Make this GPU look like one with `gib` GiB (what torch reports on the platform): torch's allocator is
    capped there (torch.cuda.set_per_process_memory_fraction, less what this process already holds outside
    it: the CUDA context), and the trainer's free / total memory read that GPU's. On the CPU (a dry run of
    this script) only the trainer's view changes."""
    from shared.training import buffer

    total = gib * 2**30
    buffer.total_memory_bytes = lambda d: int(total)
    if device.startswith("cuda"):
        free, physical = torch.cuda.mem_get_info()
        outside = physical - free - torch.cuda.memory_reserved()
        cap = total - outside
        if cap > physical:
            raise SystemExit(f"this GPU has {physical / 2**30:.1f} GiB, fewer than the {gib:g} GiB to emulate")
        torch.cuda.set_per_process_memory_fraction(cap / physical)
        buffer.free_memory_bytes = lambda d: int(cap - torch.cuda.memory_reserved())
        return {"cap_gib": round(cap / 2**30, 2), "outside_torch_gib": round(outside / 2**30, 2)}
    buffer.free_memory_bytes = lambda d: int(total)
    return {"cap_gib": None, "outside_torch_gib": None}


def fit_check(args) -> None:
    """Issue 19: a GPU notebook's default training run at its real size on the memory of the GPU it names.

    The notebook's default model is built from its shipped config with random weights (fp16 where the
    platform has no bf16, as on a T4, whose SAE step then runs in fp32), its default parameters drive
    the trainer (17: with its crosscoder) for --steps SAE steps on the synthetic corpus, torch's allocator is
    capped at the platform's memory (emulate_memory), and the JSON holds the peak (allocated, reserved,
    plus what this process holds outside torch) next to shared/planning's prediction of the training
    phase. A two-GPU platform (Kaggle's 2xT4) runs on one GPU capped at both GPUs' memory: its measured
    peak is compared with the predicted sum of the two GPUs (less one CUDA context)."""
    import tempfile

    from shared.planning import gpus, memory, models, workloads
    from shared.recipes.tier import TIER_PARAMETERS
    from shared.saes import crosscoder
    from shared.training import sweep

    notebook = args.fit_check
    if not notebook.startswith(TRAINING_NOTEBOOKS):
        raise SystemExit(f"--fit-check {notebook}: runs the training notebooks ({', '.join(TRAINING_NOTEBOOKS)}); "
                         "the others' memory is predicted only")
    P = notebook_parameters(notebook, args.set)
    g = gpus.gpu_class(args.platform or gpus.accelerator_classes(P.pop("_accelerator"))[0])
    P.pop("_accelerator", None)
    cuda = args.device.startswith("cuda")
    shape = args.model if args.model == "toy" else P["MODEL_ID"]
    dtype = (torch.bfloat16 if g.bf16 else torch.float16) if cuda else torch.float32
    emulated = emulate_memory(g.vram_gb * g.n_gpus, args.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_build = time.perf_counter()
    model, tok = shaped_model(shape, args.device, dtype)
    build_s = time.perf_counter() - t_build
    layers = P.get("LAYER", P.get("LAYERS"))
    layers = [layers] if isinstance(layers, int) else list(layers)
    steps = args.steps
    common = dict(total_tokens=steps * P["BATCH_TOKENS"], batch_tokens=P["BATCH_TOKENS"], dataset="synthetic",
                  context_len=P["CONTEXT_LEN"], model_batch_size=P["MODEL_BATCH_SIZE"], block_batches=P["BLOCK_BATCHES"])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sae_cfg = dict(sae=TopKConfig(d_sae=P["D_SAE"], k=P["K"]))
        if notebook.startswith("12_"):
            sae_cfg = dict(variants=sweep.sweep_variants(P["ARCHITECTURES"], P["K_VALUES"], P["D_SAE"]))
        if notebook.startswith("17_"):  # one crosscoder over LAYERS, through the same trainer
            sae_cfg = dict(sae=crosscoder.CrosscoderConfig(layers=tuple(layers), d_sae=P["D_SAE"], k=P["K"],
                                                           architecture=P["SPARSITY"],
                                                           l1_coefficient=P["L1_COEFFICIENT"]))
        cfg = TrainConfig(model_id=f"fit-check:{shape}", layers=tuple(layers), warmup_steps=10,
                          checkpoint_every_tokens=10**12, checkpoint_dir=tmp, log_every=max(1, steps // 10),
                          sae_autocast=g.bf16, metrics_path=str(Path(tmp) / "metrics.jsonl"), **sae_cfg, **common)
        train(cfg, model, tok, progress=False)
    wall = time.perf_counter() - start
    if args.model == "toy":  # the dry run: the prediction for the toy's own shape
        n_params = sum(p.numel() for p in model.parameters())
        c = model.config
        models.SHAPES[P["MODEL_ID"]] = models.ModelShape(P["MODEL_ID"], n_params, c.num_hidden_layers, c.hidden_size,
                                                         c.vocab_size, bool(c.tie_word_embeddings), c.num_attention_heads,
                                                         c.num_key_value_heads * (c.hidden_size // c.num_attention_heads))
    est = workloads.notebook_estimate(notebook, {**P, "LAYER": layers} if "LAYER" in P else P, g.name)
    phase = est.phases["train"]
    predicted = sum(part["total"] for part in phase.values()) - memory.CUDA_CONTEXT_GB * (len(phase) - 1)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    reserved = torch.cuda.max_memory_reserved() / 2**30 if cuda else None
    outside = emulated["outside_torch_gib"]
    measured = reserved + outside if cuda else None
    result = {
        "notebook": notebook, "platform": g.name, "emulated_on": torch.cuda.get_device_name(0) if cuda else "cpu",
        "single_gpu_emulation_of": g.n_gpus if g.n_gpus > 1 else None, "model": shape, "dtype": str(dtype),
        "steps": steps, "parameters": {k: v for k, v in P.items() if k in TIER_PARAMETERS or k in (
            "ARCHITECTURES", "K_VALUES", "LAYERS", "SPARSITY")},
        "model_build_s": round(build_s, 1), "train_wall_s": round(wall, 1), **emulated,
        "peak_allocated_gib": None if peak is None else round(peak, 2),
        "peak_reserved_gib": None if reserved is None else round(reserved, 2),
        "measured_gib": None if measured is None else round(measured, 2),
        "predicted_gib": round(predicted, 2),
        "predicted_parts": {dev: {k: round(v, 3) for k, v in part.items()} for dev, part in phase.items()},
        "usable_gib": round(est.usable_gib * g.n_gpus, 2),
        "measured_over_predicted": None if measured is None else round(measured / predicted, 3),
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    text = json.dumps(result, indent=1)
    print(text, flush=True)
    if args.json:
        Path(args.json).write_text(text)


def linear_attention_kernel(model) -> dict | None:
    """Which gated-delta-rule code the model's linear-attention blocks call (None: no such blocks)."""
    import importlib.util

    for module in model.modules():
        if "DeltaNet" in type(module).__name__:
            fns = {name: f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__name__', type(fn).__name__)}"
                   for name in dir(module) if "delta_rule" in name or "conv1d_fn" in name
                   for fn in [getattr(module, name, None)] if callable(fn)}
            return {"block": type(module).__name__, "functions": fns,
                    "fla_installed": importlib.util.find_spec("fla") is not None,
                    "kernels_installed": importlib.util.find_spec("kernels") is not None}
    return None


if __name__ == "__main__":
    main()
