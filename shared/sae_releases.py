"""Published SAEs by name, without loading any: the SAELens release registry (SAELens' own
pretrained_saes.yaml when sae_lens is installed, else a built-in table of the releases the catalog's
defaults use), and the check of a notebook's SAE / SAE_ID pair. Kept apart from sae_io (no torch), so
the parameter checks of every notebook can use it without vendoring the SAE loaders.
"""
from __future__ import annotations

import difflib
import functools
import importlib.util
import re
from pathlib import Path
from typing import Any

# The releases the catalog's defaults use, copied from sae_lens 6.54.12's pretrained_saes.yaml;
# used when sae_lens is not installed. conversion: None = SAELens folders, "gemma_2" = Gemma Scope.
BUILTIN_RELEASES: dict[str, dict[str, Any]] = {
    "gemma-scope-2b-pt-res-canonical": {
        "repo_id": "google/gemma-scope-2b-pt-res", "model": "gemma-2-2b", "conversion": "gemma_2",
        "saes": {f"layer_{L}/width_16k/canonical": f"layer_{L}/width_16k/average_l0_{l0}" for L, l0 in enumerate(
            (105, 102, 141, 59, 124, 68, 70, 69, 71, 73, 77, 80, 82, 84, 84, 78, 78, 77, 74, 73, 71, 70, 72, 75,
             73, 116))},
    },
    # SAELens ran GPT-2 with TransformerLens' center_writing_weights=True for these (its config_overrides)
    "gpt2-small-res-jb": {
        "repo_id": "jbloom/GPT2-Small-SAEs-Reformatted", "model": "gpt2-small", "conversion": None,
        "saes": {**{f"blocks.{L}.hook_resid_pre": f"blocks.{L}.hook_resid_pre" for L in range(12)},
                 "blocks.11.hook_resid_post": "blocks.11.hook_resid_post"},
    },
    # Marks et al.'s sparse-feature-circuit SAEs (dictionary_learning, 32k latents), converted for SAELens
    "pythia-70m-deduped-res-sm": {
        "repo_id": "ctigges/pythia-70m-deduped__res-sm_processed", "model": "pythia-70m-deduped", "conversion": None,
        "saes": {"blocks.0.hook_resid_pre": "e-res-sm",
                 **{f"blocks.{L}.hook_resid_post": f"{L}-res-sm" for L in range(6)}},
    },
}


@functools.lru_cache(maxsize=1)
def releases() -> dict[str, dict[str, Any]]:
    """release -> {repo_id, model, conversion, saes: {sae_id: path}}: SAELens' own pretrained_saes.yaml
    when sae_lens is installed (read without importing it), else BUILTIN_RELEASES."""
    spec = importlib.util.find_spec("sae_lens")
    yaml_path = Path(spec.origin).parent / "pretrained_saes.yaml" if spec and spec.origin else None
    if yaml_path is None or not yaml_path.is_file():
        return BUILTIN_RELEASES
    import yaml

    with yaml_path.open() as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {name: {"repo_id": v["repo_id"], "model": v.get("model"), "conversion": v.get("conversion_func"),
                   "saes": {s["id"]: str(s["path"]) for s in v.get("saes", [])}} for name, v in data.items()}


def _close(word: str, options) -> str:
    near = difflib.get_close_matches(word, list(options), n=5, cutoff=0.5)
    return f"close matches: {near}" if near else f"{len(options)} known, e.g. {sorted(options)[:5]}"


def resolve_release(release: str, sae_id: str) -> tuple[str, str, str | None]:
    """(repo_id, path in the repo, conversion) of a SAELens release + sae_id. A release SAELens does not
    list but shaped like a Hub repo id is taken as one (sae_id its folder), as SAELens does."""
    table = releases()
    if release not in table:
        if re.fullmatch(r"[\w.\-]+/[\w.\-]+", release):
            return release, sae_id, None
        raise ValueError(f"release={release!r} is not a SAELens release ({_close(release, table)})")
    entry = table[release]
    if sae_id not in entry["saes"]:
        raise ValueError(f"sae_id={sae_id!r} is not in release {release!r} ({_close(sae_id, entry['saes'])})")
    return entry["repo_id"], entry["saes"][sae_id], entry["conversion"]


TRAIN_TINY = "train-tiny"  # SAE = this: the notebook trains a small SAE itself (train.train_tiny_sae)


def check_source(sae: str, sae_id: str | None = None) -> str:
    """Check a notebook's SAE (and, given, its SAE_ID) without downloading anything: a SAELens release
    and an sae_id in it, a local folder, a Hub repo id (SAE_ID its subfolder), or TRAIN_TINY. Returns sae."""
    if not isinstance(sae, str) or not sae.strip():
        raise ValueError(f"must name an SAE: a SAELens release (e.g. 'gemma-scope-2b-pt-res-canonical'), a local "
                         f"folder, a Hub repo id, or {TRAIN_TINY!r}")
    if sae_id is not None and not isinstance(sae_id, str):
        raise ValueError("must be a string: the SAE in the release, or the subfolder ('' for none)")
    if sae == TRAIN_TINY or Path(sae).is_dir():
        return sae
    if sae in releases():
        if sae_id is not None:
            resolve_release(sae, sae_id)
        return sae
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", sae):
        return sae
    raise ValueError(f"is neither a SAELens release ({_close(sae, releases())}), a local folder, a Hub repo id "
                     f"'<user>/<name>' nor {TRAIN_TINY!r}")
