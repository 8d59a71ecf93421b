"""The rules of reading a model without an SAE (19-23): the logit and tuned lens's fit and display, linear
probes and CCS, RepE's concept, contrast pairs, splits and steering prompts."""
from __future__ import annotations

import numbers

from ...data import synthetic
from ..parameters import POSITIVE, Rule, choice, flag, number, string_pairs, text, text_list, whole


def _concept(v, ctx):
    text()(v, ctx)
    if not ctx.params.get("CONTRAST_PAIRS") and v not in synthetic.CONCEPTS:
        raise ValueError(f"has no built-in pairs: use one of {', '.join(synthetic.CONCEPTS)}, or fill CONTRAST_PAIRS")
    return v


def _val_frac(v, ctx):
    """The validation share of RepE's pairs (23): in (0, 1), and with TEST_FRAC below 1 (the rest fits)."""
    v = number(0.0, high=1.0)(v, ctx)
    test = ctx.params.get("TEST_FRAC")
    if isinstance(test, numbers.Real) and not isinstance(test, bool) and v + test >= 1:
        raise ValueError(f"VAL_FRAC + TEST_FRAC = {v + test:g} must be < 1: the rest of the pairs fits the vectors")
    return v


RULES: dict[str, Rule] = {
    # lenses (19, 20)
    "MAX_TOKENS_SHOWN": POSITIVE, "FIT_STEPS": POSITIVE, "TRY_PRETRAINED": flag, "OPTIMIZER": choice("adam", "sgd"),
    # probes and CCS (21, 22)
    "POOL": choice("mean", "last"), "PROBE_C": number(0.0), "N_RESTARTS": POSITIVE, "N_EPOCHS": POSITIVE,
    # RepE reading vectors (23)
    "CONCEPT": _concept, "CONTRAST_PAIRS": string_pairs, "N_PAIRS": whole(0, " (0 = every pair)"),
    "TEST_FRAC": number(0.0, high=1.0), "VAL_FRAC": _val_frac, "NORM_FRACTION": number(0.0),
    "MONITOR_PROMPTS": text_list, "STEER_PROMPTS": text_list,
}
