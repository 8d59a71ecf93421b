"""The offline tiny models: `tiny:<arch>` (seeded random weights, a small config of that real
transformers architecture) and `tiny-trained:<arch>` (the same trained a few seconds on the synthetic
corpus by its own small AdamW loop, cached on disk), with the byte-level tokenizer built in code;
no network. What the tests and the notebooks' smoke runs load."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

from ..data.packing import pack
from ..runtime import cache_dir, single_thread

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
        from ..data.synthetic import synthetic_texts  # lazy: only tiny-trained needs the corpus

        texts = synthetic_texts(2000, seed=seed)
    recipe = dict(v=1, arch=arch, cfg=tiny_config(arch, tok).to_dict(), steps=steps, batch_size=batch_size,
                  context_len=context_len, lr=lr, seed=seed,
                  texts=hashlib.sha256("\x00".join(texts).encode()).hexdigest())
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]
    final = cache_dir() / f"tiny-trained-{arch}-{digest}"
    model = _tiny_model(arch, tok, seed)
    if cache and (final / "model.safetensors").exists():
        st_load(model, str(final / "model.safetensors"))
        return freeze(model), tok

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
    return freeze(model), tok


def freeze(model):
    """`model` in eval mode with no gradients: how every loaded model is handed out."""
    model.eval()
    model.requires_grad_(False)
    return model
