"""Tokenise and pack text into contexts as each model was trained: what starts a context and what
separates documents (`context_tokens`, from the tokenizer; also the export's prepend_bos), special
tokens in text left as text, packing into [n, context_len] rows (`pack`, also the tiny models'
training rows), the seeded context shuffle window (`shuffled_contexts`) and batches (`token_batches`)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from .splits import seeded_rng

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
