"""Load a causal LM + tokenizer: a hub id, or `tiny:<arch>` / `tiny-trained:<arch>` (`tiny`), with
one-line errors where the Hub refuses it (not found, gated, offline), the requested dtype enforced
after loading (`cast_to_dtype`), its config alone without the weights (`load_config`), and a
one-line summary of what loaded (`describe`)."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..runtime import SPREAD, Secret, hf_token, resolve_device, resolve_dtype
from .layout import d_model, final_logit_softcap, final_norm, layers_path, model_device, n_layers, unembed
from .tiny import _parse_arch, _tiny_model, byte_tokenizer, freeze, tiny_config, train_tiny

class ModelUnavailable(ValueError):
    """A model id that cannot be loaded here: not on the Hub, gated without a token, or offline and not cached."""


def _hub_cause(error: BaseException, model_id: str) -> str | None:
    """One line saying why the Hub refused `model_id`, from the huggingface_hub error in the chain; else None."""
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError)

    seen, chain = set(), []
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    for e in chain:  # GatedRepoError subclasses RepositoryNotFoundError: test it first
        if isinstance(e, GatedRepoError):
            return (f"model {model_id!r} is gated: accept the licence at https://huggingface.co/{model_id} "
                    f"and set the HF_TOKEN secret (a token of the account that accepted it)")
        if isinstance(e, RepositoryNotFoundError):
            return (f"model {model_id!r} was not found on the Hub: check the spelling (an id looks like "
                    f"'google/gemma-2-2b'); a private repo also needs the HF_TOKEN secret")
        if isinstance(e, HFValidationError):
            return f"model {model_id!r} is not a valid Hub id or local folder: use 'org/name', e.g. 'google/gemma-2-2b'"
        if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) or type(e).__name__ in (
                "ConnectError", "ConnectionError", "ConnectTimeout"):
            return (f"model {model_id!r}: no network and not in the local cache; connect to the internet "
                    f"(and unset HF_HUB_OFFLINE) or download it once while online")
    return None


@contextmanager
def hub_errors(model_id: str):
    """Turn the Hub's errors about `model_id` (inside transformers' tracebacks) into one-line ModelUnavailable."""
    try:
        yield
    except Exception as e:
        why = _hub_cause(e, model_id)
        if why is None:
            raise
        raise ModelUnavailable(why) from None


def load_config(model_id: str, token: str | None = None):
    """The text (decoder) config of a hub id or `tiny:`/`tiny-trained:<arch>`, without loading weights.

    Cheap: reads config.json only (tiny ids build it in code), so notebooks can check layers and
    the id itself before the download. Hub failures raise a one-line ModelUnavailable.
    """
    if model_id.startswith(("tiny:", "tiny-trained:")):
        return tiny_config(model_id.split(":", 1)[1])
    from transformers import AutoConfig

    token = _hub_token(token)
    with hub_errors(model_id):
        cfg = AutoConfig.from_pretrained(model_id, token=token)
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _hub_token(token):
    """The token to send: `token`, else the HF_TOKEN secret (runtime.hf_token), as a plain str (or None)."""
    token = hf_token(token)
    return token.reveal() if isinstance(token, Secret) else token


def load_model(model_id: str, *, device=None, dtype: torch.dtype | None = None, token: str | None = None,
               attn_implementation: str | None = None, seed: int = 0, max_memory: dict | None = None):
    """(model, tokenizer) for a hub id, 'tiny:<arch>' or 'tiny-trained:<arch>'; eval mode, no grads.

    Hub ids: bfloat16 (float16 on GPUs without bf16, e.g. the T4) + SDPA attention on GPU (eager for Gemma-2, whose attention soft-capping SDPA
    skips), float32 on CPU (runtime.resolve_dtype; dtype may be a name such as "bfloat16");
    device="spread" splits the model over every GPU (transformers device_map="auto": this is the
    one place that name is translated; with `max_memory` {gpu index: bytes}, e.g. from
    recipes.tier.spread_max_memory, device_map="sequential": GPU 0 filled first, each GPU up to its
    limit), "auto" picks one device; the token defaults to the
    HF_TOKEN secret. Tiny models: float32 unless dtype is given, never touch the network. device
    defaults to runtime.default_device().
    """
    dev = resolve_device(device)
    if model_id.startswith(("tiny:", "tiny-trained:")):
        kind, arch = model_id.split(":", 1)
        _parse_arch(arch)
        if kind == "tiny":
            tok = byte_tokenizer()
            model = freeze(_tiny_model(arch, tok, seed))
        else:
            model, tok = train_tiny(arch, seed=seed)
        target = torch.device("cuda:0" if dev == SPREAD and torch.cuda.is_available() else
                              "cpu" if dev == SPREAD else dev)
        model.to(device=target, dtype=resolve_dtype(dtype, target) if dtype not in (None, "auto") else torch.float32)
        return model, tok
    return _load_hub(model_id, dev, dtype, token, attn_implementation, max_memory)


def _load_hub(model_id, dev, dtype, token, attn_implementation, max_memory=None):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    token = _hub_token(token)
    dtype = resolve_dtype(dtype, dev)  # bf16 where the GPU has it; fp16 on older GPUs such as the T4; fp32 on CPU
    with hub_errors(model_id):
        cfg = AutoConfig.from_pretrained(model_id, token=token)
    model_type = getattr(cfg.get_text_config(), "model_type", cfg.model_type)
    attn = attn_implementation or ("eager" if "gemma2" in model_type else "sdpa")
    kw = dict(dtype=dtype, attn_implementation=attn, token=token)
    if dev == SPREAD:  # transformers' names for SPREAD: balanced, or in order under our limits
        kw["device_map"] = "sequential" if max_memory else "auto"
        if max_memory:
            kw["max_memory"] = dict(max_memory)
    elif dev.type == "cuda":
        kw["device_map"] = {"": dev}
    with hub_errors(model_id):
        try:
            model = AutoModelForCausalLM.from_pretrained(model_id, **kw)
        except ValueError as e:  # a multimodal config with no causal-LM class: load the wrapper
            if "Unrecognized configuration class" not in str(e):
                raise
            from transformers import AutoModelForImageTextToText

            model = AutoModelForImageTextToText.from_pretrained(model_id, **kw)
        tok = AutoTokenizer.from_pretrained(model_id, token=token)
    if "device_map" not in kw and dev.type != "cpu":
        model.to(dev)
    cast_to_dtype(model, dtype)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return freeze(model), tok


def cast_to_dtype(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast the floating parameters that loading left in another dtype to `dtype`, in place; returns how many.

    Some transformers releases drop the requested dtype when they swap a composite config for its text
    config (Qwen3.5 loads text-only through `get_text_config()`) and load in the checkpoint's or the default
    dtype: without this, "float16 on a T4" would silently be float32 or bfloat16. Parameters of the modules
    a model keeps in float32 on purpose (`_keep_in_fp32_modules`) and buffers (rotary frequencies) are left.
    """
    keep = [*(getattr(model, "_keep_in_fp32_modules", None) or ()), *(getattr(model, "_keep_in_fp32_modules_strict", None) or ())]
    n = 0
    for name, param in model.named_parameters():
        if param.is_floating_point() and param.dtype != dtype and not any(k in name.split(".") for k in keep):
            param.data = param.data.to(dtype)
            n += 1
    return n


def describe(model: nn.Module, model_id: str = "") -> str:
    """One line about a loaded model: blocks and where they sit, widths, final norm, soft-cap, dtype, device."""
    norm = final_norm(model)
    cap = final_logit_softcap(model)
    return (f"{model_id or type(model).__name__}: {n_layers(model)} decoder blocks at `{layers_path(model)}`, "
            f"d_model {d_model(model)}, vocab {unembed(model).out_features}, "
            f"final norm {type(norm).__name__ if norm is not None else 'none'}, "
            f"logit soft-cap {cap if cap else 'none'}, {next(model.parameters()).dtype}, on {model_device(model)}")
