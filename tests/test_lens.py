"""Logit lens and tuned lens: exactness at the last layer, soft-capping, tuned-lens training and format."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import peer_python
from shared.data import synthetic
from shared.model import layout, loading, tiny
from shared.readouts import lens
from shared.views import plots

PROMPT = "The capital of France is Paris. The capital of"


@pytest.mark.parametrize("arch", tiny.TINY_ARCHS)
def test_last_layer_logit_lens_equals_model_logits(arch, tiny_model):
    model, tok = tiny_model(arch)
    ids = tok(PROMPT, return_tensors="pt").input_ids.to(layout.model_device(model))
    ll = lens.logit_lens(model, ids)
    assert ll.shape == (layout.n_layers(model), ids.shape[1], layout.unembed(model).out_features)
    with torch.no_grad():
        ref = model(input_ids=ids).logits[0].float()
    torch.testing.assert_close(ll[-1], ref, rtol=1e-5, atol=1e-5)  # no double final norm
    # earlier layers are real lens readings, not copies of the output
    assert not torch.allclose(ll[0], ref, atol=1e-3)


def test_last_layer_exact_in_bfloat16():
    model, tok = loading.load_model("tiny:gemma2", dtype=torch.bfloat16)
    ids = tok(PROMPT, return_tensors="pt").input_ids.to(layout.model_device(model))
    with torch.no_grad():
        ref = model(input_ids=ids).logits[0].float()
    assert torch.equal(lens.logit_lens(model, ids)[-1], ref)


def test_gemma2_softcap_is_applied(monkeypatch, tiny_model):
    model, tok = tiny_model("gemma2")  # shared: monkeypatch restores the soft-cap after the test
    ids = tok(PROMPT, return_tensors="pt").input_ids.to(layout.model_device(model))
    resid, _ = lens.run_with_residuals(model, ids)
    with torch.no_grad():
        raw = layout.unembed(model)(layout.final_norm(model)(resid[-1]))
    cap = float(raw.abs().max()) / 2  # small enough that tanh visibly bends the logits
    monkeypatch.setattr(model.config, "final_logit_softcapping", cap)
    assert layout.final_logit_softcap(model) == pytest.approx(cap)
    ll = lens.logit_lens(model, ids)
    with torch.no_grad():
        ref = model(input_ids=ids).logits[0]
    torch.testing.assert_close(ll[-1], ref, rtol=1e-5, atol=1e-5)
    assert ll.abs().max() <= cap + 1e-5
    torch.testing.assert_close(ll[-1], torch.tanh(raw[0] / cap) * cap, rtol=1e-5, atol=1e-5)


def _tiny_multimodal(kind, tok):
    import transformers as T

    torch.manual_seed(0)
    if kind == "qwen3_5":
        vision = T.Qwen3_5VisionConfig(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)
        cfg = T.Qwen3_5Config(text_config=tiny.tiny_config("qwen3_5", tok).to_dict(), vision_config=vision.to_dict())
        return T.Qwen3_5ForConditionalGeneration(cfg).eval()
    text = T.Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    vision = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=32, patch_size=8)
    cfg = T.Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4)
    return T.Gemma3ForConditionalGeneration(cfg).eval()


@pytest.mark.parametrize("kind", ["qwen3_5", "gemma3"])
def test_logit_lens_multimodal_wrapper(kind):
    tok = tiny.byte_tokenizer()
    try:
        model = _tiny_multimodal(kind, tok)
    except Exception as e:  # config fields of these wrappers move between transformers versions
        pytest.skip(f"cannot build a tiny {kind} wrapper here: {e}")
    assert "language_model" in layout.layers_path(model)
    ids = tok(PROMPT, return_tensors="pt").input_ids.to(layout.model_device(model))
    with torch.no_grad():
        ref = model(input_ids=ids).logits[0].float()
    torch.testing.assert_close(lens.logit_lens(model, ids)[-1], ref, rtol=1e-5, atol=1e-5)


def test_bad_layer_and_batch_errors(tiny_model):
    model, tok = tiny_model("llama")
    ids = tok(PROMPT, return_tensors="pt").input_ids.to(layout.model_device(model))
    with pytest.raises(ValueError, match="blocks 0..3"):
        lens.logit_lens(model, ids, layers=[7])
    with pytest.raises(ValueError, match="one sequence"):
        lens.logit_lens(model, ids.repeat(2, 1))
    assert lens.logit_lens(model, ids, layers=[-1]).shape[0] == 1


def test_lens_table_and_plots(tiny_model):
    import matplotlib

    matplotlib.use("Agg")
    model, tok = tiny_model("gemma2")
    table = lens.lens_table(model, tok, PROMPT, topk=3)
    n, T = layout.n_layers(model), len(table["tokens"])
    assert table["layers"] == list(range(n))
    assert len(table["top_tokens"]) == n and len(table["top_tokens"][0]) == T and len(table["top_tokens"][0][0]) == 3
    assert len(table["kl"]) == n and len(table["kl_mean"]) == n
    assert max(table["kl"][-1]) < 1e-5  # the last layer IS the model's distribution
    assert [p[0] for p in table["top_tokens"][-1]] == [p[0] for p in table["final_top"]]
    json.dumps(table)
    for fig in (plots.plot_lens_heatmap(table), plots.plot_lens_heatmap(table, value="kl"), plots.plot_kl_per_layer(table)):
        assert fig.axes
        matplotlib.pyplot.close(fig)


def test_lens_table_mean_leaves_the_bos_out(tiny_model):
    """kl_mean is the mean of kl over the prompt's positions but the BOS (whose prediction reads no prompt)."""
    model, tok = tiny_model("gemma2")
    table = lens.lens_table(model, tok, PROMPT)
    assert table["tokens"][0] == tok.bos_token
    for row, mean in zip(table["kl"], table["kl_mean"]):
        assert mean == pytest.approx(sum(row[1:]) / len(row[1:]), abs=2e-6)
    assert table["kl_mean_positions"] == len(table["tokens"]) - 1


