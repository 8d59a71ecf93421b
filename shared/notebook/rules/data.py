"""The rules of the data a notebook reads: DATASET (a text source, a labelled task, or a weighted mix of text
sources), VAL_DATASET, context lengths, how many items train and test, prompts read from a dataset."""
from __future__ import annotations

from ...data import sources, synthetic, tasks
from ..parameters import POSITIVE, Rule, text, text_list


def dataset(v, ctx):
    """A labelled task (imdb, synthetic:truth, ...) or a text source (synthetic, hf:..., a local path)."""
    text()(v, ctx)
    try:
        return tasks.check_task_dataset(v)
    except ValueError:
        pass
    try:
        sources.parse_source(v)
    except ValueError:
        raise ValueError(f"is neither a text source ('synthetic', 'hf:<path>[:<config>[:<split>[:<field>]]]' or "
                         f"local .txt/.md/.jsonl files) nor a labelled task ({', '.join(tasks.TASK_DATASETS)}, "
                         f"synthetic:<{'|'.join(synthetic.TASKS)}>)") from None
    return v


def _text_mix(v, ctx):
    """DATASET as a mix: a list of text sources, each "spec@weight" (weights are shares of the tokens)."""
    if not v or not all(isinstance(s, str) and s.strip() for s in v):
        raise ValueError('must be a text source or a non-empty list of them, e.g. ["synthetic@0.7", "synthetic@0.3"]')
    for spec in v:
        try:
            sources.parse_source(spec)
        except ValueError as e:
            raise ValueError(f"mix entry {spec!r}: {e}") from None
    return list(v)


def _dataset_or_mix(v, ctx):
    """One source or task (dataset), or a list of text sources mixed by their @weights."""
    return _text_mix(v, ctx) if isinstance(v, (list, tuple)) else dataset(v, ctx)


def _val_dataset(v, ctx):
    if isinstance(v, str) and not v.strip():
        return ""
    return dataset(v, ctx)


def _prompts(v, ctx):
    if isinstance(v, str):
        return dataset(v, ctx)
    return text_list(v, ctx)


RULES: dict[str, Rule] = {
    "DATASET": _dataset_or_mix, "VAL_DATASET": _val_dataset,
    "CONTEXT_LEN": POSITIVE, "MAX_LEN": POSITIVE, "MAX_TEXT_TOKENS": POSITIVE,
    "N_TRAIN": POSITIVE, "N_TEST": POSITIVE, "EVAL_DOCS": POSITIVE, "EVAL_BATCHES": POSITIVE,
    "PROMPTS": _prompts,
}
