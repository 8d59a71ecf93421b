"""Load a causal LM + tokenizer (hub id or offline tiny model) and find its parts for any layout.

`load_model` takes a hub id, `tiny:<arch>` (seeded random weights, small config of that real
transformers architecture, byte-level tokenizer built in code, no network) or
`tiny-trained:<arch>` (the tiny model trained a few seconds on the synthetic corpus, cached).
The layout helpers (`decoder_layers`, `final_norm`, `unembed`, ...) work for Llama/Gemma/Qwen/
Mistral/Phi-style `model.layers`, GPT-2 `transformer.h`, GPT-NeoX, and multimodal wrappers whose
text decoder sits under `language_model`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .data import pack
from .runtime import SPREAD, Secret, cache_dir, hf_token, resolve_device, resolve_dtype, single_thread

TINY_ARCHS = ("gemma2", "qwen3_5", "qwen3", "llama", "mistral", "phi3", "gpt2")

TINY_TRAIN_STEPS = 200  # AdamW steps of `tiny-trained:<arch>` (batch 8 x 64 tokens, CPU, seconds)

SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>", "<unk>")

# Small configs of the real architectures: hidden 64, 4 layers, 4 heads, 2 kv heads, MLP 128.
_TINY_COMMON = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=128, max_position_embeddings=1024)
_TINY_CONFIGS = {
    # final_logit_softcapping stays at Gemma-2's 30.0 so soft-capping code paths are exercised.
    "gemma2": ("gemma2", dict(head_dim=16, sliding_window=32, final_logit_softcapping=30.0,
                              attn_logit_softcapping=50.0, query_pre_attn_scalar=16)),
    # The hybrid Gated-DeltaNet text model: linear-attention and full-attention layers mixed.
    "qwen3_5": ("qwen3_5_text", dict(head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                                     linear_key_head_dim=16, linear_value_head_dim=16,
                                     layer_types=["linear_attention", "full_attention",
                                                  "linear_attention", "full_attention"])),
    "qwen3": ("qwen3", dict(head_dim=16)),
    "llama": ("llama", {}),
    "mistral": ("mistral", dict(sliding_window=32)),
    "phi3": ("phi3", {}),
    "gpt2": ("gpt2", dict(n_embd=64, n_layer=4, n_head=4, n_inner=128, n_positions=1024,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
}

# Known places of the decoder-block ModuleList, most common first.
_LAYER_PATHS = (
    "model.layers", "model.language_model.layers", "language_model.model.layers", "language_model.layers",
    "model.text_model.layers", "model.model.layers", "transformer.h", "gpt_neox.layers",
    "model.decoder.layers", "transformer.layers", "transformer.blocks", "layers", "h",
)
_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f", "final_norm")
_NOT_TEXT = ("vision", "visual", "audio", "image", "vit", "encoder", "mtp")


# ----------------------------------------------------------------------------- tokenizer

def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in character for each byte 0..255 (what ByteLevel pre-tokenizes to)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


@lru_cache(maxsize=1)
def _byte_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {ch: b for b, ch in enumerate(_bytes_to_unicode())}  # token id == byte value
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    bos = vocab["<bos>"]
    # Like Llama/Gemma tokenizers: BOS first when add_special_tokens=True (the default).
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    return tok.to_str()


def byte_tokenizer():
    """A byte-level PreTrainedTokenizerFast (256 bytes + <bos> <eos> <pad> <unk>), built offline."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_byte_tokenizer_json()),
        bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=_TINY_COMMON["max_position_embeddings"], padding_side="right")
    return tok


# ----------------------------------------------------------------------------- tiny models

def _parse_arch(arch: str) -> str:
    if arch not in TINY_ARCHS:
        raise ValueError(f"Unknown tiny architecture {arch!r}; choose one of {', '.join(TINY_ARCHS)} "
                         f"(e.g. 'tiny:llama').")
    return arch