def test_compare_lenses_averages_over_kept_tokens(fitted):
    """Short documents packed into 32-token contexts: separators sit mid-context. The per-layer KL and top-1
    agreement are means over the non-special positions only, and n_tokens counts exactly those."""
    from shared.data.packing import token_batches
    from shared.model.capture import token_mask

    model, tok, tuned, _ = fitted
    texts = [t[:40] for t in synthetic.synthetic_texts(80, seed=13)]
    batches = list(token_batches(texts, tok, 32, 8, max_batches=2))
    dev = layout.model_device(model)
    keep = torch.cat([token_mask(b.to(dev), tok) for b in batches])
    assert (~keep[:, 1:]).any()  # separators inside the contexts
    report = lens.compare_lenses(model, tok, texts, tuned, context_len=32, batch_size=8, max_batches=2)
    assert report["n_tokens"] == int(keep.sum())
    logits, final = zip(*(lens.layer_logits(model, b) for b in batches))
    logits, final = torch.cat(logits, 1), torch.cat(final)
    kl = lens.kl_to_final(final[None], logits)[:, keep]  # [L, kept]
    top1 = (logits.argmax(-1) == final.argmax(-1)[None])[:, keep].double().mean(1)
    assert report["logit_lens"]["kl"] == pytest.approx(kl.mean(1).tolist(), abs=2e-6)
    assert report["logit_lens"]["top1_agreement"] == pytest.approx(top1.tolist(), abs=2e-6)


def test_tuned_lens_equals_logit_lens_at_init(tiny_model):
    model, tok = tiny_model("qwen3")
    tuned = lens.TunedLens.for_model(model)
    assert len(tuned.layer_translators) == layout.n_layers(model)
    ids = tok(PROMPT, return_tensors="pt").input_ids.to(layout.model_device(model))
    a, _ = lens.layer_logits(model, ids)
    b, _ = lens.layer_logits(model, ids, lens=tuned)
    torch.testing.assert_close(a, b)


@pytest.fixture(scope="module")
def fitted(tiny_trained_model):
    model, tok = tiny_trained_model("llama")
    tuned, history = lens.fit_tuned_lens(model, tok, synthetic.synthetic_texts(200, seed=11),
                                         lens.TunedLensFitConfig(steps=20, context_len=32, batch_size=8, lr=3e-3),
                                         progress=False)
    return model, tok, tuned, history


