"""How many documents a training batch draws from: the trainer's real token stream and activation blocks
at a tier's real shapes, with and without the context shuffle window (TrainConfig.shuffle_tokens).

Each document's tokens are labelled with the document's index (a tokenizer that returns the index in
place of every token id of a document), the labels go through training.stream._token_stream (mix, packing,
shuffle window, forwards) and training.buffer.ActivationBlocks (blocks, their shuffle, the carry) exactly as
activations would, and every SAE batch is counted: distinct documents, and the rows of the document
it holds most of. No model runs: only the data path, on the CPU.

    python bench/batch_diversity.py --json bench/results/batch_diversity.json
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

from shared.data.synthetic import synthetic_stream  # noqa: E402
from shared.model.tiny import byte_tokenizer  # noqa: E402
from shared.training.buffer import ActivationBlocks  # noqa: E402
from shared.training.config import TrainConfig  # noqa: E402
from shared.training.stream import _token_stream, shuffle_window_contexts  # noqa: E402

FIRST_DOC = 1_000  # labels start above the byte tokenizer's 260 ids, so context starts and separators stay apart

# The tiers' real shapes: context, contexts per forward, forwards per block (tiers 2-3: "auto"'s cap), SAE batch.
SHAPES = {
    "tier 1 (Gemma-2-2B, T4)": dict(context_len=1024, model_batch_size=8, block_batches=32, batch_tokens=4096,
                                    total_tokens=50_000_000),
    "tier 2 (Qwen3.5-4B, 2xT4)": dict(context_len=1024, model_batch_size=4, block_batches=128, batch_tokens=4096,
                                      total_tokens=150_000_000),
    "tier 3 (Qwen3.6-27B, 96 GB)": dict(context_len=1024, model_batch_size=2, block_batches=128, batch_tokens=4096,
                                        total_tokens=200_000_000),
}


class DocLabels:
    """The byte tokenizer, except that every token of the i-th document it tokenises is FIRST_DOC + i."""

    def __init__(self):
        self.tok, self.n = byte_tokenizer(), 0

    def __getattr__(self, name):
        return getattr(self.tok, name)

    def __call__(self, text, **kw):
        out = self.tok(text, **kw)
        if isinstance(text, list) and kw.get("add_special_tokens") is False:
            ids = [[FIRST_DOC + self.n + i] * len(d) for i, d in enumerate(out["input_ids"])]
            self.n += len(ids)
            return {"input_ids": ids}
        return out


def traces_file(folder: Path, n: int = 2_000, docs_per_trace: int = 50) -> str:
    """Long documents (~5k tokens, like OpenThoughts' reasoning traces): synthetic docs joined."""
    path = folder / "traces.jsonl"
    stream = synthetic_stream(seed=7)
    with path.open("w") as f:
        for _ in range(n):
            f.write(json.dumps({"text": " ".join(next(stream) for _ in range(docs_per_trace))}) + "\n")
    return str(path)


def measure(shape: dict, dataset: tuple[str, ...], shuffle_tokens: int, n_batches: int) -> dict:
    cfg = TrainConfig(model_id="bench", layers=(0,), dataset=dataset, shuffle_tokens=shuffle_tokens, **shape)
    tok = DocLabels()
    stream = _token_stream(cfg, tok)

    def source(skip: int):
        for batch in stream:
            labels = batch.reshape(-1)
            yield {0: labels[labels >= FIRST_DOC].double()[:, None]}

    rows_per_forward = cfg.model_batch_size * cfg.context_len
    blocks = ActivationBlocks(source, batch_tokens=cfg.batch_tokens, block_batches=cfg.block_batches,
                              rows_per_forward=rows_per_forward, seed=cfg.seed, dtype=torch.float64)
    distinct, top, per_block = [], [], []
    started = time.perf_counter()
    while len(distinct) < n_batches:
        block = blocks.next_block()
        per_block.append(int(torch.unique(block.rows[0][block.order]).numel()))
        for batch in block:
            _, counts = torch.unique(batch[0], return_counts=True)
            distinct.append(int(counts.numel()))
            top.append(int(counts.max()))
            if len(distinct) == n_batches:
                break
    return {"shuffle_tokens": shuffle_tokens, "window_contexts": shuffle_window_contexts(cfg),
            "batches": len(distinct), "blocks": len(per_block),
            "distinct_docs_per_batch": {"median": statistics.median(distinct), "min": min(distinct),
                                        "mean": statistics.fmean(distinct)},
            "rows_of_the_top_doc_per_batch": {"median": statistics.median(top), "max": max(top)},
            "distinct_docs_per_block": {"median": statistics.median(per_block)},
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=128, help="SAE batches measured per run (two blocks at these shapes)")
    ap.add_argument("--window", type=int, default=TrainConfig.shuffle_tokens, help="shuffle_tokens of the 'after' runs")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        traces = traces_file(Path(tmp))
        corpora = {"synthetic (docs ~100 tokens)": ("synthetic",),
                   "traces (docs ~5k tokens)": (traces,),
                   "synthetic 0.8 + traces 0.2, in tokens": ("synthetic@0.8", f"{traces}@0.2")}
        for shape_name, shape in SHAPES.items():
            for corpus_name, dataset in corpora.items():
                for window in (0, args.window):
                    r = {"shape": shape_name, "corpus": corpus_name, **shape, **measure(shape, dataset, window, args.batches)}
                    results.append(r)
                    d = r["distinct_docs_per_batch"]
                    print(f"{shape_name:28s} {corpus_name:48s} shuffle_tokens {window:>10,}: distinct docs per batch "
                          f"median {d['median']:>6} (min {d['min']}), top doc's rows median "
                          f"{r['rows_of_the_top_doc_per_batch']['median']}, docs per block "
                          f"{r['distinct_docs_per_block']['median']} [{r['seconds']} s]", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
