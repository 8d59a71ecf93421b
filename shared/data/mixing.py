"""Weighted mixing of text sources: each source's share of the mix is its weight's share, in tokens
when given a tokenizer (a source drawn with probability proportional to weight / its mean document
tokens) or in documents; weights normalised with a notice; every document says which source it came
from (`SourcedText`), so packing can count the tokens per source."""
from __future__ import annotations

import itertools
import warnings
from dataclasses import replace
from typing import Iterator

from .packing import tokenize_documents
from .sources import TextSource, parse_source, text_stream
from .splits import seeded_rng

class SourcedText(str):
    """A doc from mix_streams: a str that also says which source (`source`, its mix name) it came from,
    so `pack` can count the tokens of each source, and, when the mix tokenised it, its token ids
    (`ids`, from `tokenize_documents`), so `pack` does not tokenise it again."""

    source: str
    ids: list[int] | None

    def __new__(cls, text: str, source: str, ids: list[int] | None = None):
        out = super().__new__(cls, text)
        out.source = source
        out.ids = ids
        return out


def mix_names(sources: list[TextSource]) -> list[str]:
    """Each source's name in the mix: describe(), with "#i" added where two would share one."""
    names = [s.describe() for s in sources]
    return [f"{n}#{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def mix_weights(sources: list[TextSource]) -> list[float]:
    """The sources' mix weights as shares summing to 1; weights that do not sum to 1 are normalised
    with a one-line notice, a weight <= 0 is a ValueError naming the source."""
    for s in sources:
        s.__post_init__()  # the weight check, again: a weight may have been set after construction
    weights = [float(s.weight) for s in sources]
    total = sum(weights)
    shares = [w / total for w in weights]
    if len(sources) > 1 and abs(total - 1) > 1e-6:
        warnings.warn(f"mix weights {', '.join(f'{w:g}' for w in weights)} sum to {total:g}, not 1: "
                      f"normalised to {', '.join(f'{w:.3g}' for w in shares)}", stacklevel=2)
    return shares


def mix_streams(sources: list[TextSource | str], seed: int = 0, cycle: bool = True, tokenizer=None,
                chunk_docs: int = 64) -> Iterator[str]:
    """Interleave sources so that each one's share of the mix is its weight's share.

    With a `tokenizer` the shares are in **tokens**: each source's documents are tokenised ahead in
    chunks of `chunk_docs` (`tokenize_documents`, one batch call each) and the next document comes
    from source i with probability proportional to weight_i / (mean tokens of a document of source
    i, over those read so far, separator included), so a source of long documents is drawn less
    often and every source contributes tokens in proportion to its weight. Docs then carry their
    `ids`. Without a tokenizer the shares are in documents (probability weight_i / sum(weights)).

    Deterministic for a seed and the documents read (a replay of the same sources draws the same
    mix). cycle=True restarts a finite source when it runs out (epochs, reshuffled with seed +
    epoch); cycle=False drops it and renormalises, ending when all are exhausted. Docs are
    `SourcedText` (their `source` names where they came from); a source with no text at all is a
    ValueError.
    """
    srcs = [parse_source(s) if isinstance(s, str) else s for s in sources]
    if not srcs:
        raise ValueError("mix_streams needs at least one source")
    weights = mix_weights(srcs)
    names = mix_names(srcs)
    rng = seeded_rng("mix", seed)
    if tokenizer is not None:
        yield from _mix_in_tokens(srcs, weights, names, rng, tokenizer, cycle, chunk_docs)
        return
    streams = [text_stream(s) for s in srcs]
    epochs = [0] * len(srcs)
    live = list(range(len(srcs)))
    while live:
        i = rng.choices(live, weights=[weights[j] for j in live])[0]
        try:
            yield SourcedText(next(streams[i]), names[i])
        except StopIteration:
            if cycle:  # next epoch, reshuffled with a new seed
                epochs[i] += 1
                streams[i] = text_stream(replace(srcs[i], seed=srcs[i].seed + epochs[i]))
                yield SourcedText(next(streams[i]), names[i])
            else:
                live.remove(i)


class _TokenizedSource:
    """One mix source's documents, tokenised `chunk_docs` at a time, with the running mean length in
    tokens (separator included) of the documents tokenised so far."""

    def __init__(self, src: TextSource, name: str, tokenizer, chunk_docs: int, cycle: bool):
        self.src, self.name, self.tokenizer, self.chunk_docs, self.cycle = src, name, tokenizer, chunk_docs, cycle
        self.epoch, self.texts = 0, text_stream(src)
        self.ready: list[SourcedText] = []
        self.docs = self.tokens = 0

    def _fill(self) -> bool:
        """Tokenise the next chunk; False when the source is spent (and not cycled)."""
        texts = list(itertools.islice(self.texts, self.chunk_docs))
        if not texts and self.cycle:
            self.epoch += 1  # next epoch, reshuffled with a new seed
            self.texts = text_stream(replace(self.src, seed=self.src.seed + self.epoch))
            texts = list(itertools.islice(self.texts, self.chunk_docs))
        if not texts:
            return False
        ids = tokenize_documents(self.tokenizer, texts)
        self.ready = [SourcedText(t, self.name, d) for t, d in zip(texts, ids)][::-1]  # popped from the end
        self.docs += len(texts)
        self.tokens += sum(len(d) + 1 for d in ids)
        return True

    def mean_tokens(self) -> float:
        if not self.docs:
            self._fill()
        return max(self.tokens / max(self.docs, 1), 1.0)

    def next(self) -> SourcedText | None:
        if not self.ready and not self._fill():
            return None
        return self.ready.pop()


def _mix_in_tokens(srcs, weights, names, rng, tokenizer, cycle: bool, chunk_docs: int) -> Iterator[SourcedText]:
    """mix_streams with shares in tokens: source i drawn with probability ∝ weight_i / its mean document tokens."""
    readers = [_TokenizedSource(s, n, tokenizer, chunk_docs, cycle) for s, n in zip(srcs, names)]
    live = list(range(len(srcs)))
    while live:
        i = rng.choices(live, weights=[weights[j] / readers[j].mean_tokens() for j in live])[0]
        doc = readers[i].next()
        if doc is None:
            live.remove(i)
        else:
            yield doc