def test_tuned_lens_beats_logit_lens_on_held_out(fitted):
    model, tok, tuned, history = fitted
    assert history[-1] < history[0]
    report = lens.compare_lenses(model, tok, synthetic.synthetic_texts(60, seed=12), tuned, context_len=32, batch_size=8,
                                 max_batches=4)
    for L in report["layers"]:
        assert report["tuned_lens"]["kl"][L] <= report["logit_lens"]["kl"][L] + 1e-4, report
    assert report["tuned_lens"]["kl"][0] < report["logit_lens"]["kl"][0]  # a real gain, not a tie
    assert report["logit_lens"]["top1_agreement"][-1] == report["tuned_lens"]["top1_agreement"][-1] == 1.0


def test_save_load_round_trip_public_format(fitted, tmp_path):
    model, tok, tuned, _ = fitted
    tuned.save(tmp_path / "lens")
    cfg = json.loads((tmp_path / "lens" / "config.json").read_text())
    assert {"base_model_name_or_path", "d_model", "num_hidden_layers", "bias", "lens_type"} <= set(cfg)
    assert cfg["num_hidden_layers"] == layout.n_layers(model) and cfg["d_model"] == layout.d_model(model)
    state = torch.load(tmp_path / "lens" / "params.pt", weights_only=True)
    n = layout.n_layers(model)
    assert set(state) == {f"{i}.{p}" for i in range(n) for p in ("weight", "bias")}  # tuned-lens package keys
    dev = layout.unembed(model).weight.device
    loaded = lens.TunedLens.load(tmp_path / "lens").to(dev)
    ids = tok(PROMPT, return_tensors="pt").input_ids.to(layout.model_device(model))
    a, _ = lens.layer_logits(model, ids, lens=tuned)
    b, _ = lens.layer_logits(model, ids, lens=loaded)
    assert torch.equal(a, b)
    # a lens saved with "layer_translators."-prefixed keys loads too
    torch.save({f"layer_translators.{k}": v for k, v in state.items()}, tmp_path / "lens" / "params.pt")
    again = lens.TunedLens.load(tmp_path / "lens").to(dev)
    assert torch.equal(lens.layer_logits(model, ids, lens=again)[0], a)


def test_lens_shape_mismatch_is_clear(fitted, tiny_model):
    _, tok, tuned, _ = fitted
    other, _ = tiny_model("gpt2")
    other_small = lens.TunedLens(32, 2)
    with pytest.raises(ValueError, match="fit a fresh one"):
        other_small.check_model(other)


def test_pretrained_or_fit_offline_falls_back(monkeypatch, fitted):
    import huggingface_hub

    model, tok, _, _ = fitted

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline: no connection to the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    got, info = lens.load_pretrained_or_fit("someone/some-model", model, tok, synthetic.synthetic_texts(40, seed=3),
                                            lens.TunedLensFitConfig(steps=2, context_len=32, batch_size=4),
                                            progress=False)
    assert info["source"] == "fitted" and "No pretrained tuned lens" in info["message"] and len(info["history"]) == 2
    assert got.config["base_model_name_or_path"] == "someone/some-model"


