"""Notebook plumbing shared by every notebook of the ladder: set-up, parameter checks, figures, reports.

`run = start(globals())` runs in the first code cell after the parameters cell, before any model
loads: it checks the parameters, makes OUTPUT_DIR, seeds everything and says where it runs. Then
`run.load_model()` loads MODEL_ID with its one-line summary, `run.save_figure(fig, name)` saves and
shows a figure, and `run.write_report(name, payload)` writes a JSON report stamped under "run"
with the notebook, model, seed, parameters (never a secret) and the vendored core's hash.

`check_parameters(globals())` is what `start` checks with. Each parameter is checked by the rule of its NAME in `RULES` (one table for every
notebook, so LAYER or BATCH_SIZE mean the same everywhere); a bad value stops the notebook with a
one-line `ParameterError` naming the parameter, the value and what to change. It returns the
values normalised (layers as non-negative indices, devices resolved, dtypes as torch dtypes).
Checks that need the model read its config only (`models.load_config`), never the weights.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import data, hooks, models, runtime, sae_releases, synthetic, tiers


class ParameterError(ValueError):
    """A notebook parameter with a bad value; the message is one line: NAME = value: what to change."""


class Parameters(dict):
    """The checked, normalised parameters by name; also readable as attributes (P.LAYER).

    `given` holds the same parameters as the user set them (what reports record)."""

    def __init__(self, *args, given: dict | None = None, **kw):
        super().__init__(*args, **kw)
        self.given = dict(given or {})

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}; this notebook has {', '.join(self)}") from None

    def one_layer(self, name: str = "LAYER") -> int:
        """The one block index that `name` holds, for a notebook that reads a single layer."""
        layers = self[name]
        if len(layers) != 1:
            raise ParameterError(f"{name} = {self.given.get(name, layers)!r}: this notebook reads one layer; "
                                 "give one block index")
        return layers[0]


class _Context:
    """What a rule may consult: every raw parameter, and the model's layer count read from its config."""

    def __init__(self, params: dict):
        self.params = params
        self.name = ""  # the parameter being checked
        self._n_layers: int | None = None

    def n_layers(self) -> int:
        if self._n_layers is None:
            cfg = models.load_config(self.params["MODEL_ID"])
            self._n_layers = int(cfg.num_hidden_layers)
        return self._n_layers


Rule = Callable[[Any, _Context], Any]


# ------------------------------------------------------------------------------------ rule makers

def _int(minimum: int | None = None, hint: str = "") -> Rule:
    def rule(v, ctx):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or float(v) != int(v):
            raise ValueError(f"must be a whole number{hint}")
        v = int(v)
        if minimum is not None and v < minimum:
            raise ValueError(f"must be >= {minimum}{hint}")
        return v
    return rule


def _number(low: float = 0.0, *, open_low: bool = True, high: float | None = None, open_high: bool = True,
            hint: str = "") -> Rule:
    def rule(v, ctx):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != v:
            raise ValueError(f"must be a number{hint}")
        if (v <= low if open_low else v < low) or (high is not None and (v >= high if open_high else v > high)):
            lo = f"{'>' if open_low else '>='} {low:g}"
            hi = "" if high is None else f" and {'<' if open_high else '<='} {high:g}"
            raise ValueError(f"must be {lo}{hi}{hint}")
        return float(v)
    return rule


def _choice(*options) -> Rule:
    def rule(v, ctx):
        if v not in options:
            raise ValueError(f"must be one of {', '.join(map(repr, options))}")
        return v
    return rule


def _bool(v, ctx):
    if not isinstance(v, bool):
        raise ValueError("must be True or False")
    return v


def _text(empty_ok: bool = False) -> Rule:
    def rule(v, ctx):
        if not isinstance(v, str) or (not empty_ok and not v.strip()):
            raise ValueError("must be a non-empty string" if not empty_ok else "must be a string")
        return v
    return rule


def _strings(v, ctx):
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(s, str) and s.strip() for s in v):
        raise ValueError('must be a non-empty list of non-empty strings, e.g. ["The cat", "The dog"]')
    return list(v)


def _numbers(v, ctx):
    if (not isinstance(v, (list, tuple)) or not v
            or not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v)):
        raise ValueError("must be a non-empty list of numbers, e.g. [-4, 0, 4]")
    return [float(x) for x in v]


