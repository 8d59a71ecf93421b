"""Published SAEs by name, without torch: the SAELens release registry (SAELens' own pretrained_saes.yaml
when sae_lens is installed, else a built-in table of the releases the catalog's defaults use), the check
of a notebook's SAE / SAE_ID pair (`check_source`), and what that pair says about the SAE before its
weights load (`sae_facts`: its hook and widths, from a release entry, a local folder or a Hub cfg.json;
`sae_layer_from_id`: the block an SAE id names; `centred_input`: whether a release's SAEs read a centred residual).
The parameter checks of every notebook use it in their first cell without vendoring the SAE loaders.
"""
from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from .formats import (QWEN_SCOPE_FILE, QWEN_SCOPE_NOTE, SaeFacts, _GEMMA_SCOPE, _TL_SITE, facts_from_cfg,
                      folder_facts, gemma_scope_facts)

# The releases the catalog's defaults use, copied from sae_lens 6.54.12's pretrained_saes.yaml;
# used when sae_lens is not installed. conversion: None = SAELens folders, "gemma_2" = Gemma Scope.
# config_overrides: what SAELens changes in each SAE's cfg.json (or in the model it reads) for the release.
BUILTIN_RELEASES: dict[str, dict[str, Any]] = {
    "gemma-scope-2b-pt-res-canonical": {
        "repo_id": "google/gemma-scope-2b-pt-res", "model": "gemma-2-2b", "conversion": "gemma_2",
        "config_overrides": {},
        "saes": {f"layer_{L}/width_16k/canonical": f"layer_{L}/width_16k/average_l0_{l0}" for L, l0 in enumerate(
            (105, 102, 141, 59, 124, 68, 70, 69, 71, 73, 77, 80, 82, 84, 84, 78, 78, 77, 74, 73, 71, 70, 72, 75,
             73, 116))},
    },
    # SAELens ran GPT-2 with TransformerLens' center_writing_weights=True for these (its config_overrides)
    "gpt2-small-res-jb": {
        "repo_id": "jbloom/GPT2-Small-SAEs-Reformatted", "model": "gpt2-small", "conversion": None,
        "config_overrides": {"model_from_pretrained_kwargs": {"center_writing_weights": True}},
        "saes": {**{f"blocks.{L}.hook_resid_pre": f"blocks.{L}.hook_resid_pre" for L in range(12)},
                 "blocks.11.hook_resid_post": "blocks.11.hook_resid_post"},
    },
    # Marks et al.'s sparse-feature-circuit SAEs (dictionary_learning, 32k latents), converted for SAELens
    "pythia-70m-deduped-res-sm": {
        "repo_id": "ctigges/pythia-70m-deduped__res-sm_processed", "model": "pythia-70m-deduped", "conversion": None,
        "config_overrides": {},
        "saes": {"blocks.0.hook_resid_pre": "e-res-sm",
                 **{f"blocks.{L}.hook_resid_post": f"{L}-res-sm" for L in range(6)}},
    },
}

# SAELens conversions (a release's conversion_func) load.py reads: None / "sae_lens" = SAELens folders,
# "gemma_2" = Gemma Scope params.npz, "sparsify" = EleutherAI sparsify folders. The others are refused.
CONVERSIONS = (None, "sae_lens", "gemma_2", "sparsify")
_NOT_READ_YET = {
    "qwen_scope": "Qwen Scope (a layerN.sae.pt file per layer)", "gemma_3": "Gemma Scope 2 (params.safetensors)",
    "llama_scope": "Llama Scope (checkpoints/final.safetensors)", "llama_scope_r1_distill": "Llama Scope R1",
    "dictionary_learning_1": "dictionary_learning (ae.pt)", "deepseek_r1": "DeepSeek-R1 SAEs (.pt)",
    "goodfire": "Goodfire (.pth)", "temporal": "temporal SAEs",
}
_NOT_RESIDUAL_SAES = {
    "gemma_2_transcoder": "transcoders (MLP input to MLP output)", "mwhanna_transcoder": "transcoders (MLP input "
    "to MLP output)", "mntss_clt_layer_transcoder": "cross-layer transcoders", "connor_rob_hook_z": "SAEs of the "
    "attention heads' outputs (hook_z)",
}
# model_from_pretrained_kwargs a release may set, that load.py applies: TransformerLens' centring of the
# residual stream (every write minus its mean over d_model), folded into the encoder by load.py.
MODEL_KWARGS = ("center_writing_weights",)



