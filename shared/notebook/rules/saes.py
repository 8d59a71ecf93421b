"""The rules of which SAE a notebook reads: SAE (a SAELens release, a folder, a Hub repo or "train-tiny"),
SAE_ID (the SAE in the release, or a subfolder) and SAE_IDS (one per LAYERS entry, 15), checked before any
weights load against the layer they are read at and the model's width (what the SAE's files or release
say: `saes.releases.sae_facts`); latent ids checked against the SAE's width (`within_sae`, which the
feature and pack rules use); and `check_loaded_sae`, the same checks made again once the SAE has loaded."""
from __future__ import annotations

from ...model import layout, loading
from ...saes import formats, releases
from ..parameters import ParameterError, Rule, short, text


def _sae(v, ctx):
    releases.check_source(v)
    if "LAYER" in ctx.params and ctx.params.get("SAE_ID", "") == "":  # a folder itself: SAE names it
        _check_sae_site(ctx, "", ctx.params["LAYER"], "LAYER")
    return v


def _sae_id(v, ctx):
    """The SAE in SAE's release (checked against the release's list), or SAE's subfolder ('' for none);
    where its files or release say its hook, the residual stream after block LAYER (and its d_in the model's)."""
    sae = ctx.params.get("SAE")
    if isinstance(sae, str) and sae.strip():
        releases.check_source(sae, v)
    v = text(empty_ok=True)(v, ctx)
    if "LAYER" in ctx.params and v:  # SAE_ID = "": checked under SAE
        _check_sae_site(ctx, v, ctx.params["LAYER"], "LAYER")
    return v


def _sae_ids(v, ctx):
    """One SAE id per LAYERS entry (>= 2), each checked against SAE's release ('' for a folder or train-tiny)."""
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of strings: one SAE id (or subfolder, '' for none) per LAYERS entry")
    if len(v) < 2:
        raise ValueError("must name >= 2 SAEs: a sparse feature circuit needs SAEs at two or more LAYERS")
    sae = ctx.params.get("SAE")
    if isinstance(sae, str) and sae.strip():
        for x in v:
            releases.check_source(sae, x)
    try:
        layers = layout.resolve_layers(ctx.params["LAYERS"], ctx.n_layers())
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


def _sae_facts(ctx, sae_id: str | None = None):
    """What SAE / SAE_ID (or sae_id) say about the SAE before its weights load (saes.releases.sae_facts;
    "train-tiny": its width from MODEL_ID's config), once per pair; None when unknown, the error when
    they are bad (the SAE / SAE_ID rules report it, the latent-id rules skip it)."""
    sae = ctx.params.get("SAE")
    sae_id = ctx.params.get("SAE_ID", "") if sae_id is None else sae_id
    cache = ctx.__dict__.setdefault("sae_facts", {})
    key = (str(sae), str(sae_id))
    if key not in cache:
        try:
            if sae == releases.TRAIN_TINY:
                cache[key] = formats.SaeFacts(d_sae=releases.TRAIN_TINY_EXPANSION * _d_model(ctx))
            else:
                releases.check_source(sae, sae_id)
                cache[key] = releases.sae_facts(sae, sae_id)
        except (ValueError, TypeError, KeyError, OSError) as e:
            cache[key] = e
    return cache[key]


def _d_model(ctx) -> int:
    return int(loading.load_config(ctx.params["MODEL_ID"]).hidden_size)


def _check_sae_site(ctx, sae_id: str, layer_spec, layer_name: str) -> None:
    """A one-line error when the SAE's files say it reads another site than the residual stream after
    block layer_spec, or another width than the model's; nothing when they do not say."""
    facts = _sae_facts(ctx, sae_id)
    if isinstance(facts, Exception):
        raise facts
    if facts is None:
        return
    try:
        layers = layout.resolve_layers(layer_spec, ctx.n_layers())
        width = _d_model(ctx)
    except (ValueError, TypeError, KeyError, AttributeError, OSError):
        return  # LAYER's and MODEL_ID's own rules report those
    why = formats.layer_mismatch(facts.hook, layers[0], layer_name) if len(layers) == 1 else None
    if why is None and facts.d_in is not None and facts.d_in != width:
        why = (f"this SAE reads d_in={facts.d_in} activations but MODEL_ID's residual stream is {width} wide: "
               "pick the SAE trained for this model")
    if why:
        raise ValueError(why)


# ------------------------------------------------------------------------------------ latent ids

def latent_ids(v, or_else: str) -> list[int]:
    """A list of latent ids (ints >= 0); or_else ends the error: what else the parameter may be."""
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                   for x in v):
        raise ValueError(f"must be a list of latent ids, e.g. [101, 2048], {or_else}")
    return [int(x) for x in v]


def _beyond_width(ids: list, d_sae: int | None) -> str | None:
    """Why latent ids do not fit an SAE of d_sae latents (None when they do, or d_sae is unknown)."""
    bad = [i for i in ids if d_sae is not None and i >= d_sae]
    if not bad:
        return None
    return f"latent id{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad[:3]))} beyond the SAE's {d_sae} " \
           f"latents (ids 0..{d_sae - 1})"


def within_sae(ids: list, ctx) -> list:
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
    why = formats.layer_mismatch(hook, layer, "LAYER" if "LAYER" in P else "its LAYERS entry")
    if why:
        raise ParameterError(f"{name} = {short(given.get(name, P.get(name)))}: {why}")
    if hook is None:
        print(f"note: the SAE's files do not say which hook it was trained on; it is read as the residual stream "
              f"after block {layer}")
    for pname in LATENT_ID_PARAMETERS:
        value = P.get(pname)
        ids = [value] if isinstance(value, int) and value >= 0 else value if isinstance(value, list) else []
        why = _beyond_width(ids, d_sae)
        if why:
            raise ParameterError(f"{pname} = {short(given.get(pname, value))}: {why}")


RULES: dict[str, Rule] = {"SAE": _sae, "SAE_ID": _sae_id, "SAE_IDS": _sae_ids}