def _pairs(v, ctx):
    ok = isinstance(v, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(s, str) and s.strip() for s in p) for p in v)
    if not ok:
        raise ValueError('must be a list of (positive, negative) string pairs, or [] to generate them')
    return [tuple(p) for p in v]


def _layers(allow_empty: bool = False) -> Rule:
    def rule(v, ctx):
        return sorted(hooks.resolve_layers(v, ctx.n_layers(), allow_empty=allow_empty, name=ctx.name))
    return rule


def _several_layers(v, ctx):
    """LAYERS: one or more layers; at least 2 where the notebook spans layers (a crosscoder, 17, has a
    SPARSITY; a sparse feature circuit, 15, has SAE_IDS)."""
    layers = _layers()(v, ctx)
    if len(layers) < 2 and ("SPARSITY" in ctx.params or "SAE_IDS" in ctx.params):
        what = "a crosscoder reads and writes" if "SPARSITY" in ctx.params else "a sparse feature circuit spans"
        raise ValueError(f"{what} at least 2 layers: give 2 or more block indices, e.g. [6, 12, 18]")
    return layers


def _device(auto: str, empty_ok: bool = False) -> Rule:
    def rule(v, ctx):
        if not isinstance(v, str) or (not v.strip() and not empty_ok):
            raise ValueError("must be a device name such as 'auto', 'cpu' or 'cuda:0'")
        if not v.strip():
            return None
        return str(runtime.resolve_device(v, auto=auto))
    return rule


def _repo_id(v: str) -> str:
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id(v)  # HFValidationError (a ValueError) with a one-line reason
    return v


def _path(v, ctx):
    _text()(v, ctx)
    if os.path.isfile(v):
        raise ValueError("is an existing file; name a folder")
    return v


# ------------------------------------------------------------------------------------ named rules

def _model_id(v, ctx):
    _text()(v, ctx)
    models.load_config(v)  # one-line ModelUnavailable: not on the Hub, gated, offline and not cached
    return v.strip()


def _dataset(v, ctx):
    """A labelled task (imdb, synthetic:truth, ...) or a text source (synthetic, hf:..., a local path)."""
    _text()(v, ctx)
    try:
        return data.check_task_dataset(v)
    except ValueError:
        pass
    try:
        data.parse_source(v)
    except ValueError:
        raise ValueError(f"is neither a text source ('synthetic', 'hf:<path>[:<config>[:<split>[:<field>]]]' or "
                         f"local .txt/.md/.jsonl files) nor a labelled task ({', '.join(data.TASK_DATASETS)}, "
                         f"synthetic:<{'|'.join(synthetic.TASKS)}>)") from None
    return v


def _text_mix(v, ctx):
    """DATASET as a mix: a list of text sources, each "spec@weight" (weights are shares of the tokens)."""
    if not v or not all(isinstance(s, str) and s.strip() for s in v):
        raise ValueError('must be a text source or a non-empty list of them, e.g. ["synthetic@0.7", "synthetic@0.3"]')
    for spec in v:
        try:
            data.parse_source(spec)
        except ValueError as e:
            raise ValueError(f"mix entry {spec!r}: {e}") from None
    return list(v)


def _training_data(v, ctx):
    """One source or task (_dataset), or a list of text sources mixed by their @weights."""
    return _text_mix(v, ctx) if isinstance(v, (list, tuple)) else _dataset(v, ctx)


def _block_batches(v, ctx):
    return v if v == "auto" else _int(1, " or 'auto' (sized from free memory)")(v, ctx)


def _val_dataset(v, ctx):
    if isinstance(v, str) and not v.strip():
        return ""
    return _dataset(v, ctx)


def _k(v, ctx):
    k = _int(1)(v, ctx)
    d_sae = ctx.params.get("D_SAE")
    if isinstance(d_sae, int) and k > d_sae:
        raise ValueError(f"must be <= D_SAE ({d_sae}): an SAE cannot keep more latents than it has")
    return k


def _lr(v, ctx):
    if "OPTIMIZER" in ctx.params:  # the tuned lens: 0 picks the optimizer's own default
        return _number(0.0, open_low=False, hint=" (0 = the optimizer's default)")(v, ctx)
    return _number(0.0, hint=", e.g. 2e-4")(v, ctx)


def _lr_min(v, ctx):
    lr_min = _number(0.0, open_low=False)(v, ctx)
    lr = ctx.params.get("LR")
    if isinstance(lr, numbers.Real) and lr_min > lr:
        raise ValueError(f"must be <= LR ({lr:g}): it is the floor the learning rate decays to")
    return lr_min