def tiny_config(arch: str, tokenizer=None):
    """The small transformers config of architecture `arch` used by `tiny:<arch>`."""
    from transformers import AutoConfig

    model_type, extra = _TINY_CONFIGS[_parse_arch(arch)]
    tok = tokenizer or byte_tokenizer()
    kw = dict(extra) if arch == "gpt2" else {**_TINY_COMMON, **extra}
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    cfg = AutoConfig.for_model(model_type, **kw, **ids)
    if arch == "qwen3_5":
        kinds = set(cfg.layer_types)
        assert kinds == {"linear_attention", "full_attention"}, f"tiny qwen3_5 layer_types {cfg.layer_types}"
    return cfg


def _tiny_model(arch: str, tokenizer, seed: int):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    return model


def _packed_contexts(texts, tokenizer, context_len: int) -> torch.Tensor:
    """All packed [N, context_len] training rows of `texts` (data.pack: doc EOS doc EOS ..., BOS first)."""
    return torch.cat(list(pack(texts, tokenizer, context_len)))


def _train_loop(model, data_ids: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int) -> None:
    """AdamW with 20-step warm-up and linear decay on random rows of data_ids; seeded end to end."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.1, 1 - s / steps))
    model.train()
    with torch.random.fork_rng(devices=[]):  # any dropout draws from a seeded, private stream
        torch.manual_seed(seed)
        for _ in range(steps):
            batch = data_ids[torch.randint(len(data_ids), (batch_size,), generator=gen)]
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)


def train_tiny(arch: str, texts: list[str] | None = None, *, steps: int | None = None, batch_size: int = 8,
               context_len: int = 64, lr: float = 3e-3, seed: int = 0, cache: bool = True):
    """The `tiny:<arch>` model trained `steps` (default TINY_TRAIN_STEPS) AdamW steps on CPU, cached on disk.

    texts default to `synthetic.synthetic_texts(2000, seed)`. The cache key hashes the config, the
    recipe and the texts; the weights are written to a temp dir that is then `os.replace`d into
    place, so parallel processes never see a half-written model (the loser of a race reuses the
    winner's identical weights). Returns (model, tokenizer), model in eval mode, no grads.
    """
    from safetensors.torch import load_model as st_load, save_model as st_save

    steps = TINY_TRAIN_STEPS if steps is None else steps
    tok = byte_tokenizer()
    if texts is None:
        from .synthetic import synthetic_texts  # lazy: only tiny-trained needs the corpus

        texts = synthetic_texts(2000, seed=seed)
    recipe = dict(v=1, arch=arch, cfg=tiny_config(arch, tok).to_dict(), steps=steps, batch_size=batch_size,
                  context_len=context_len, lr=lr, seed=seed,
                  texts=hashlib.sha256("\x00".join(texts).encode()).hexdigest())
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]
    final = cache_dir() / f"tiny-trained-{arch}-{digest}"
    model = _tiny_model(arch, tok, seed)
    if cache and (final / "model.safetensors").exists():
        st_load(model, str(final / "model.safetensors"))
        return _freeze(model), tok

    data_ids = _packed_contexts(texts, tok, context_len)
    with single_thread():  # a 64-wide model gains nothing from threads
        _train_loop(model, data_ids, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    model.eval()
    if cache:
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=cache_dir()))
        try:
            st_save(model, str(tmp / "model.safetensors"))
            (tmp / "recipe.json").write_text(json.dumps(recipe, sort_keys=True, default=str))
            os.replace(tmp, final)
        except OSError:  # another process won the race: its weights are the same
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _freeze(model), tok


def _freeze(model):
    model.eval()
    model.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------- load_model

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
    train.spread_max_memory, device_map="sequential": GPU 0 filled first, each GPU up to its
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
            model = _freeze(_tiny_model(arch, tok, seed))
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
    return _freeze(model), tok


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


def n_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


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


def describe(model: nn.Module, model_id: str = "") -> str:
    """One line about a loaded model: blocks and where they sit, widths, final norm, soft-cap, dtype, device."""
    norm = final_norm(model)
    cap = final_logit_softcap(model)
    return (f"{model_id or type(model).__name__}: {n_layers(model)} decoder blocks at `{layers_path(model)}`, "
            f"d_model {d_model(model)}, vocab {unembed(model).out_features}, "
            f"final norm {type(norm).__name__ if norm is not None else 'none'}, "
            f"logit soft-cap {cap if cap else 'none'}, {next(model.parameters()).dtype}, on {model_device(model)}")