@functools.lru_cache(maxsize=1)
def releases() -> dict[str, dict[str, Any]]:
    """release -> {repo_id, model, conversion, config_overrides, saes: {sae_id: path}}: SAELens' own
    pretrained_saes.yaml when sae_lens is installed (read without importing it), else BUILTIN_RELEASES."""
    spec = importlib.util.find_spec("sae_lens")
    yaml_path = Path(spec.origin).parent / "pretrained_saes.yaml" if spec and spec.origin else None
    if yaml_path is None or not yaml_path.is_file():
        return BUILTIN_RELEASES
    import yaml

    with yaml_path.open() as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {name: {"repo_id": v["repo_id"], "model": v.get("model"), "conversion": v.get("conversion_func"),
                   "config_overrides": dict(v.get("config_overrides") or {}),
                   "saes": {s["id"]: str(s["path"]) for s in v.get("saes", [])}} for name, v in data.items()}


def _builtin() -> bool:
    return releases() is BUILTIN_RELEASES


_FULL_REGISTRY = "install sae_lens for the full registry (pip install sae-lens)"


def _close(word: str, options) -> str:
    near = difflib.get_close_matches(word, list(options), n=5, cutoff=0.5)
    return f"close matches: {near}" if near else f"{len(options)} known, e.g. {sorted(options)[:5]}"


def check_release(release: str) -> dict[str, Any]:
    """The entry of a listed release, after refusing one load.py cannot read as SAELens does: a conversion
    it does not implement, or a config override that changes the SAE's input in a way ours cannot."""
    entry = releases()[release]
    conversion = entry.get("conversion")
    if conversion in _NOT_RESIDUAL_SAES:
        raise ValueError(f"release {release!r} holds {_NOT_RESIDUAL_SAES[conversion]}, not residual-stream SAEs")
    if conversion not in CONVERSIONS:
        what = _NOT_READ_YET.get(conversion, f"stored for SAELens' {conversion!r} conversion")
        raise ValueError(f"release {release!r} is {what}, a format we do not read yet")
    overrides = entry.get("config_overrides") or {}
    norm = overrides.get("normalize_activations") or "none"
    if norm != "none":  # constant_norm_rescale: each token scaled to norm sqrt(d_in), the output scaled back
        raise ValueError(f"release {release!r}: SAELens rescales its inputs (config override normalize_activations="
                         f"{norm!r}), which our SAE class does not implement; refused rather than read on unscaled "
                         "inputs")
    unknown = sorted(set(overrides.get("model_from_pretrained_kwargs") or {}) - set(MODEL_KWARGS))
    if unknown:
        raise ValueError(f"release {release!r} was trained on a model loaded with {unknown}, which load.py does not "
                         "reproduce")
    return entry


def resolve_release(release: str, sae_id: str) -> tuple[str, str, str | None]:
    """(repo_id, path in the repo, conversion) of a SAELens release + sae_id. A release SAELens does not
    list but shaped like a Hub repo id is taken as one (sae_id its folder), as SAELens does."""
    table = releases()
    if release not in table:
        if re.fullmatch(r"[\w.\-]+/[\w.\-]+", release):
            return release, sae_id, None
        where = f"in the built-in table ({_close(release, table)}); {_FULL_REGISTRY}" if _builtin() else \
            f"a SAELens release ({_close(release, table)})"
        raise ValueError(f"release={release!r} is not {where}")
    entry = check_release(release)
    if sae_id not in entry["saes"]:
        if _builtin():
            raise ValueError(f"sae_id={sae_id!r} is not in the built-in table's list for {release!r} "
                             f"({_close(sae_id, entry['saes'])}); {_FULL_REGISTRY}")
        raise ValueError(f"sae_id={sae_id!r} is not in release {release!r} ({_close(sae_id, entry['saes'])})")
    return entry["repo_id"], entry["saes"][sae_id], entry["conversion"]