def _concept(v, ctx):
    _text()(v, ctx)
    if not ctx.params.get("CONTRAST_PAIRS") and v not in synthetic.CONCEPTS:
        raise ValueError(f"has no built-in pairs: use one of {', '.join(synthetic.CONCEPTS)}, or fill CONTRAST_PAIRS")
    return v


def _gpu(v, ctx):
    if v == "auto":
        return v
    return tiers.gpu_class(v).name


def _checkpoint_dir(v, ctx):
    _text()(v, ctx)
    if v.startswith("hf:"):
        return "hf:" + _repo_id(v[3:])
    return v if v == "auto" else _path(v, ctx)


def _hf_repo(v, ctx):
    _text(empty_ok=True)(v, ctx)
    return _repo_id(v) if v.strip() else ""


def _run_name(v, ctx):
    _text()(v, ctx)
    if "/" in v:
        raise ValueError("is a folder and repo name: leave out '/'")
    return _repo_id(v)


def _hf_username(v, ctx):
    """A Hugging Face user (or organisation) name, or '' for none: it names the run's Hub repos."""
    _text(empty_ok=True)(v, ctx)
    v = v.strip()
    if not v:
        return ""
    if "/" in v:
        raise ValueError("is your Hugging Face user name alone: leave out '/' (the checkpoints go to "
                         "<HF_USERNAME>/<RUN_NAME>-checkpoints)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
        raise ValueError("must be a Hugging Face user name: letters, digits, '-', '_' or '.', no spaces")
    run_name = ctx.params.get("RUN_NAME")
    if isinstance(run_name, str) and run_name.strip() and "/" not in run_name:
        _repo_id(f"{v}/{run_name.strip()}-checkpoints")
    return v


def _dtype(v, ctx):
    _choice(*runtime.DTYPES)(v, ctx)
    return None if v == "auto" else runtime.resolve_dtype(v)  # "auto": load_model decides per device


def _feature(v, ctx):
    if isinstance(v, str):
        _text()(v, ctx)
        if not str(ctx.params.get("FEATURE_CATALOG", "")).strip():
            raise ValueError("words search FEATURE_CATALOG's labels: set FEATURE_CATALOG to a feature_catalog.json "
                             "(notebook 04's output), or give a latent id")
        return v
    v = _int(-1, " (a latent id, -1 = the top-ranked one, or words to search the catalog labels)")(v, ctx)
    _within_sae([v] if v >= 0 else [], ctx)
    return v


def _latent_ids(v, or_else: str) -> list[int]:
    """A list of latent ids (ints >= 0); or_else ends the error: what else the parameter may be."""
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                   for x in v):
        raise ValueError(f"must be a list of latent ids, e.g. [101, 2048], {or_else}")
    return [int(x) for x in v]


def _distinct(items: list, what: str) -> list:
    """items, or a one-line error when one appears twice."""
    if len(set(items)) != len(items):
        raise ValueError(f"lists a {what} twice ({items}): give each {what} once")
    return items


def _features_list(v, ctx):
    return _within_sae(_latent_ids(v, "or [] to watch the top-ranked ones"), ctx)


def _prompts(v, ctx):
    if isinstance(v, str):
        return _dataset(v, ctx)
    return _strings(v, ctx)


_POS = _int(1)
_NONNEG = _int(0)

