"""Labelled task datasets (the notebooks' defaults) in the shape of `synthetic.synthetic_task`: imdb,
sst2, truthful_qa, GSM8K, SAEBench's amazon_sentiment and bias_in_bios_gender, or "synthetic:<task>";
classification sets label-balanced, train and test never sharing an item."""
from __future__ import annotations

import random
from typing import Iterable

from .splits import split_of

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