def test_pretrained_or_fit_uses_hub_download(monkeypatch, fitted, tmp_path):
    import huggingface_hub

    model, tok, tuned, _ = fitted
    tuned.save(tmp_path / "lens" / "someone" / "some-model")
    calls = []

    def fake_download(repo_id, filename, subfolder, repo_type, **kwargs):
        calls.append((repo_id, repo_type, subfolder, filename))
        return str(tmp_path / subfolder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    got, info = lens.load_pretrained_or_fit("someone/some-model", model)
    assert info["source"] == "pretrained"
    assert calls[0][:3] == ("AlignmentResearch/tuned-lens", "space", "lens/someone/some-model")
    ids = tok(PROMPT, return_tensors="pt").input_ids.to(layout.model_device(model))
    assert torch.equal(lens.layer_logits(model, ids, lens=got)[0], lens.layer_logits(model, ids, lens=tuned)[0])


# ----------------------------------------------------------------------------- the tuned-lens package

def test_unembed_hash_is_the_full_array_str_hash():
    """Hashing only the printed corners gives the text of the whole float32 matrix, in every dtype."""
    import hashlib

    import numpy as np

    for arch, dtype in (("llama", torch.float32), ("gemma2", torch.bfloat16), ("gpt2", torch.float16)):
        model, _ = loading.load_model(f"tiny:{arch}", dtype=dtype)
        w = layout.unembed(model).weight.detach().float().cpu().numpy()
        assert w.size > np.get_printoptions()["threshold"]  # the summarised path is what runs
        assert lens.unembed_hash(model) == hashlib.sha256(np.array_str(w, precision=1).encode()).hexdigest()


def test_unembed_hash_fills_config_and_flags_another_model(fitted, tmp_path):
    model, _, tuned, _ = fitted
    assert tuned.config["unembed_hash"] == lens.unembed_hash(model)
    tuned.save(tmp_path / "lens")
    loaded = lens.TunedLens.load(tmp_path / "lens")
    assert loaded.config["unembed_hash"] == tuned.config["unembed_hash"]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.check_model(model)  # same unembedding: silent
    untrained, _ = loading.load_model("tiny:llama")  # same shapes, other weights
    with pytest.warns(UserWarning, match="another unembedding"):
        loaded.check_model(untrained)


# The tuned-lens package pins old transformers/torch, so it lives in its own venv that reuses this
# project's packages (`make tuned-lens-venv`); set TUNED_LENS_PYTHON to use another interpreter.

PACKAGE_SCRIPT = r"""
import json, logging, sys
import torch
from transformers import AutoModelForCausalLM
from tuned_lens.nn import TunedLens, Unembed

warned = []
class Keep(logging.Handler):
    def emit(self, record):
        warned.append(record.getMessage())
logging.getLogger().addHandler(Keep())
out = {}
for arch, folder, lens_dirs, h in json.loads(sys.stdin.read()):
    model = AutoModelForCausalLM.from_pretrained(folder)
    try:
        unembed = Unembed(model)
    except NotImplementedError as e:
        out[arch] = {"rejected": str(e)}
        continue
    res = {"hash": unembed.unembedding_hash(), "warned": []}
    for name, path in lens_dirs.items():
        warned.clear()
        tl = TunedLens.from_unembed_and_pretrained(unembed, path)
        res["warned"].append(bool(warned))
        with torch.no_grad():
            res[name] = tl(torch.tensor(h), 1).tolist()
    out[arch] = res
print(json.dumps(out))
"""


def test_tuned_lens_package_checks_and_reads_our_export(tmp_path):
    """The package's own hash equals ours, its model-match check passes on our export (and fires on a
    wrong hash), its logits equal ours; and it loads only the architectures notebook 20 says it does."""
    import subprocess

    tuned_lens_python = peer_python("TUNED_LENS_PYTHON", ".venv-tunedlens", "tuned_lens", "tuned-lens-venv")
    jobs, ours = [], {}
    for arch in tiny.TINY_ARCHS:
        model, _ = loading.load_model(f"tiny:{arch}")
        model.save_pretrained(tmp_path / arch)
        tuned = lens.TunedLens.for_model(model)
        torch.manual_seed(0)
        for t in tuned.layer_translators:
            torch.nn.init.normal_(t.weight, std=0.05)
            torch.nn.init.normal_(t.bias, std=0.05)
        tuned.save(tmp_path / f"{arch}-lens")
        tuned.config["unembed_hash"] = "0" * 64
        tuned.save(tmp_path / f"{arch}-wrong-hash")
        h = torch.randn(2, 3, layout.d_model(model))
        ours[arch] = (lens.unembed_hash(model), tuned.logits(model, h, 0))
        jobs.append([arch, str(tmp_path / arch), {"ours": str(tmp_path / f"{arch}-lens"),
                                                  "wrong": str(tmp_path / f"{arch}-wrong-hash")}, h.tolist()])
    r = subprocess.run([tuned_lens_python, "-c", PACKAGE_SCRIPT], input=json.dumps(jobs), capture_output=True,
                       text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    loadable = {a for a, v in got.items() if "rejected" not in v}
    # 0.2.0 (PyPI) loads GPT-2 and Llama of our architectures; its GitHub main adds Mistral
    assert {"gpt2", "llama"} <= loadable <= {"gpt2", "llama", "mistral"}, got
    for arch in loadable:
        our_hash, our_logits = ours[arch]
        assert got[arch]["hash"] == our_hash, arch
        assert got[arch]["warned"] == [False, True], arch  # the check ran: silent on ours, warns on a wrong hash
        torch.testing.assert_close(torch.tensor(got[arch]["ours"]), our_logits, rtol=1e-4, atol=1e-4)