RULES: dict[str, Rule] = {
    # model and layers (MODEL_ID first: the layer rules read its config)
    "MODEL_ID": _model_id,
    "LAYER": _layers(),
    "LAYERS": _several_layers,
    "SWEEP_LAYERS": _layers(allow_empty=True),
    # data
    "DATASET": _training_data,
    "VAL_DATASET": _val_dataset,
    "CONTEXT_LEN": _POS, "MAX_LEN": _POS, "MAX_TEXT_TOKENS": _POS,
    "N_TRAIN": _POS, "N_TEST": _POS, "EVAL_DOCS": _POS, "EVAL_BATCHES": _POS,
    "PROMPT": _text(),
    "CONCEPT": _concept, "CONTRAST_PAIRS": _pairs, "N_PAIRS": _int(0, " (0 = every pair)"),
    "MONITOR_PROMPTS": _strings, "STEER_PROMPTS": _strings,
    # SAE training
    "D_SAE": _POS, "K": _k,
    "TOTAL_TOKENS": _POS, "BATCH_TOKENS": _POS, "MODEL_BATCH_SIZE": _POS, "BLOCK_BATCHES": _block_batches,
    "LR": _lr, "LR_MIN": _lr_min, "WARMUP_STEPS": _NONNEG,
    "DEAD_TOKENS_THRESHOLD": _POS, "CHECKPOINT_EVERY_TOKENS": _POS, "VAL_TOKENS": _POS,
    # lenses, probes, steering
    "BATCH_SIZE": _POS, "FIT_STEPS": _POS, "N_RESTARTS": _POS, "N_EPOCHS": _POS, "MAX_NEW_TOKENS": _POS,
    "TOP_K": _POS, "MAX_TOKENS_SHOWN": _POS,
    "TRY_PRETRAINED": _bool, "OPTIMIZER": _choice("adam", "sgd"), "POOL": _choice("mean", "last"),
    "PROBE_C": _number(0.0), "TEST_FRAC": _number(0.0, high=1.0), "NORM_FRACTION": _number(0.0),
    "ALPHAS": _numbers,
    # planning (07)
    "GPU": _gpu, "BUDGET_MINUTES": _number(0.0), "GOAL": _choice(*tiers.GOALS),
    # where things run and go
    "MODEL_DEVICE": _device("first"), "SAE_DEVICE": _device("last"), "DEVICE": _device("first", empty_ok=True),
    "MODEL_DTYPE": _dtype,
    "CHECKPOINT_DIR": _checkpoint_dir, "RUN_NAME": _run_name, "HF_REPO": _hf_repo, "HF_PRIVATE": _bool,
    "HF_USERNAME": _hf_username, "CHECKPOINT_EVERY_MINUTES": _number(0.0, hint=" (minutes a crash may lose)"),
    "ALLOW_UNRESUMABLE": _bool, "ALLOW_STREAM_CHANGE": _bool,
    "OUTPUT_DIR": _path, "SEED": _int(0),
    # using an SAE (06, 13)
    "FEATURE": _feature, "FEATURE_CATALOG": _text(empty_ok=True),
    "BASELINE_TOKENS": _POS, "WATCH_FEATURES": _features_list,
    "PERCENTILE": _number(0.0, high=100.0, hint=", e.g. 99.5"), "PROMPTS": _prompts, "N_PROMPTS": _POS,
}

def _val_frac(v, ctx):
    """The validation share of RepE's pairs (23): in (0, 1), and with TEST_FRAC below 1 (the rest fits)."""
    v = _number(0.0, high=1.0)(v, ctx)
    test = ctx.params.get("TEST_FRAC")
    if isinstance(test, numbers.Real) and not isinstance(test, bool) and v + test >= 1:
        raise ValueError(f"VAL_FRAC + TEST_FRAC = {v + test:g} must be < 1: the rest of the pairs fits the vectors")
    return v


RULES["VAL_FRAC"] = _val_frac

# --- using an SAE (04, 05): which SAE, how many tokens and features, the judge, a catalog to name features


def _sae(v, ctx):
    sae_releases.check_source(v)
    if "LAYER" in ctx.params and ctx.params.get("SAE_ID", "") == "":  # a folder itself: SAE names it
        _check_sae_site(ctx, "", ctx.params["LAYER"], "LAYER")
    return v


def _sae_id(v, ctx):
    """The SAE in SAE's release (checked against the release's list), or SAE's subfolder ('' for none);
    where its files or release say its hook, the residual stream after block LAYER (and its d_in the model's)."""
    sae = ctx.params.get("SAE")
    if isinstance(sae, str) and sae.strip():
        sae_releases.check_source(sae, v)
    v = _text(empty_ok=True)(v, ctx)
    if "LAYER" in ctx.params and v:  # SAE_ID = "": checked under SAE
        _check_sae_site(ctx, v, ctx.params["LAYER"], "LAYER")
    return v


def _sae_facts(ctx, sae_id: str | None = None):
    """What SAE / SAE_ID (or sae_id) say about the SAE before its weights load (sae_releases.sae_facts;
    "train-tiny": its width from MODEL_ID's config), once per pair; None when unknown, the error when
    they are bad (the SAE / SAE_ID rules report it, the latent-id rules skip it)."""
    sae = ctx.params.get("SAE")
    sae_id = ctx.params.get("SAE_ID", "") if sae_id is None else sae_id
    cache = ctx.__dict__.setdefault("sae_facts", {})
    key = (str(sae), str(sae_id))
    if key not in cache:
        try:
            if sae == sae_releases.TRAIN_TINY:
                cache[key] = sae_releases.SaeFacts(d_sae=sae_releases.TRAIN_TINY_EXPANSION * _d_model(ctx))
            else:
                sae_releases.check_source(sae, sae_id)
                cache[key] = sae_releases.sae_facts(sae, sae_id)
        except (ValueError, TypeError, KeyError, OSError) as e:
            cache[key] = e
    return cache[key]