def centred_input(sae: str) -> bool:
    """Whether the SAEs of release `sae` read TransformerLens' centred residual stream (x - mean(x) over d_model):
    the release's config_overrides load its model with center_writing_weights (gpt2-small-res-jb), which
    load.py folds into the encoder. False for anything that is not such a release (a folder, a Hub repo, TRAIN_TINY)."""
    if not isinstance(sae, str) or sae == TRAIN_TINY or Path(sae).is_dir():  # as check_source: no table read
        return False
    entry = releases().get(sae)
    return centres_input((entry or {}).get("config_overrides") or {})


def centres_input(overrides: dict) -> bool:
    """Whether a release's config_overrides centre the residual its SAEs read (center_writing_weights)."""
    return bool((overrides.get("model_from_pretrained_kwargs") or {}).get("center_writing_weights"))


def sae_layer_from_id(sae_id: str) -> int | None:
    """The block whose output a release's SAE id reads ("blocks.8.hook_resid_pre" -> 7, "...resid_post" -> 8,
    Gemma Scope's "layer_12/..." -> 12), or None when the id does not say."""
    m = re.search(r"blocks\.(\d+)\.hook_resid_(pre|post)", sae_id or "")
    if m:
        return int(m.group(1)) - (1 if m.group(2) == "pre" else 0)
    m = re.search(r"layer_(\d+)", sae_id or "")
    return int(m.group(1)) if m else None


TRAIN_TINY = "train-tiny"  # SAE = this: the notebook trains a small SAE itself (recipes.tiny_sae)
TRAIN_TINY_EXPANSION = 4  # its width: d_sae = this x the model's d_model


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
        else:
            check_release(sae)
        return sae
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", sae):
        if sae_id and QWEN_SCOPE_FILE.search(sae_id):
            raise ValueError(f"{sae}/{sae_id} is {QWEN_SCOPE_NOTE}")
        return sae
    where = "a release in the built-in table" if _builtin() else "a SAELens release"
    raise ValueError(f"is neither {where} ({_close(sae, releases())}), a local folder, a Hub repo id '<user>/<name>' "
                     f"nor {TRAIN_TINY!r}" + (f"; for another release, {_FULL_REGISTRY}" if _builtin() else ""))



def _hub_cfg(repo_id: str, subfolder: str) -> dict | None:
    """The cfg.json of repo_id/subfolder from the Hub (a few hundred bytes, cached), or None when it
    cannot be had (offline, no such file, a gated repo without a token)."""
    try:
        from huggingface_hub import hf_hub_download

        from ..runtime import hf_token

        prefix = f"{subfolder.strip('/')}/" if subfolder.strip("/") else ""
        return json.loads(Path(hf_hub_download(repo_id, prefix + "cfg.json", token=hf_token())).read_text())
    except Exception:  # the loader reports what is wrong when it downloads the SAE itself
        return None


def sae_facts(sae: str, sae_id: str = "") -> SaeFacts | None:
    """What a notebook's SAE / SAE_ID pair says about the SAE before its weights load: from a release's
    entry (Gemma Scope: its repo and path; a SAELens release: its cfg.json, fetched, else the hook its
    sae_id names), a local folder's files, or a Hub repo's cfg.json. None when nothing can be read
    (TRAIN_TINY, offline); config errors (a transcoder, an attention head) raise a one-line ValueError."""
    sae_id = sae_id or ""
    if sae == TRAIN_TINY:
        return None
    if Path(sae).is_dir():
        path = Path(sae) / sae_id
        return folder_facts(path.parent if path.is_file() else path) if path.exists() else None
    if sae in releases():
        repo, path, conversion = resolve_release(sae, sae_id)
        overrides = releases()[sae].get("config_overrides") or {}
        if conversion == "gemma_2":
            facts = gemma_scope_facts(repo, path)
        else:
            cfg = _hub_cfg(repo, path)
            # offline: SAELens-format releases name each SAE by its hook (blocks.8.hook_resid_pre, ...)
            facts = facts_from_cfg({**cfg, **overrides}, path.rsplit("/", 1)[-1]) if cfg else \
                SaeFacts(hook=sae_id if _TL_SITE.match(sae_id) else None)
        hook = overrides.get("hook_name") or facts.hook
        return SaeFacts(hook, facts.d_in, facts.d_sae)
    if _GEMMA_SCOPE.search(sae):
        return gemma_scope_facts(sae, sae_id)
    cfg = _hub_cfg(sae, sae_id)
    return facts_from_cfg(cfg, sae_id.rstrip("/").rsplit("/", 1)[-1]) if cfg else None
