"""The rules of using an SAE's features (04, 05, 06, 11, 13): a feature by id or catalog words, the watch
list, a feature catalog to name them by, how many tokens and features to read, the LLM judge."""
from __future__ import annotations

import os

from ..parameters import POSITIVE, Rule, choice, number, text, whole
from .saes import latent_ids, within_sae


def _feature(v, ctx):
    if isinstance(v, str):
        text()(v, ctx)
        if not str(ctx.params.get("FEATURE_CATALOG", "")).strip():
            raise ValueError("words search FEATURE_CATALOG's labels: set FEATURE_CATALOG to a feature_catalog.json "
                             "(notebook 04's output), or give a latent id")
        return v
    v = whole(-1, " (a latent id, -1 = the top-ranked one, or words to search the catalog labels)")(v, ctx)
    within_sae([v] if v >= 0 else [], ctx)
    return v


def _watch_features(v, ctx):
    return within_sae(latent_ids(v, "or [] to watch the top-ranked ones"), ctx)


def _catalog_file(v, ctx):
    text(empty_ok=True)(v, ctx)
    if v.strip() and not (v.endswith(".json") and os.path.isfile(v)):
        raise ValueError("must be '' (no catalog) or the path of a feature_catalog.json file (notebook 04's output)")
    return v.strip()


RULES: dict[str, Rule] = {
    # a feature, the watch list (06, 13)
    "FEATURE": _feature, "WATCH_FEATURES": _watch_features, "BASELINE_TOKENS": POSITIVE,
    "PERCENTILE": number(0.0, high=100.0, hint=", e.g. 99.5"),
    # a catalog to name features by (05, 06, 11)
    "CATALOG": _catalog_file, "FEATURE_CATALOG": _catalog_file,
    # discovering and labelling features (04)
    "N_TOKENS": POSITIVE, "N_FEATURES": POSITIVE, "DETECTION_TOKENS": POSITIVE,
    "JUDGE": choice("auto", "anthropic", "openai", "offline"), "ANTHROPIC_MODEL": text(), "OPENAI_MODEL": text(),
}
