"""A training run's token stream: the training part of its sources, mixed in tokens, packed as the model
was trained and shuffled through a window of contexts, every step seeded so a resume replays it exactly
(and every rank under torchrun reads it); the held-out validation batches, which never share a document
with it; and the measured mix (`mix_shares`)."""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Mapping

import torch

from ..data.mixing import mix_streams
from ..data.packing import token_batches
from ..data.sources import parse_source
from .config import TrainConfig


def _sources(cfg: TrainConfig, revisions: Mapping[str, str | None] | None = None) -> list:
    """The run's training text sources (data.TextSource.part "train": never a validation document); an hf
    source streams the revision `revisions` pins for it."""
    sources = [dataclasses.replace(parse_source(spec, seed=cfg.seed), part="train") for spec in cfg.dataset]
    for source in sources:
        if source.kind == "hf":
            source.revision = (revisions or {}).get(source.describe())
    return sources


def _token_stream(cfg: TrainConfig, tokenizer, counts: dict | None = None,
                  revisions: Mapping[str, str | None] | None = None) -> Iterator[torch.Tensor]:
    """The run's token batches; `counts` (if given) receives the tokens per mix source of the contexts
    that reach the forward.

    The sources give their training part, mixed in tokens by their weights, packed into contexts
    (data.context_tokens: the model's own context start and document separator), and shuffled through a
    window of shuffle_window_contexts contexts before they are cut into forwards. Every step is seeded by
    cfg.seed and replays identically, which is what a resume relies on (and every rank under torchrun
    reads this stream); `revisions` pins each Hub source's commit (the first session's)."""
    texts = mix_streams(_sources(cfg, revisions), seed=cfg.seed, tokenizer=tokenizer)
    return token_batches(texts, tokenizer, cfg.context_len, cfg.model_batch_size, prepend_bos=True,
                         counts=counts, shuffle_window=shuffle_window_contexts(cfg), seed=cfg.seed)


def shuffle_window_contexts(cfg: TrainConfig) -> int:
    """Contexts in the run's shuffle window: cfg.shuffle_tokens (a run never needs a window larger than
    its total_tokens) over context_len. Its memory: that many contexts x context_len x 4 bytes."""
    return min(cfg.shuffle_tokens, cfg.total_tokens) // cfg.context_len


def validation_batches(cfg: TrainConfig, tokenizer, n_tokens: int, dataset: str | tuple[str, ...] | None = None,
                       seed_offset: int = 1_000) -> list[torch.Tensor]:
    """Held-out token batches (~n_tokens, fewer if the held-out documents run out) for validation.

    Only documents that data.split_of holds out (TextSource.part "test"), which training skips: of
    the `dataset` sources if given, else of the training sources (under another seed; the synthetic
    corpus from its test stream), so validation and training never share a document, even where
    the validation set overlaps the training set (a crawl and a sample of all crawls)."""
    specs = cfg.dataset if not dataset else ((dataset,) if isinstance(dataset, str) else tuple(dataset))
    seed = cfg.seed + seed_offset
    sources = [dataclasses.replace(parse_source(spec, seed=seed), part="test") for spec in specs]
    for source in sources:
        if source.kind == "synthetic":
            source.split = "test"
    n_batches = max(1, math.ceil(n_tokens / (cfg.model_batch_size * cfg.context_len)))
    texts = mix_streams(sources, seed=seed, cycle=False, tokenizer=tokenizer)
    batches = list(token_batches(texts, tokenizer, cfg.context_len, cfg.model_batch_size, prepend_bos=True,
                                 max_batches=n_batches))
    if len(batches) < n_batches:
        print(f"Validation: the held-out documents filled {len(batches)} of {n_batches} batches "
              f"({len(batches) * cfg.model_batch_size * cfg.context_len:,} of ~{n_tokens:,} tokens).")
    return batches


def mix_shares(tokens_by_source: Mapping[str, int]) -> dict[str, float]:
    """Each mix source's share of the tokens packed so far (the measured mix, for the metrics log)."""
    total = sum(tokens_by_source.values())
    return {name: n / total for name, n in tokens_by_source.items()} if total else {}
