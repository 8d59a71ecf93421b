"""Text data for every notebook: text sources (HF `datasets` streaming, local files, the built-in
`synthetic` corpus) and their training / held-out parts, weighted mixing (in tokens when given a
tokenizer), packing into token contexts that start and separate documents as each model was
trained (`context_tokens`), a seeded context shuffle window, and real labelled datasets.

The synthetic corpus itself lives in `synthetic`; this module imports it only where a source or
dataset name asks for it.
"""
from __future__ import annotations

import glob as _glob
import hashlib
import itertools
import json
import os
import random
import re
import warnings
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import torch

# --------------------------------------------------------------------------------------------
# Seeds and splits (shared with the synthetic corpus)
# --------------------------------------------------------------------------------------------

_TEST_FRACTION = 0.2


def seeded_rng(*parts) -> random.Random:
    """A random.Random seeded by the joined parts, e.g. seeded_rng("task", name, seed, split)."""
    return random.Random(":".join(str(p) for p in parts))


def split_of(key: str) -> str:
    """Stable "train"/"test" (80/20) by hashing an item's key, so train and test never share items."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") / 2**32
    return "test" if h < _TEST_FRACTION else "train"


# --------------------------------------------------------------------------------------------
# Text sources
# --------------------------------------------------------------------------------------------

_KINDS = ("hf", "local", "synthetic")
_PARTS = ("all", "train", "test")
_LOCAL_EXTS = (".txt", ".md", ".jsonl")


@dataclass
class TextSource:
    """Where text comes from. kind "hf": `path`/`name` (config)/`split`/`text_field` of a HF dataset;
    "local": a file, folder or glob of .txt/.md (one doc per blank-line paragraph, or per file when
    name="file") or .jsonl (`text_field` per line); "synthetic": the built-in corpus.
    `weight` sets its share in mix_streams; `seed` seeds the HF shuffle buffer and synthetic stream.
    `part` routes documents by `split_of` of their text: "train" skips the documents held out for
    validation (1 in 5), "test" keeps only those, "all" keeps every one; the trainer reads "train" and
    its validation "test", so the two never share a document, whatever the sources."""

    kind: str
    path: str = ""
    name: str | None = None
    split: str = "train"
    text_field: str = "text"
    weight: float = 1.0
    seed: int = 0
    streaming: bool = True
    shuffle_buffer: int = 10_000  # HF only; 0 turns shuffling off
    revision: str | None = None  # HF only: the dataset commit to stream (None: the default branch now)
    part: str = "all"  # "all" | "train" | "test": which documents by split_of (see above)

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"unknown TextSource kind {self.kind!r}; valid kinds: {', '.join(_KINDS)}")
        if self.part not in _PARTS:
            raise ValueError(f"unknown TextSource part {self.part!r}; valid parts: {', '.join(_PARTS)}")
        if not (self.weight > 0):
            raise ValueError(f"mix weight of source {self.describe()!r} is {self.weight}: weights must be > 0 "
                             "(drop a source rather than weighting it 0)")
        if self.kind in ("hf", "local") and not self.path:
            raise ValueError(f"a {self.kind!r} TextSource needs a path")

    def describe(self) -> str:
        if self.kind == "synthetic":
            return "synthetic"
        if self.kind == "hf":
            return f"hf:{self.path}:{self.name or ''}:{self.split}:{self.text_field}"
        return self.path


def parse_source(spec: str, weight: float | None = None, seed: int = 0) -> TextSource:
    """Parse "synthetic" | "hf:<path>[:<config>[:<split>[:<field>]]]" | a local file, folder or glob.

    A trailing "@<weight>" sets the mixing weight, e.g. "hf:allenai/c4:en:train:text@0.2".
    """
    spec = spec.strip()
    m = re.fullmatch(r"(.+)@([-+]?[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)", spec)
    if m:
        spec, w = m.group(1), float(m.group(2))
        weight = w if weight is None else weight
    weight = 1.0 if weight is None else weight
    if not spec:
        raise ValueError("empty source spec; use 'synthetic', 'hf:<path>[:<config>[:<split>[:<field>]]]' or a file path")
    if spec == "synthetic":
        return TextSource("synthetic", weight=weight, seed=seed)
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if len(parts) > 4 or not parts[0]:
            raise ValueError(f"bad HF source {spec!r}; expected hf:<path>[:<config>[:<split>[:<field>]]]")
        parts += [""] * (4 - len(parts))
        path, config, split, field = parts
        return TextSource("hf", path=path, name=config or None, split=split or "train",
                          text_field=field or "text", weight=weight, seed=seed)
    if not _local_files(spec):
        hint = f" (did you mean 'hf:{spec}'?)" if "/" in spec and not os.path.isabs(spec) else ""
        raise ValueError(f"source {spec!r} is not 'synthetic', not 'hf:...', and no local "
                         f"{'/'.join(_LOCAL_EXTS)} files match it{hint}")
    return TextSource("local", path=spec, weight=weight, seed=seed)


def _local_files(path: str) -> list[str]:
    if os.path.isdir(path):
        files = [p for p in _glob.glob(os.path.join(path, "**", "*"), recursive=True)
                 if p.endswith(_LOCAL_EXTS)]
    else:
        files = _glob.glob(os.path.expanduser(path), recursive=True)
    return sorted(p for p in files if os.path.isfile(p))


def _local_stream(src: TextSource) -> Iterator[str]:
    files = _local_files(src.path)
    if not files:
        raise ValueError(f"no files match local source {src.path!r}")
    for f in files:
        if f.endswith(".jsonl"):
            with open(f, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    if src.text_field not in row:
                        raise ValueError(f"{f}:{lineno} has no field {src.text_field!r}; available: "
                                         f"{', '.join(row)}; set text_field")
                    yield row[src.text_field]
        else:
            with open(f, encoding="utf-8") as fh:
                content = fh.read()
            if src.name == "file":
                yield content
            else:
                yield from (p.strip() for p in re.split(r"\n\s*\n", content))


def _hf_stream(src: TextSource) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_dataset(src.path, src.name, split=src.split, streaming=src.streaming,
                                   revision=src.revision)
    except Exception as e:  # noqa: BLE001 -- re-raised with what to check
        raise RuntimeError(f"could not load HF dataset {src.describe()}: {e}; check the path, "
                           f"config, split, network and HF_TOKEN for gated sets") from e
    if src.shuffle_buffer and hasattr(ds, "shuffle"):
        if src.streaming:
            ds = _shuffled_stream(ds, src)
        else:
            ds = ds.shuffle(seed=src.seed)
    for row in ds:
        if src.text_field not in row:
            raise ValueError(f"HF dataset {src.path!r} has no column {src.text_field!r}; available "
                             f"columns: {', '.join(row)}; set text_field (hf:<path>:<config>:<split>:<field>)")
        yield row[src.text_field]


def _shuffled_stream(ds, src: TextSource):
    """A streaming HF dataset in a seeded shuffled order that reaches all of it early.

    `IterableDataset.reshard` (datasets#7992, in the 5.x here) makes each Parquet row group a shard;
    `shuffle` shuffles the shard order and, since datasets 5.0 (#8194), fills its buffer of
    `shuffle_buffer` documents from 10 shards at a time (`max_buffer_input_shards`), so the first
    documents come from row groups all over the data set, not from its first files. `datasets` 4.x
    shuffle the file order but fill the buffer from one file at a time, in its stored order (a set
    stored by crawl or by domain stays so for stretches of `shuffle_buffer` documents). Either way the
    trainer's context window (`shuffled_contexts`) mixes further. The order depends on the
    `datasets` version: a resume must run the same one."""
    if hasattr(ds, "reshard"):
        try:
            ds = ds.reshard()
        except Exception as e:  # noqa: BLE001 -- a builder that cannot split its files: its files are the shards
            print(f"{src.describe()}: read file by file ({type(e).__name__} when splitting by row group).")
    return ds.shuffle(seed=src.seed, buffer_size=src.shuffle_buffer)


def text_stream(source: TextSource | str) -> Iterator[str]:
    """Non-empty texts from a source (synthetic is infinite; HF and local are one pass), only those of
    the source's `part` (every one for "all")."""
    src = parse_source(source) if isinstance(source, str) else source
    if src.kind == "synthetic":
        from .synthetic import synthetic_stream

        inner = synthetic_stream(src.seed, src.split)
    else:
        inner = _nonempty(_hf_stream(src) if src.kind == "hf" else _local_stream(src), src)
    return inner if src.part == "all" else _routed(inner, src)


def _routed(texts: Iterable[str], src: TextSource) -> Iterator[str]:
    """The texts that `split_of` assigns to src.part; a one-line error if a source has none there."""
    seen = kept = 0
    for t in texts:
        seen += 1
        if split_of(t) == src.part:
            kept += 1
            yield t
    if seen and not kept:
        what, other = ("training", "validation") if src.part == "train" else ("held-out", "training")
        raise ValueError(f"source {src.describe()} has no {what} documents: data.split_of routes all {seen} "
                         f"of its documents to {other} (1 in 5 is held out); add documents to it")


def _nonempty(texts: Iterable, src: TextSource) -> Iterator[str]:
    any_text = False
    for t in texts:
        if isinstance(t, str) and t.strip():
            any_text = True
            yield t
    if not any_text:
        raise ValueError(f"source {src.describe()} yielded no text; check path/split/text_field, "
                         "or drop it from the dataset mix")


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


# --------------------------------------------------------------------------------------------
# Tokenise and pack
# --------------------------------------------------------------------------------------------


# An EOS of these ends a chat turn (post-trained Qwen, Llama-3-Instruct, Gemma-it, Phi-3), not a
# pretraining document: documents are then separated by the tokenizer's end-of-text token instead.
CHAT_TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>")
# End-of-text tokens that separate documents in pretraining streams, in order of preference:
# Qwen / GPT-2 / Phi-3 "<|endoftext|>", Llama 3 "<|end_of_text|>", Llama 2 / Mistral "</s>", Gemma "<eos>".
TEXT_ENDS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


@dataclass(frozen=True)
class ContextTokens:
    """What starts every packed context (`start`) and what follows every document (`separator`), as
    ids and as token strings; `start_is_bos`: the start is the tokenizer's BOS (SAELens' prepend_bos)."""

    start: int
    separator: int
    start_token: str
    separator_token: str
    start_is_bos: bool

    def export_fields(self) -> dict:
        """The export.ExportInfo fields that record them: prepend_bos, and both tokens in the metadata."""
        return {"prepend_bos": self.start_is_bos,
                "extra": {"context_start_token": self.start_token, "document_separator": self.separator_token}}


def context_tokens(tokenizer) -> ContextTokens:
    """The tokens that start a context and separate documents for this model, from its tokenizer config.

    Separator: the end-of-text token the model was pretrained with between documents: the EOS,
    unless the EOS is a chat end-of-turn token (CHAT_TURN_ENDS: post-trained Qwen's "<|im_end|>"),
    then the tokenizer's special end-of-text token (TEXT_ENDS: Qwen's "<|endoftext|>"; capture's
    token_mask drops every special token, so neither is ever trained on).
    Start: the BOS where the tokenizer itself puts one first (add_bos_token, or a post-processor that
    adds it: Gemma, Llama, Mistral); else, BOS or not, the separator (Qwen has no BOS; Phi-3 sets
    add_bos_token=false, so "<s>" is never its first token; GPT-2 adds nothing): a context then
    begins as a packed pretraining stream does after a document ends. Used by `pack` and by the
    SAELens export (`ContextTokens.export_fields`)."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special = list(getattr(tokenizer, "all_special_tokens", None) or []) + \
        [token.content for token in added.values() if getattr(token, "special", False)]
    eos = getattr(tokenizer, "eos_token", None)
    separator = eos
    if eos is None or eos in CHAT_TURN_ENDS:
        separator = next((t for t in TEXT_ENDS if t in special), eos)
    if separator is None:
        raise ValueError("the tokenizer has no eos_token and no end-of-text token; set tokenizer.eos_token "
                         "(it separates documents)")
    bos = getattr(tokenizer, "bos_token", None)
    start = bos if bos is not None and _adds_bos(tokenizer) else separator
    ids = tokenizer.convert_tokens_to_ids([start, separator])
    return ContextTokens(start=int(ids[0]), separator=int(ids[1]), start_token=start, separator_token=separator,
                         start_is_bos=bos is not None and start == bos)


def _adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts its BOS first when asked for special tokens (what the model saw)."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def tokenize_documents(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's token ids, no special token added and none parsed: a literal "<|endoftext|>" or
    "<bos>" in web text is tokenised as the characters it is (split_special_tokens)."""
    return tokenizer([str(t) for t in texts], add_special_tokens=False, split_special_tokens=True,
                     verbose=False)["input_ids"]


def pack(texts: Iterable[str], tokenizer, context_len: int, prepend_bos: bool = True,
         chunk_docs: int = 256, min_rows: int = 1, counts: dict | None = None) -> Iterator[torch.Tensor]:
    """Packed contexts as LongTensor[n, context_len] blocks, one block per chunk of docs.

    Docs are tokenised by `tokenize_documents` (in chunks of `chunk_docs`, one fast batch call each;
    a doc from a tokenising mix brings its ids), concatenated as doc SEP doc SEP ..., and cut into
    contexts; with prepend_bos each context is the start token followed by context_len-1 content
    tokens (`context_tokens`: the model's BOS, or its separator where the tokenizer adds none).
    A trailing partial context is dropped. Lazy: safe on infinite streams. Raises at the end if the
    texts filled fewer than `min_rows` contexts. `counts` (a dict) receives, per source of
    `SourcedText` docs, the content tokens (separator included) of the contexts yielded: the mix
    proportions in tokens.
    """
    for rows, sources in _packed(texts, tokenizer, context_len, prepend_bos, chunk_docs, min_rows,
                                 track=counts is not None):
        if counts is not None:
            _add_counts(counts, sources)
        yield rows


def _packed(texts: Iterable[str], tokenizer, context_len: int, prepend_bos: bool, chunk_docs: int, min_rows: int,
            track: bool) -> Iterator[tuple[torch.Tensor, list[dict] | None]]:
    """`pack`'s blocks, each with (when track) one {source: content tokens} dict per row."""
    if context_len < 2:
        raise ValueError(f"need context_len >= 2, got {context_len}")
    ctx = context_tokens(tokenizer)
    n_content = context_len - (1 if prepend_bos else 0)
    buf: list[int] = []
    origin: list[tuple[str, int]] = []  # (source, tokens) runs parallel to buf, when tracking
    n_rows = n_docs = n_tokens = 0
    it = iter(texts)
    while True:
        raw = list(itertools.islice(it, chunk_docs))
        if not raw:
            break
        chunk = [t for t in raw if t]
        if not chunk:
            continue
        n_docs += len(chunk)
        todo = [t for t in chunk if getattr(t, "ids", None) is None]
        fresh = iter(tokenize_documents(tokenizer, todo) if todo else [])
        for text in chunk:
            d = text.ids if getattr(text, "ids", None) is not None else next(fresh)
            buf.extend(d)
            buf.append(ctx.separator)
            n_tokens += len(d) + 1
            if track:
                origin.append((getattr(text, "source", "text"), len(d) + 1))
        n_full = len(buf) // n_content
        if n_full:
            sources = [_take_tokens(origin, n_content) for _ in range(n_full)] if track else None
            rows = torch.tensor(buf[: n_full * n_content], dtype=torch.long).view(n_full, n_content)
            del buf[: n_full * n_content]
            if prepend_bos:
                rows = torch.cat([torch.full((n_full, 1), ctx.start, dtype=torch.long), rows], dim=1)
            n_rows += n_full
            yield rows, sources
    if n_docs == 0:
        raise ValueError("the text source yielded no text; check path/split/text_field")
    if n_rows < min_rows:
        raise ValueError(f"{n_docs} docs gave only {n_tokens} tokens, less than one batch of "
                         f"{min_rows} x {context_len}; add text or lower context_len/batch_size")


def _take_tokens(origin: list[tuple[str, int]], n: int) -> dict[str, int]:
    """Move the first n tokens of the (source, tokens) runs into a {source: tokens} dict, cutting the last run."""
    out: dict[str, int] = {}
    while n:
        source, k = origin[0]
        take = min(k, n)
        out[source] = out.get(source, 0) + take
        n -= take
        if take == k:
            origin.pop(0)
        else:
            origin[0] = (source, k - take)
    return out


def _add_counts(counts: dict, sources: Iterable[dict]) -> None:
    for row in sources:
        for source, n in row.items():
            counts[source] = counts.get(source, 0) + n


def shuffled_contexts(blocks: Iterable[tuple[torch.Tensor, list | None]], window: int,
                      seed: int = 0) -> Iterator[tuple[torch.Tensor, list | None]]:
    """The contexts of `blocks` (LongTensor[n, T], with per-row source counts or None) in a shuffled
    order, through a buffer of `window` contexts: each incoming context takes the place of a random
    one of the buffer, which goes out; at the end the buffer leaves in a random order.

    A context then lands up to ~window contexts from where the stream had it, so consecutive
    forwards (and the activation blocks cut from them) read documents from all over the window, not
    a run of neighbouring documents or one long document's consecutive contexts. Deterministic for
    (seed, input): a replay of the same stream reproduces the order, so a resume rebuilds the buffer
    by replaying, nothing to store. Memory: window x T token ids as int32 (4 bytes a token, 40 MB
    for 10M tokens), plus one small dict per buffered context when counting sources.
    window <= 1 passes the blocks through unchanged."""
    if window <= 1:
        yield from blocks
        return
    rng = seeded_rng("contexts", seed)
    buf: torch.Tensor | None = None
    buf_sources: list = [None] * window
    filled = 0
    for rows, sources in blocks:
        if buf is None:
            buf = torch.empty(window, rows.shape[1], dtype=torch.int32)
        out, out_sources = [], []
        for r in range(rows.shape[0]):
            if filled < window:
                buf[filled] = rows[r]
                buf_sources[filled] = sources[r] if sources is not None else None
                filled += 1
                continue
            j = rng.randrange(window)
            out.append(buf[j].clone())
            out_sources.append(buf_sources[j])
            buf[j] = rows[r]
            buf_sources[j] = sources[r] if sources is not None else None
        if out:
            yield torch.stack(out).long(), (out_sources if sources is not None else None)
    if filled:
        order = list(range(filled))
        rng.shuffle(order)
        rest = [buf_sources[i] for i in order]
        yield buf[order].long(), (rest if rest[0] is not None else None)


def token_batches(texts: Iterable[str], tokenizer, context_len: int, batch_size: int,
                  prepend_bos: bool = True, max_batches: int | None = None,
                  drop_last: bool = True, chunk_docs: int = 256, counts: dict | None = None,
                  shuffle_window: int = 0, seed: int = 0) -> Iterator[torch.Tensor]:
    """Pack texts (see `pack`) into LongTensor[batch_size, context_len] batches.

    shuffle_window > 1 passes the packed contexts through `shuffled_contexts` (a window of that many
    contexts, seeded by `seed`) first. `counts` receives the tokens per source of the contexts that
    left the window (with no window: of those packed). A trailing partial batch is yielded only
    when drop_last=False. Lazy: safe on infinite streams.
    """
    if max_batches == 0:
        return
    if context_len < 2 or batch_size < 1:
        raise ValueError(f"need context_len >= 2 and batch_size >= 1, got {context_len}, {batch_size}")
    blocks = _packed(texts, tokenizer, context_len, prepend_bos, chunk_docs,
                     min_rows=batch_size if drop_last else 1, track=counts is not None)
    pending = torch.empty(0, context_len, dtype=torch.long)
    n_yielded = 0
    for rows, sources in shuffled_contexts(blocks, shuffle_window, seed):
        if counts is not None:
            _add_counts(counts, sources)
        pending = torch.cat([pending, rows])
        while pending.shape[0] >= batch_size and (max_batches is None or n_yielded < max_batches):
            yield pending[:batch_size]
            pending = pending[batch_size:]
            n_yielded += 1
        if max_batches is not None and n_yielded >= max_batches:
            return
    if not drop_last and pending.shape[0]:
        yield pending


# --------------------------------------------------------------------------------------------
# Real labelled datasets (notebook defaults) with the same dict shape as synthetic_task
# --------------------------------------------------------------------------------------------

_REAL = {  # name -> (hf path, config)
    "imdb": ("stanfordnlp/imdb", None),
    "sst2": ("stanfordnlp/sst2", None),
    "truthful_qa": ("truthfulqa/truthful_qa", "generation"),
    "gsm8k": ("openai/gsm8k", "main"),
    # SAEBench's sparse-probing / TPP sets, as binary tasks: review 5 stars (1) vs 1 star (0); biography gender
    "amazon_sentiment": ("canrager/amazon_reviews_mcauley_1and5", None),
    "bias_in_bios_gender": ("LabHC/bias_in_bios", None),
}
TASK_DATASETS = tuple(_REAL)
_ALIASES = {"stanfordnlp/imdb": "imdb", "stanfordnlp/sst2": "sst2", "glue/sst2": "sst2",
            "truthfulqa/truthful_qa": "truthful_qa", "openai/gsm8k": "gsm8k"}


def _gsm8k_answer(sol: str) -> int:
    return int(float(sol.rsplit("####", 1)[-1].strip().replace(",", "")))


def _rows_to_items(name: str, row: dict) -> list[dict]:
    if name == "imdb":
        return [dict(text=row["text"], label=int(row["label"]))]
    if name == "sst2":
        return [dict(text=row["sentence"], label=int(row["label"]))]
    if name == "amazon_sentiment":
        return [dict(text=row["text"], label=int(float(row["rating"]) >= 5.0))]
    if name == "bias_in_bios_gender":  # the dataset's gender column: 0 male, 1 female
        return [dict(text=row["hard_text"], label=int(row["gender"]))]
    if name == "gsm8k":
        return [dict(text=f"Question: {row['question']}\nAnswer: {row['answer']}",
                     question=row["question"], answer=row["answer"], label=_gsm8k_answer(row["answer"]))]
    q, good = row["question"], row["best_answer"]
    bad = (row.get("incorrect_answers") or [""])[0]
    return [dict(text=f"Q: {q} A: {a}", statement=f"Q: {q} A: {a}", question=q, answer=a, label=lab)
            for a, lab in ((good, 1), (bad, 0)) if a]


def check_task_dataset(name: str) -> str:
    """The canonical name of a labelled task dataset (alias resolved); one-line ValueError listing the valid ones."""
    from .synthetic import TASKS

    if isinstance(name, str) and name.startswith("synthetic:") and name.split(":", 1)[1] in TASKS:
        return name
    key = _ALIASES.get(name, name) if isinstance(name, str) else None
    if key not in _REAL:
        raise ValueError(f"unknown task dataset {name!r}; valid: {', '.join(_REAL)}, "
                         f"or synthetic:<task> with task in {', '.join(TASKS)}")
    return key


def load_task_dataset(name: str, n: int, split: str = "train", seed: int = 0) -> list[dict]:
    """`n` labelled items from a real dataset (imdb, sst2, truthful_qa, gsm8k, amazon_sentiment,
    bias_in_bios_gender) or "synthetic:<task>".

    Returns the synthetic_task dict shape (text, label, ...). Classification sets are label-balanced.
    sst2 "test" maps to its labelled "validation" split; truthful_qa has one split, divided 80/20 by
    question hash so train and test never share a question.
    """
    key = check_task_dataset(name)
    if key.startswith("synthetic:"):
        from .synthetic import synthetic_task

        return synthetic_task(key.split(":", 1)[1], n, seed=seed, split=split)
    import datasets

    path, config = _REAL[key]
    hf_split = {"sst2": {"test": "validation"}, "truthful_qa": {"train": "validation", "test": "validation"}}
    hf_split = hf_split.get(key, {}).get(split, split)
    ds = datasets.load_dataset(path, config, split=hf_split)
    if hasattr(ds, "shuffle"):
        rows: Iterable[dict] = ds.shuffle(seed=seed)
    else:
        rows = list(ds)
        random.Random(seed).shuffle(rows)
    balanced = key in ("imdb", "sst2", "truthful_qa", "amazon_sentiment", "bias_in_bios_gender")
    per_label: dict[int, int] = {}
    out: list[dict] = []
    for row in rows:
        if key == "truthful_qa" and split_of(row["question"]) != split:
            continue
        for item in _rows_to_items(key, row):
            lab = item["label"]
            if balanced and per_label.get(lab, 0) >= (n + 1) // 2:
                continue
            per_label[lab] = per_label.get(lab, 0) + 1
            out.append(item)
        if len(out) >= n:
            break
    if not out:
        raise ValueError(f"dataset {name!r} split {split!r} yielded no items")
    out = out[:n]
    random.Random(seed).shuffle(out)
    return out
