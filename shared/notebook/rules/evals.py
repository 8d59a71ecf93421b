"""The rules of judging SAEs: Stage Gate G1 (11: which problems, whose answers, the feature packs) and
InterpScore (18: the binary labelled tasks its probes read, how many tokens it evaluates on)."""
from __future__ import annotations

from ..parameters import NON_NEGATIVE, POSITIVE, Rule, choice, distinct, text
from .data import dataset
from .saes import latent_ids, within_sae

# the binary labelled tasks InterpScore's probes can read (data.tasks' and data.synthetic's binary ones)
BINARY_TASKS = ("amazon_sentiment", "bias_in_bios_gender", "imdb", "sst2", "truthful_qa", "synthetic:sentiment",
                "synthetic:truth", "synthetic:names")


def _responses(v, ctx):
    choice("generate", "dataset")(v, ctx)
    if v == "dataset" and ctx.params.get("PROBLEMS") != "synthetic:arithmetic":
        raise ValueError("'dataset' scores the dataset's own model-style answers, which only PROBLEMS = "
                         "'synthetic:arithmetic' has: use 'generate'")
    return v


def _pack(v, ctx):
    """A feature pack: latent ids, words to search FEATURE_CATALOG's labels, or [] to choose it on a selection split."""
    if isinstance(v, str):
        text()(v, ctx)
        if not str(ctx.params.get("FEATURE_CATALOG", "")).strip():
            raise ValueError("words search FEATURE_CATALOG's labels: set FEATURE_CATALOG, or give latent ids")
    else:
        v = within_sae(latent_ids(v, "words to search FEATURE_CATALOG's labels, or [] to choose the pack on the "
                                     "selection split"), ctx)
    if ctx.name == "HARMFUL_PACK" and (v == []) != (ctx.params.get("HELPFUL_PACK") in ([], None)):
        raise ValueError("give both HELPFUL_PACK and HARMFUL_PACK, or leave both [] to choose them on the selection split")
    return v


def _probe_tasks(v, ctx):
    """A non-empty list of binary labelled tasks (aliases resolved); the first is InterpScore's TPP concept."""
    if isinstance(v, str) or not isinstance(v, (list, tuple)) or not v:
        raise ValueError(f'must be a non-empty list of binary tasks, e.g. ["imdb", "sst2"]; '
                         f'valid: {", ".join(BINARY_TASKS)}')
    out = []
    for task in v:
        name = dataset(task, ctx) if isinstance(task, str) else task
        if name not in BINARY_TASKS:
            raise ValueError(f"{task!r} is not a binary labelled task; valid: {', '.join(BINARY_TASKS)}")
        out.append(name)
    return distinct(out, "task")


RULES: dict[str, Rule] = {
    # Stage Gate G1 (11)
    "PROBLEMS": choice("gsm8k", "synthetic:arithmetic"),  # gates.DATASETS
    "RESPONSES": _responses, "N_EVAL": POSITIVE, "N_SELECT": POSITIVE, "PACK_SIZE": POSITIVE,
    "HELPFUL_PACK": _pack, "HARMFUL_PACK": _pack,
    # InterpScore (18)
    "PROBE_TASKS": _probe_tasks, "EVAL_TOKENS": POSITIVE, "TOKENS_TRAINED": NON_NEGATIVE,
}
