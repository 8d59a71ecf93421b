"""Tokens/s of the whole trainer (model forward + capture + shuffled blocks + SAE steps + logging).

The model is a randomly initialised transformer with the real shape of the tier's model (e.g.
Gemma-2-2B: d_model 2304, 26 blocks) but a byte vocabulary, built from its config: no download, so
it runs on a machine without network. Only the blocks up to the hooked layer run (the capture stops
the forward there), so the numbers are the tier recipe's real compute minus the embedding lookup.

    python bench/train_loop.py --device cuda --tokens 4000000
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

from shared.models import byte_tokenizer  # noqa: E402
from shared.sae_topk import TopKConfig  # noqa: E402
from shared.train import TrainConfig, train  # noqa: E402

def _qwen3_5_kinds(n: int) -> list[str]:
    """Qwen3.5 / 3.6 layout: three Gated-DeltaNet (linear-attention) blocks, then one full-attention block."""
    return ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(n)]


# The real shapes (config fields) of the tiers' models, and the tiers.py entry whose prediction they check.
SHAPES = {
    "gemma-2-2b": ("gemma2", "google/gemma-2-2b", dict(
        hidden_size=2304, num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
        intermediate_size=9216, head_dim=256, vocab_size=256000)),
    "llama-3.1-8b": ("llama", "meta-llama/Llama-3.1-8B", dict(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, vocab_size=128256)),
    "qwen3.5-4b": ("qwen3_5_text", "Qwen/Qwen3.5-4B", dict(
        hidden_size=2560, num_hidden_layers=32, num_attention_heads=16, num_key_value_heads=4, head_dim=256,
        intermediate_size=9216, linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_conv_kernel_dim=4, layer_types=_qwen3_5_kinds(32),
        tie_word_embeddings=True, vocab_size=248320)),
    "qwen3.6-27b": ("qwen3_5_text", "Qwen/Qwen3.6-27B", dict(
        hidden_size=5120, num_hidden_layers=64, num_attention_heads=24, num_key_value_heads=4, head_dim=256,
        intermediate_size=17408, linear_num_key_heads=16, linear_num_value_heads=48, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_conv_kernel_dim=4, layer_types=_qwen3_5_kinds(64),
        tie_word_embeddings=False, vocab_size=248320)),
    "toy": ("llama", None, dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                intermediate_size=512)),  # a quick CPU check of the script itself
}


def shaped_model(name: str, device: str, dtype: torch.dtype):
    """A randomly initialised model of the named shape, built on `device` (the real vocabulary size, so
    the embedding weighs what it does in the real model; the byte tokenizer only uses its first ids)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, _, fields = SHAPES[name]
    tok = byte_tokenizer()
    fields = {"vocab_size": len(tok), **fields}
    cfg = AutoConfig.for_model(model_type, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, **fields)
    if model_type == "gemma2":
        cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: a 27B model never passes through host memory
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval().requires_grad_(False), tok


def predicted(name: str, layers: tuple[int, ...], d_sae: int, model_batch: int, batch_tokens: int,
              buffer_tokens: int) -> dict | None:
    """What shared/tiers.py predicts for this run on this GPU: peak GiB and tokens/s (None on CPU)."""
    from shared import tiers

    model_id = SHAPES[name][1]
    if model_id is None or not torch.cuda.is_available():
        return None
    m, g = tiers.MODELS[model_id], tiers.gpu_class(tiers.classify_gpu_name(torch.cuda.get_device_name(0)))
    mem = tiers.memory_breakdown(m, g, layers, d_sae, fwd_batch_seqs=model_batch, batch_tokens=batch_tokens,
                                 buffer_tokens=buffer_tokens)
    return {"gpu_class": g.name, "peak_gib": round(mem["gpu0"]["total"], 2),
            "tokens_per_s": round(tiers.tokens_per_second(m, g, layers, d_sae))}


T0 = time.perf_counter()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gemma-2-2b", choices=sorted(SHAPES))
    p.add_argument("--layers", default=None,
                   help="hooked layers, e.g. 11,31,55 (one SAE each, one forward); default the tier's layers "
                        "in shared/tiers.py (12 of Gemma-2-2B's 26), else the middle one")
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
    args = p.parse_args()
    model_type, model_id, fields = SHAPES[args.model]
    if args.layers:
        layers = tuple(int(x) for x in args.layers.split(","))
    elif args.model == "gemma-2-2b":
        layers = (12,)
    elif model_id is not None:
        from shared import tiers

        layers = tiers.MODELS[model_id].default_layers()
    else:
        layers = (fields["num_hidden_layers"] // 2,)

    if args.dense_kernels:
        from shared.sae import SparseAutoencoder

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
                from shared.train import load_metrics

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