def _d_model(ctx) -> int:
    return int(models.load_config(ctx.params["MODEL_ID"]).hidden_size)


def _check_sae_site(ctx, sae_id: str, layer_spec, layer_name: str) -> None:
    """A one-line error when the SAE's files say it reads another site than the residual stream after
    block layer_spec, or another width than the model's; nothing when they do not say."""
    facts = _sae_facts(ctx, sae_id)
    if isinstance(facts, Exception):
        raise facts
    if facts is None:
        return
    try:
        layers = hooks.resolve_layers(layer_spec, ctx.n_layers())
        width = _d_model(ctx)
    except (ValueError, TypeError, KeyError, AttributeError, OSError):
        return  # LAYER's and MODEL_ID's own rules report those
    why = sae_releases.layer_mismatch(facts.hook, layers[0], layer_name) if len(layers) == 1 else None
    if why is None and facts.d_in is not None and facts.d_in != width:
        why = (f"this SAE reads d_in={facts.d_in} activations but MODEL_ID's residual stream is {width} wide: "
               "pick the SAE trained for this model")
    if why:
        raise ValueError(why)


def _beyond_width(ids: list, d_sae: int | None) -> str | None:
    """Why latent ids do not fit an SAE of d_sae latents (None when they do, or d_sae is unknown)."""
    bad = [i for i in ids if d_sae is not None and i >= d_sae]
    if not bad:
        return None
    return f"latent id{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad[:3]))} beyond the SAE's {d_sae} " \
           f"latents (ids 0..{d_sae - 1})"


def _within_sae(ids: list, ctx) -> list:
    """ids, after checking them against the SAE's width where SAE / SAE_ID tell it before loading."""
    facts = _sae_facts(ctx)
    why = _beyond_width(ids, getattr(facts, "d_sae", None))
    if why:
        raise ValueError(why)
    return ids


# the parameters that hold latent ids, checked again against the SAE's width once it has loaded
LATENT_ID_PARAMETERS = ("FEATURE", "WATCH_FEATURES", "HELPFUL_PACK", "HARMFUL_PACK")


def check_loaded_sae(P, hook: str | None, d_sae: int, layer: int) -> None:
    """The first cell's SAE checks, made again on the loaded SAE (where its files or release could not
    be read before): its hook against the layer it is read at, the latent-id parameters against its
    width; a one-line ParameterError in the parameters' words."""
    given = getattr(P, "given", {})
    name = "SAE_ID" if P.get("SAE_ID") else "SAE"
    why = sae_releases.layer_mismatch(hook, layer, "LAYER" if "LAYER" in P else "its LAYERS entry")
    if why:
        raise ParameterError(f"{name} = {_short(given.get(name, P.get(name)))}: {why}")
    if hook is None:
        print(f"note: the SAE's files do not say which hook it was trained on; it is read as the residual stream "
              f"after block {layer}")
    for pname in LATENT_ID_PARAMETERS:
        value = P.get(pname)
        ids = [value] if isinstance(value, int) and value >= 0 else value if isinstance(value, list) else []
        why = _beyond_width(ids, d_sae)
        if why:
            raise ParameterError(f"{pname} = {_short(given.get(pname, value))}: {why}")


def _catalog_file(v, ctx):
    _text(empty_ok=True)(v, ctx)
    if v.strip() and not (v.endswith(".json") and os.path.isfile(v)):
        raise ValueError("must be '' (no catalog) or the path of a feature_catalog.json file (notebook 04's output)")
    return v.strip()


RULES.update({
    "SAE": _sae, "SAE_ID": _sae_id, "N_TOKENS": _POS, "N_FEATURES": _POS, "DETECTION_TOKENS": _POS,
    "JUDGE": _choice("auto", "anthropic", "openai", "offline"), "ANTHROPIC_MODEL": _text(), "OPENAI_MODEL": _text(),
    "CATALOG": _catalog_file, "FEATURE_CATALOG": _catalog_file,  # a catalog to name features by (06, 11)
})

