"""models: tiny models of every arch offline, byte tokenizer, layout discovery, tiny-trained cache.
(conftest.py sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE before transformers is imported.)"""
import os
import socket

import pytest
import torch
from torch import nn

from shared.model import layout, loading, tiny

FALLBACK_TEXTS = [
    f"The {a} {v} the {o}. {x} plus {y} is {x + y}."
    for a in ("cat", "dog", "teacher", "pilot", "farmer")
    for v in ("sees", "likes", "finds", "paints")
    for o in ("river", "apple", "book", "mountain", "garden")
    for x, y in ((2, 3), (4, 1), (5, 2))
]


def corpus(n: int, seed: int) -> list[str]:
    """Synthetic texts from shared.synthetic when it exists, else a local fallback list."""
    try:
        from shared.data import synthetic

        return synthetic.synthetic_texts(n, seed=seed)
    except ImportError:
        import random

        rng = random.Random(seed)
        return [rng.choice(FALLBACK_TEXTS) for _ in range(n)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SAE_LADDER_CACHE", str(tmp_path))
    return tmp_path



def lm_loss(model, input_ids: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) of `model` on `input_ids` [B, T]."""
    with torch.no_grad():
        return float(model(input_ids=input_ids, labels=input_ids).loss)

def test_byte_tokenizer(no_network):
    tok = tiny.byte_tokenizer()
    assert len(tok) == 260
    assert {tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token} == {"<bos>", "<eos>", "<pad>", "<unk>"}
    text = "Héllo, wörld! 2 + 2 = 4\n\tdone"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[1:] == list(text.encode("utf-8"))  # token id == byte value
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok(text, add_special_tokens=False)["input_ids"] == list(text.encode("utf-8"))
    batch = tok(["a", "abc"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, -1] == tok.pad_token_id and batch["attention_mask"][0, -1] == 0


@pytest.mark.parametrize("arch", tiny.TINY_ARCHS)
def test_tiny_models_offline(arch, no_network):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model, tok = loading.load_model(f"tiny:{arch}", device="cpu")
    cfg = layout.text_config(model)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert next(model.parameters()).dtype == torch.float32
    assert layout.n_layers(model) == 4 and layout.d_model(model) == 64
    assert cfg.vocab_size == len(tok) and cfg.pad_token_id == tok.pad_token_id
    assert layout.model_device(model) == torch.device("cpu")
    assert layout.layers_path(model) == ("transformer.h" if arch == "gpt2" else "model.layers")
    assert layout.final_norm(model) is not None
    assert layout.unembed(model).out_features == len(tok)
    assert layout.final_logit_softcap(model) == (30.0 if arch == "gemma2" else None)

    # The layout helpers rebuild the model's logits: softcap(unembed(hidden_states[-1])).
    ids = tok(["The cat sat on the mat."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        logits = layout.unembed(model)(out.hidden_states[-1])
        cap = layout.final_logit_softcap(model)
        if cap:
            logits = cap * torch.tanh(logits / cap)
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)


def test_tiny_arch_details(tiny_model):
    qwen, _ = tiny_model("qwen3_5", device="cpu")
    cfg = layout.text_config(qwen)
    assert cfg.model_type == "qwen3_5_text" and type(qwen).__name__ == "Qwen3_5ForCausalLM"
    assert set(cfg.layer_types) == {"linear_attention", "full_attention"}
    kinds = ["linear_attn" if hasattr(layer, "linear_attn") else "self_attn" for layer in layout.decoder_layers(qwen)]
    assert kinds == ["linear_attn" if t == "linear_attention" else "self_attn" for t in cfg.layer_types]
    gemma, _ = tiny_model("gemma2", device="cpu")
    assert layout.text_config(gemma).final_logit_softcapping == 30.0


def test_tiny_models_are_seeded():
    a, _ = loading.load_model("tiny:llama", device="cpu")
    b, _ = loading.load_model("tiny:llama", device="cpu")
    c, _ = loading.load_model("tiny:llama", device="cpu", seed=1)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_unknown_tiny_arch():
    with pytest.raises(ValueError, match="gemma2, qwen3_5"):
        loading.load_model("tiny:bert")


class _Wrapper(nn.Module):
    """A multimodal-style wrapper: the text decoder sits at .model.language_model, a vision tower beside it."""

    def __init__(self, lm, vision_blocks: int = 4, path: str = "model"):
        super().__init__()
        inner = nn.Module()
        inner.language_model = lm.model
        inner.vision_tower = nn.Module()
        inner.vision_tower.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(vision_blocks))
        setattr(self, path, inner)
        self.path = path
        self.lm_head = lm.lm_head

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, **kwargs):
        inner = getattr(self, self.path)
        return inner.language_model(input_ids=input_ids, attention_mask=attention_mask,
                                    output_hidden_states=output_hidden_states)


def test_layer_discovery_in_multimodal_wrapper(tiny_model):
    lm, _ = tiny_model("llama", device="cpu")
    wrapped = _Wrapper(lm)
    assert layout.layers_path(wrapped) == "model.language_model.layers"
    assert layout.decoder_layers(wrapped) is lm.model.layers
    assert layout.final_norm(wrapped) is lm.model.norm
    assert layout.unembed(wrapped) is lm.lm_head
    assert layout.n_layers(wrapped) == 4 and layout.d_model(wrapped) == 64
    assert layout.text_config(wrapped).model_type == "llama"
    assert layout.model_device(wrapped) == torch.device("cpu")


def test_layer_discovery_fallback_search(tiny_model):
    """An unknown path is still found: the one text-side ModuleList whose length is num_hidden_layers."""
    lm, _ = tiny_model("llama", device="cpu")
    wrapped = _Wrapper(lm, path="backbone")
    assert layout.layers_path(wrapped) == "backbone.language_model.layers"
    assert layout.final_norm(wrapped) is lm.model.norm


def test_layer_discovery_error_lists_candidates():
    odd = nn.Module()
    odd.stack_a = nn.ModuleList(nn.Linear(2, 2) for _ in range(2))
    odd.stack_b = nn.ModuleList(nn.ReLU() for _ in range(3))
    with pytest.raises(ValueError, match=r"stack_a \(len 2, Linear\).*stack_b \(len 3, ReLU\)"):
        layout.decoder_layers(odd)
    odd._sae_ladder_layers_path = "stack_b"  # the documented override
    assert len(layout.decoder_layers(odd)) == 3


def test_tiny_training_rows_are_plain_doc_eos_packing():
    """The rows tiny-trained models learn from (cached by a recipe that does not hash them) stay the
    simple reference packing: each text's bytes + EOS, concatenated, cut into BOS + 63 tokens."""
    tok = tiny.byte_tokenizer()
    texts = corpus(2000, seed=0)
    ids = []
    for t in texts:
        ids += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(ids) // 63
    expected = torch.cat([torch.full((n, 1), tok.bos_token_id), torch.tensor(ids[: n * 63]).view(n, 63)], dim=1)
    got = tiny._packed_contexts(texts, tok, 64)
    assert got.dtype == torch.long and torch.equal(got, expected)


def test_tiny_trained_beats_random_and_is_cached(cache, no_network, monkeypatch, tiny_model):
    texts, held_out = corpus(600, seed=0), corpus(60, seed=12345)
    tok = tiny.byte_tokenizer()
    held = tiny._packed_contexts(held_out, tok, 64)[:16]
    random_model, _ = tiny_model("llama", device="cpu")
    trained, _ = tiny.train_tiny("llama", texts, steps=60)
    assert not trained.training and not any(p.requires_grad for p in trained.parameters())
    assert lm_loss(trained, held) < lm_loss(random_model, held) - 1.0
    cached_dirs = [p for p in cache.iterdir() if p.name.startswith("tiny-trained-llama-")]
    assert len(cached_dirs) == 1 and (cached_dirs[0] / "model.safetensors").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp")]

    def no_training(*a, **k):
        raise AssertionError("the cached model should have been loaded, not retrained")

    monkeypatch.setattr(torch.optim, "AdamW", no_training)
    again, _ = tiny.train_tiny("llama", texts, steps=60)
    for (name, p), q in zip(trained.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name


def test_tiny_trained_race_is_safe(cache, monkeypatch):
    """If another worker publishes the same cache entry first, os.replace fails and we keep going."""
    real_replace = os.replace

    def lose_race(src, dst):
        os.makedirs(dst, exist_ok=True)
        (cache / "marker").write_text("x")
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(os, "replace", lose_race)
    model, _ = tiny.train_tiny("gpt2", FALLBACK_TEXTS, steps=2)
    monkeypatch.setattr(os, "replace", real_replace)
    assert model is not None and not [p for p in cache.iterdir() if p.name.startswith(".tmp")]


def test_load_model_tiny_trained(cache, no_network, monkeypatch):
    monkeypatch.setattr(tiny, "TINY_TRAIN_STEPS", 5)
    model, tok = loading.load_model("tiny-trained:gpt2", device="cpu")
    assert type(model).__name__ == "GPT2LMHeadModel" and len(tok) == 260
    assert [p.name for p in cache.iterdir() if p.name.startswith("tiny-trained-gpt2-")]


@pytest.mark.parametrize("arch, attn", [("gemma2", "eager"), ("llama", "sdpa")])
def test_hub_path_loads_a_saved_checkpoint(arch, attn, tmp_path, no_network, monkeypatch):
    """The real from_pretrained path (a local folder stands in for a hub id): same weights and logits,
    Gemma-2 on eager attention (SDPA would skip its attention soft-capping), a pad token set."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    small, tok = loading.load_model(f"tiny:{arch}")
    small.save_pretrained(tmp_path / arch)
    tok.save_pretrained(tmp_path / arch)
    model, tokenizer = loading.load_model(str(tmp_path / arch), device="cpu")
    assert model.config._attn_implementation == attn
    assert next(model.parameters()).dtype == torch.float32 and not next(model.parameters()).requires_grad
    assert tokenizer.pad_token_id is not None and not model.training
    ids = tok("hub path", return_tensors="pt").input_ids
    assert torch.allclose(model(ids).logits, small(ids).logits, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_hub_path_casts_to_the_requested_dtype_when_transformers_drops_it(dtype, tmp_path, no_network, monkeypatch):
    """Qwen3.5 checkpoints are composite (text + vision): AutoModelForCausalLM loads the text model through
    get_text_config(), and some transformers releases drop the requested dtype at that swap. Simulated here
    (from_pretrained ignores dtype): the model must still come back in the dtype asked for, fp16 on a T4."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, Qwen3_5Config

    monkeypatch.delenv("HF_TOKEN", raising=False)
    tok = tiny.byte_tokenizer()
    text = tiny.tiny_config("qwen3_5", tok).to_dict()
    for key in ("model_type", "transformers_version", "architectures", "dtype", "torch_dtype"):
        text.pop(key, None)
    composite = Qwen3_5Config(text_config=text, vision_config=dict(depth=1, hidden_size=32, intermediate_size=64,
                                                                   num_heads=2, out_hidden_size=64))
    AutoModelForImageTextToText.from_config(composite).save_pretrained(tmp_path / "qwen3_5")  # float32 weights
    tok.save_pretrained(tmp_path / "qwen3_5")
    real = AutoModelForCausalLM.from_pretrained.__func__

    def dropping_dtype(cls, *args, **kw):
        kw.pop("dtype", None)
        return real(cls, *args, **kw)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(dropping_dtype))
    model, _ = loading.load_model(str(tmp_path / "qwen3_5"), device="cpu", dtype=dtype)
    assert type(model).__name__ == "Qwen3_5ForCausalLM"  # the text-only model
    assert {p.dtype for p in model.parameters()} == {dtype}
    ids = tok("a hybrid model", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits.float()).all()


# ----------------------------------------------------------------------------- unknown / unreachable ids

_PROBE = ("from shared.model import loading\n"
          "try:\n    loading.load_config('org/model')\n"
          "except loading.ModelUnavailable as e:\n    print('ModelUnavailable:', e)\n")


def _load_config_against(endpoint: str, tmp_path) -> str:
    """load_config('org/model') in a fresh process whose huggingface_hub talks to `endpoint` (real client)."""
    import subprocess
    import sys

    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "", "HF_HUB_ETAG_TIMEOUT": "5"}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.mark.parametrize("status, code, expect", [
    (404, "RepoNotFound", "was not found on the Hub: check the spelling"),
    (401, "GatedRepo", "is gated: accept the licence at https://huggingface.co/org/model and set the HF_TOKEN"),
])
def test_hub_refusals_become_one_line_errors(status, code, expect, tmp_path):
    """A local 127.0.0.1 server answers like the Hub does (status + X-Error-Code); the real client maps it."""
    import http.server

    from local_server import LocalServer

    class Hub(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

    with LocalServer.for_handler(Hub) as server:
        line = _load_config_against(server.url, tmp_path)
    assert line.startswith("ModelUnavailable:") and expect in line and "\n" not in line


def test_offline_mode_says_no_network():
    with pytest.raises(loading.ModelUnavailable, match="no network and not in the local cache") as e:
        loading.load_config("no-such/model")  # this module runs with HF_HUB_OFFLINE=1
    assert "\n" not in str(e.value)
    with pytest.raises(loading.ModelUnavailable, match="no network"):
        loading.load_model("no-such/model", device="cpu")
    assert loading.load_config("tiny:gpt2").num_hidden_layers == 4
