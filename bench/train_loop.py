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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.models import byte_tokenizer  # noqa: E402
from shared.sae_topk import TopKConfig  # noqa: E402
from shared.train import TrainConfig, train  # noqa: E402

SHAPES = {  # arch, d_model, n_layers, heads, kv heads, intermediate
    "gemma-2-2b": ("gemma2", 2304, 26, 8, 4, 9216),
    "llama-3.1-8b": ("llama", 4096, 32, 32, 8, 14336),
    "toy": ("llama", 256, 4, 4, 2, 512),  # for a quick CPU check of the script itself
}


def shaped_model(name: str, device: str, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    arch, d, n, heads, kv, inter = SHAPES[name]
    tok = byte_tokenizer()
    extra = {"head_dim": 256} if arch == "gemma2" else {}
    cfg = AutoConfig.for_model(arch, hidden_size=d, num_hidden_layers=n, num_attention_heads=heads,
                               num_key_value_heads=kv, intermediate_size=inter, vocab_size=len(tok),
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, **extra)
    if arch == "gemma2":
        cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(device).eval().requires_grad_(False)
    return model, tok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gemma-2-2b", choices=sorted(SHAPES))
    p.add_argument("--layer", type=int, default=None,
                   help="hooked layer; default the tier's layer (12 of Gemma-2-2B's 26), else the middle one")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--tokens", type=int, default=4_000_000)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--model-batch", type=int, default=8)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--no-autocast", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.layer is None:
        args.layer = 12 if args.model == "gemma-2-2b" else SHAPES[args.model][2] // 2

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model, tok = shaped_model(args.model, args.device, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model_id=f"shaped:{args.model}", layers=(args.layer,),
                          sae=TopKConfig(d_sae=args.d_sae, k=args.k),
                          total_tokens=args.tokens, batch_tokens=args.batch_tokens, context_len=args.context,
                          model_batch_size=args.model_batch, block_batches=8, warmup_steps=100,
                          checkpoint_every_tokens=10**12, checkpoint_dir=tmp, log_every=20,
                          sae_autocast=not args.no_autocast)
        start = time.perf_counter()
        result = train(cfg, model, tok, progress=False)
        wall = time.perf_counter() - start
    rates = [e["tokens_per_s"] for e in result.history[1:]]  # the first window includes warm-up
    summary = {
        "model_shape": args.model, "layer": args.layer, "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "torch": torch.__version__, "d_sae": args.d_sae, "k": args.k, "tokens": result.tokens,
        "wall_s": round(wall, 1), "tokens_per_s_median": round(statistics.median(rates)) if rates else None,
        "final_fvu": result.history[-1][f"L{args.layer}/fvu"], "sae_autocast": not args.no_autocast,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