# --- Stage Gate G1 (11): which problems, whose answers, the feature packs


def _responses(v, ctx):
    _choice("generate", "dataset")(v, ctx)
    if v == "dataset" and ctx.params.get("PROBLEMS") != "synthetic:arithmetic":
        raise ValueError("'dataset' scores the dataset's own model-style answers, which only PROBLEMS = "
                         "'synthetic:arithmetic' has: use 'generate'")
    return v


def _pack(v, ctx):
    """A feature pack: latent ids, words to search FEATURE_CATALOG's labels, or [] to choose it on a selection split."""
    if isinstance(v, str):
        _text()(v, ctx)
        if not str(ctx.params.get("FEATURE_CATALOG", "")).strip():
            raise ValueError("words search FEATURE_CATALOG's labels: set FEATURE_CATALOG, or give latent ids")
    else:
        v = _within_sae(_latent_ids(v, "words to search FEATURE_CATALOG's labels, or [] to choose the pack on the "
                                       "selection split"), ctx)
    if ctx.name == "HARMFUL_PACK" and (v == []) != (ctx.params.get("HELPFUL_PACK") in ([], None)):
        raise ValueError("give both HELPFUL_PACK and HARMFUL_PACK, or leave both [] to choose them on the selection split")
    return v


RULES.update({
    "PROBLEMS": _choice("gsm8k", "synthetic:arithmetic"),  # gates.DATASETS
    "RESPONSES": _responses, "N_EVAL": _POS, "N_SELECT": _POS, "PACK_SIZE": _POS,
    "HELPFUL_PACK": _pack, "HARMFUL_PACK": _pack,
})

# --- circuits (14): the task, its metric, what a node is patched to, AtP*'s two fixes
# (the names are shared.circuits' TASKS / GRADIENT_METRICS / ABLATIONS, written out so every notebook's
# parameter check does not vendor the circuits package; tests/test_circuits_tasks.py keeps them equal)


def _gradient_metric(v, ctx):
    if v == "kl":
        raise ValueError("has zero gradient on the clean run (KL to the clean run is smallest there), so AtP "
                         "would score every node 0: use 'logit_diff' or 'prob'")
    return _choice("logit_diff", "prob")(v, ctx)


RULES.update({
    "TASK": _choice("ioi", "sva", "synthetic"), "METRIC": _gradient_metric,
    "COUNTERFACTUAL": _choice("mean", "resample", "zero"), "USE_QK_FIX": _bool, "USE_GRADDROP": _bool,
    "TOP_N": _POS,
})

# --- a k sweep of SAE architectures (12): which architectures, which k


# the architectures a k sweep trains: sweep.k_architectures(), written out so the parameter check does not
# vendor the SAE classes (tests/test_parameters.py keeps them equal)
SWEEP_ARCHITECTURES = ("batchtopk", "matryoshka_batchtopk", "topk")


def _architectures(v, ctx):
    if (isinstance(v, str) or not isinstance(v, (list, tuple)) or not v
            or not all(isinstance(s, str) and s.strip() for s in v)):
        raise ValueError("must be a non-empty list of architecture names, e.g. ['topk', 'batchtopk']")
    unknown = [a for a in v if a not in SWEEP_ARCHITECTURES]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not an architecture with a k to sweep: use "
                         f"{', '.join(map(repr, SWEEP_ARCHITECTURES))}")
    return _distinct(list(v), "architecture")


def _k_values(v, ctx):
    if isinstance(v, (str, bool)) or not isinstance(v, (list, tuple)) or not v:
        raise ValueError("must be a non-empty list of k values, e.g. [16, 32, 64, 128]")
    return _distinct([_k(k, ctx) for k in v], "k")


RULES.update({"ARCHITECTURES": _architectures, "K_VALUES": _k_values})


RULES.update({  # crosscoders (17): the sparsity (crosscoder.ARCHITECTURES) and the classification thresholds
    "SPARSITY": _choice("topk", "l1"), "L1_COEFFICIENT": _number(0.0, open_low=False),
    "DOMINANT_SHARE": _number(0.5, high=1.0, open_high=False, hint=" (one layer at most can dominate)"),
    "PERSISTENT_SHARE": _number(0.0, high=0.5, open_high=False, hint=" and <= 1/len(LAYERS)"),
})

# --- InterpScore (18): the binary labelled tasks its probes read, what it evaluates on

