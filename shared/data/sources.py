"""Text sources: HF `datasets` streaming (read row group by row group in a seeded order), local
.txt/.md/.jsonl files and the built-in `synthetic` corpus, each restricted to its training or
held-out part (`TextSource.part`, routed by `splits.split_of`).

The synthetic corpus itself lives in `synthetic`; this module imports it only where a source names it.
"""
from __future__ import annotations

import glob as _glob
import json
import os
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from .splits import split_of

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
        raise ValueError(f"source {src.describe()} has no {what} documents: data.splits.split_of routes all {seen} "
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

