"""A model's layout, for any architecture: where its decoder blocks are (`layers_path`,
`decoder_layers`), how many (`n_layers`: the one place that counts a model's layers), its width,
final norm, unembedding and soft-cap, and `resolve_layers`, the one reading of a "which layers" spec
(negatives, lists, "all", "middle", "0-4") against a model or a layer count.

Works for Llama/Gemma/Qwen/Mistral/Phi-style `model.layers`, GPT-2 `transformer.h`, GPT-NeoX, and
multimodal wrappers whose text decoder sits under `language_model`. Named `layout` rather than
`layers` because every caller already holds a `layers` variable (the LAYER list it reads).
"""
from __future__ import annotations

import numbers
import re

import torch
from torch import nn

# Known places of the decoder-block ModuleList, most common first.
_LAYER_PATHS = (
    "model.layers", "model.language_model.layers", "language_model.model.layers", "language_model.layers",
    "model.text_model.layers", "model.model.layers", "transformer.h", "gpt_neox.layers",
    "model.decoder.layers", "transformer.layers", "transformer.blocks", "layers", "h",
)
_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f", "final_norm")
_NOT_TEXT = ("vision", "visual", "audio", "image", "vit", "encoder", "mtp")


# ----------------------------------------------------------------------------- layout helpers

def _get(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def text_config(model):
    """The text (decoder) config: `config.get_text_config()` of the model or of the LM inside a wrapper."""
    from transformers import PretrainedConfig

    cfg = getattr(model, "config", None)
    if not isinstance(cfg, PretrainedConfig):
        cfg = next((m.config for m in model.modules() if isinstance(getattr(m, "config", None), PretrainedConfig)),
                   None)
    if cfg is None:
        return None
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def layers_path(model: nn.Module) -> str:
    """Dotted path of the decoder-block ModuleList, e.g. 'model.layers', 'transformer.h'."""
    cached = getattr(model, "_sae_ladder_layers_path", None)
    if cached:
        return cached
    for path in _LAYER_PATHS:
        obj = _get(model, path)
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return path
    found = [(name, len(m), type(m[0]).__name__ if len(m) else "-")
             for name, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    cfg = text_config(model)
    want = getattr(cfg, "num_hidden_layers", None) if cfg is not None else None
    text = [f for f in found if f[1] > 0 and not any(w in f[0].lower() for w in _NOT_TEXT)
            and (want is None or f[1] == want)]
    if len(text) > 1:
        text = [f for f in text if "language" in f[0] or "text" in f[0]] or text
    if len(text) == 1:
        return text[0][0]
    listing = "; ".join(f"{n} (len {k}, {t})" for n, k, t in found) or "none"
    raise ValueError(
        f"Could not find the decoder layers of {type(model).__name__}: tried {', '.join(_LAYER_PATHS)}; "
        f"ModuleLists found: {listing}. Set `model._sae_ladder_layers_path = '<path>'` to the right one.")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks; hooks on block L see the residual stream output of layer L."""
    return _get(model, layers_path(model))


def n_layers(model_or_config) -> int:
    """How many decoder blocks: a model's block list's length (its text config's num_hidden_layers where
    the list cannot be found), or a config's num_hidden_layers (`loading.load_config`: before the
    weights load). The one place that counts a model's layers."""
    if not isinstance(model_or_config, nn.Module):
        return int(model_or_config.num_hidden_layers)
    try:
        return len(decoder_layers(model_or_config))
    except ValueError:
        n = getattr(text_config(model_or_config), "num_hidden_layers", None)
        if not isinstance(n, int):
            raise
        return n


def _layers_parent(model: nn.Module) -> nn.Module:
    path = layers_path(model)
    return _get(model, path.rsplit(".", 1)[0]) if "." in path else model


def d_model(model: nn.Module) -> int:
    """Residual-stream width."""
    cfg = text_config(model)
    for key in ("hidden_size", "n_embd", "d_model"):
        if cfg is not None and isinstance(getattr(cfg, key, None), int):
            return getattr(cfg, key)
    emb = getattr(_layers_parent(model), "embed_tokens", None) or getattr(_layers_parent(model), "wte", None)
    if emb is None:
        raise ValueError(f"Cannot tell d_model of {type(model).__name__}: no hidden_size in config, no embedding.")
    return emb.embedding_dim


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm applied after the last block (model.norm, transformer.ln_f, ...), or None."""
    parent = _layers_parent(model)
    for name in _NORM_NAMES:
        mod = getattr(parent, name, None)
        if isinstance(mod, nn.Module):
            return mod
    return None


def unembed(model: nn.Module) -> nn.Module:
    """The output projection to vocabulary logits (lm_head)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        head = getattr(model, "lm_head", None) or next(
            (m for n, m in model.named_modules() if n.endswith("lm_head")), None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no lm_head / output embeddings; load a *ForCausalLM model.")
    return head


def final_logit_softcap(model: nn.Module) -> float | None:
    """Gemma-2 style logits = cap * tanh(logits / cap); None when the model does not soft-cap."""
    cfg = text_config(model)
    cap = getattr(cfg, "final_logit_softcapping", None) if cfg is not None else None
    return float(cap) if cap else None


def model_device(model: nn.Module) -> torch.device:
    """Where input ids must go: the device of the input embedding (first shard under device_map)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device


# ----------------------------------------------------------------------------- which layers

_RANGE = re.compile(r"(-?\d+)-(-?\d+)")
_FORMS = ("an int such as 12 (negative counts from the end), a list such as [4, 8], 'all', 'middle', "
          "or comma-separated indices and ranges such as '0,3,5' or '0-4'")


def _count(model_or_n) -> int:
    if isinstance(model_or_n, numbers.Integral) and not isinstance(model_or_n, bool):
        n = int(model_or_n)
    else:
        n = n_layers(model_or_n)
    if n < 1:
        raise ValueError(f"n_layers must be >= 1, got {n}")
    return n


def _one(x, spec, n: int, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (numbers.Integral, str)):
        raise ValueError(f"{name} {spec!r} is not a layer spec: use {_FORMS}")
    try:
        x = int(x)
    except ValueError:
        raise ValueError(f"{name} {spec!r} is not a layer spec: use {_FORMS}") from None
    if not -n <= x < n:
        raise ValueError(f"layer {x} is out of range: this model has {n} decoder layers (blocks 0..{n - 1}), "
                         f"valid layers are 0..{n - 1} (or -{n}..-1 from the end)")
    return x % n


def _items(spec, n: int, name: str) -> list:
    """The raw entries of a spec (ints or int strings), ranges and keywords expanded."""
    if isinstance(spec, str):
        s = spec.strip().lower().replace(" ", "")
        if s == "all":
            return list(range(n))
        if s == "middle":
            return [n // 2]
        out: list = []
        for part in filter(None, s.split(",")):
            m = _RANGE.fullmatch(part)
            if m:
                lo, hi = (_one(v, spec, n, name) for v in m.groups())
                if lo > hi:
                    raise ValueError(f"{name} range {part!r} runs backwards; write it low-high, e.g. '{hi}-{lo}'")
                out += range(lo, hi + 1)
            else:
                out.append(part)
        return out
    if isinstance(spec, (numbers.Integral, bool)):
        return [spec]
    if isinstance(spec, (list, tuple, range)) or type(spec).__name__ == "ndarray":
        return list(spec)
    raise ValueError(f"{name} {spec!r} is not a layer spec: use {_FORMS}")


def resolve_layers(spec, model_or_n, *, dedupe: bool = False, allow_empty: bool = False,
                   name: str = "layer") -> list[int]:
    """Non-negative block indices for `spec`, in the order given, against a model or a layer count.

    spec: an int (negative counts from the end), a list/tuple of ints, "all", "middle", or a string
    such as "2", "-1", "0,3,5", "0-4". Out-of-range, non-integer and (unless dedupe) repeated
    layers raise a one-line ValueError naming `name` and the valid range; so does an empty spec
    unless allow_empty.
    """
    n = _count(model_or_n)
    out: list[int] = []
    for x in _items(spec, n, name):
        layer = _one(x, spec, n, name)
        if layer in out:
            if dedupe:
                continue
            raise ValueError(f"{name} {spec!r} names layer {layer} twice (negative indices count from the end); "
                             f"list each layer once")
        out.append(layer)
    if not out and not allow_empty:
        raise ValueError(f"No layers requested ({name} = {spec!r}); pass one or more of 0..{n - 1}, or 'all'")
    return out


def check_layers(model: nn.Module, layers) -> list[int]:
    """Sorted unique block indices of a spec against `model` (resolve_layers with repeats merged)."""
    return sorted(resolve_layers(layers, model, dedupe=True))