_BINARY_TASKS = ("amazon_sentiment", "bias_in_bios_gender", "imdb", "sst2", "truthful_qa", "synthetic:sentiment",
                 "synthetic:truth", "synthetic:names")


def _probe_tasks(v, ctx):
    """A non-empty list of binary labelled tasks (aliases resolved); the first is InterpScore's TPP concept."""
    if isinstance(v, str) or not isinstance(v, (list, tuple)) or not v:
        raise ValueError(f'must be a non-empty list of binary tasks, e.g. ["imdb", "sst2"]; '
                         f'valid: {", ".join(_BINARY_TASKS)}')
    out = []
    for task in v:
        name = _dataset(task, ctx) if isinstance(task, str) else task
        if name not in _BINARY_TASKS:
            raise ValueError(f"{task!r} is not a binary labelled task; valid: {', '.join(_BINARY_TASKS)}")
        out.append(name)
    return _distinct(out, "task")


RULES.update({"PROBE_TASKS": _probe_tasks, "EVAL_TOKENS": _POS, "TOKENS_TRAINED": _NONNEG})

# --- sparse feature circuits (15): one SAE per layer, node method, thresholds


def _sae_ids(v, ctx):
    """One SAE id per LAYERS entry (>= 2), each checked against SAE's release ('' for a folder or train-tiny)."""
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of strings: one SAE id (or subfolder, '' for none) per LAYERS entry")
    if len(v) < 2:
        raise ValueError("must name >= 2 SAEs: a sparse feature circuit needs SAEs at two or more LAYERS")
    sae = ctx.params.get("SAE")
    if isinstance(sae, str) and sae.strip():
        for x in v:
            sae_releases.check_source(sae, x)
    try:
        layers = hooks.resolve_layers(ctx.params["LAYERS"], ctx.n_layers())
    except (KeyError, ValueError, OSError):
        return list(v)  # LAYERS' own rule reports a bad LAYERS
    if len(layers) != len(v):
        raise ValueError(f"has {len(v)} entries but LAYERS has {len(layers)} layers: give one SAE id per layer, "
                         "in order")
    for i, (x, layer) in enumerate(zip(v, layers)):
        try:
            _check_sae_site(ctx, x, layer, f"LAYERS[{i}]")
        except ValueError as e:
            raise ValueError(f"entry {x!r}: {e}") from None
    return list(v)


RULES.update({
    "SAE_IDS": _sae_ids, "NODE_METHOD": _choice("ig", "atp"), "IG_STEPS": _POS,
    "TAU_NODE": _number(0.0, open_low=False, hint=" (|effect| in metric units)"),
    "TAU_EDGE": _number(0.0, open_low=False, hint=" (|effect| in metric units)"),
})

def _edge_budgets(v, ctx):
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError("must be a non-empty list of edge counts >= 1, e.g. [2, 5, 10, 20, 50, 100, 200]")
    return sorted({_POS(x, ctx) for x in v})


def _autocircuit_python(v, ctx):
    _text(empty_ok=True)(v, ctx)
    if v.strip() and not os.path.isfile(v.strip()):
        raise ValueError("must be '' (skip the AutoCircuit check) or the path of the python of a venv built by "
                         "scripts/autocircuit_venv.sh, e.g. '.venv-autocircuit/bin/python'")
    return v.strip()


# --- edge-level circuits (16): ACDC's threshold and target, the edge budgets of the faithfulness curves
RULES.update({
    "TAU": _number(0.0, open_low=False, hint=", e.g. 0.05 (ACDC removes an edge whose patching moves the target less)"),
    "ACDC_METRIC": _choice("kl", "logit_diff", "prob"), "EDGE_BUDGETS": _edge_budgets,
    "AUTOCIRCUIT_PYTHON": _autocircuit_python,
})



_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_parameters(params: dict) -> Parameters:
    """Check every parameter in `params` (a notebook's globals(), or a dict) that has a rule in RULES.

    Returns the normalised values by name. The first bad value raises a one-line ParameterError:
    "NAME = value: what is wrong and what to set". Upper-case names without a rule are skipped
    (tests/test_parameters.py makes sure every notebook's parameters have one).
    """
    raw = {k: v for k, v in params.items() if _NAME.fullmatch(k) and k in RULES}
    ctx = _Context(raw)
    out = Parameters(given=raw)
    for name in sorted(raw, key=list(RULES).index):
        ctx.name = name
        try:
            out[name] = RULES[name](raw[name], ctx)
        except (ValueError, TypeError, KeyError) as e:
            reason = " ".join(str(e).split())
            error = ParameterError(f"{name} = {_short(raw[name])}: {reason}")
        else:
            continue
        raise error from None
    return out


# ------------------------------------------------------------------------------------ set-up and output

FIGURE_DPI = 120  # every saved figure: this dpi, tight bounding box
_SECRET_PART = re.compile(r"(^|_)(TOKEN|KEY|SECRET|PASSWORD)(_|$)")  # HF_TOKEN, API_KEY; not TOTAL_TOKENS


def core_hash() -> tuple[str, str]:
    """(hash, where): the vendored core's content hash as the notebook's activation cell computed it
    ("vendored"), or, run from a checkout, the same hash over every module of shared/ ("checkout")."""
    import shared

    stamped = getattr(shared, "CORE_HASH", None)
    if stamped:
        return stamped, "vendored"
    root = Path(shared.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode("utf-8") + b"\0" + path.read_text(encoding="utf-8").encode("utf-8") + b"\0")
    return h.hexdigest()[:16], "checkout"


def reportable_parameters(params: dict) -> dict:
    """The parameters as set (names with a rule in RULES), for a report: never a secret's value."""
    from .runtime import Secret

    return {k: v for k, v in params.items()
            if k in RULES and not _SECRET_PART.search(k) and not isinstance(v, Secret)}


@dataclass
class Run:
    """One notebook run, from `start`: its checked parameters, output folder, seed and identity."""

    params: Parameters
    raw: dict  # the parameters as the user set them (JSON-able), for the report
    out_dir: Path
    seed: int
    notebook: str
    model_id: str | None = None  # set by load_model
    extra: dict = field(default_factory=dict)

    def load_model(self, **kw):
        """(model, tokenizer) for MODEL_ID on MODEL_DEVICE or DEVICE with MODEL_DTYPE, and its summary line."""
        from . import models

        P = self.params
        kw.setdefault("device", P.get("MODEL_DEVICE", P.get("DEVICE")))
        kw.setdefault("dtype", P.get("MODEL_DTYPE"))
        model, tokenizer = models.load_model(P.MODEL_ID, **kw)
        self.model_id = P.MODEL_ID
        print(models.describe(model, P.MODEL_ID))
        return model, tokenizer

    def save_figure(self, fig, name: str) -> Path:
        """Save `fig` (a Figure; or pyplot/None for the current figure) as OUTPUT_DIR/name, then show it."""
        import matplotlib.pyplot as plt

        if fig is None or fig is plt:
            fig = plt.gcf()
        path = self.out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
        plt.show()
        return path

    def stamp(self) -> dict:
        """What every report records about the run that wrote it."""
        digest, where = core_hash()
        model = self.model_id or self.raw.get("MODEL_ID")
        return {"notebook": self.notebook, **({"model": model} if model else {}), "seed": self.seed,
                "parameters": reportable_parameters(self.raw), "core_hash": digest, "core": where,
                "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def write_report(self, name: str, payload: dict) -> Path:
        """Write `payload` as OUTPUT_DIR/name (JSON) with the run's stamp added under "run"; its keys stay as given."""
        if "run" in payload:
            raise ValueError(f"report {name}: the key 'run' is the stamp's; rename that field")
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**payload, "run": self.stamp()}, indent=1, default=str))
        print(f"wrote {path}")
        return path


def start(params: dict) -> Run:
    """Set a notebook up: check the parameters (`check_parameters`' result, or globals() to check
    here), make OUTPUT_DIR, seed Python/NumPy/torch with SEED, and print where it runs."""
    import shared

    from . import runtime

    checked = params if isinstance(params, Parameters) else check_parameters(params)
    raw = checked.given
    out_dir = Path(checked["OUTPUT_DIR"])
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(checked.get("SEED", 0))
    runtime.seed_everything(seed)
    name = getattr(shared, "NOTEBOOK_ID", None) or out_dir.name  # set by the rendered notebook
    digest, where = core_hash()
    print(f"{name} on {runtime.platform()}: seed {seed}, outputs in {out_dir}, core {digest} ({where})")
    for g in runtime.gpu_info():
        print(f"  cuda:{g.index} {g.name}: {g.free_gb:.1f} of {g.total_gb:.1f} GiB free, bf16={g.bf16}")
    return Run(params=checked, raw=raw, out_dir=out_dir, seed=seed, notebook=name)

