"""trace_prompt: the TraceData shape, row scaling, feature order, catalog names, and alpha = 0 as the
unsteered model."""
from __future__ import annotations

import pytest
import torch

from shared.features.trace import alpha_key, prompt_activations, trace_prompt
from shared.model.layout import d_model, model_device
from shared.saes import architectures
from shared.saes.topk import TopKConfig

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "The cat sat on the mat and the dog sat on the rug."
KEYS = {"prompt", "model", "layer", "sae_repo", "tokens", "features", "activations", "counterfactuals"}


@pytest.fixture(scope="module")
def model_sae(tiny_trained_model):
    model, tok = tiny_trained_model("gpt2")
    sae = architectures.build_sae(TopKConfig(d_in=d_model(model), d_sae=48, k=6, seed=3))
    return model, tok, sae


@pytest.fixture(scope="module")
def trace(model_sae):
    model, tok, sae = model_sae
    return trace_prompt(model, tok, sae, 1, PROMPT, top_n=5, alphas=(-3, 0, 3), max_new_tokens=5,
                        model_id="tiny-trained:gpt2", sae_repo="local")


def test_shape(trace, model_sae):
    model, tok, sae = model_sae
    assert KEYS <= set(trace)
    assert trace["layer"] == "L1 residual" and trace["prompt"] == PROMPT
    tokens, z = prompt_activations(model, tok, sae, 1, PROMPT)
    ids = tok(PROMPT).input_ids
    assert trace["tokens"] == tokens == [tok.decode([i]) for i in ids if i not in tok.all_special_ids]
    assert len(trace["features"]) == len(trace["activations"]) == 5
    assert all(len(row) == len(tokens) for row in trace["activations"])
    assert all(set(f) >= {"id", "name", "desc", "auroc"} and f["id"].startswith("f") for f in trace["features"])
    assert set(trace["counterfactuals"]) == {f["id"] for f in trace["features"]}
    assert all(set(cf) == {"-3", "0", "3"} for cf in trace["counterfactuals"].values())


def test_rows_scaled_and_ordered_by_summed_activation(trace, model_sae):
    model, tok, sae = model_sae
    _, z = prompt_activations(model, tok, sae, 1, PROMPT)
    sums = z.sum(0)
    ids = [int(f["id"][1:]) for f in trace["features"]]
    assert ids == [int(j) for j in sums.argsort(descending=True)[:5]]  # strongest first, the top 5
    for j, row in zip(ids, trace["activations"]):
        assert max(row) == pytest.approx(1.0) and min(row) >= 0.0
        assert row == pytest.approx((z[:, j] / z[:, j].max()).tolist(), abs=1e-5)


def test_names_from_catalog(model_sae, trace):
    model, tok, sae = model_sae
    first = int(trace["features"][0]["id"][1:])
    catalog = {"features": [{"id": first, "name": "cats", "desc": "cat words", "score": 9.0,
                             "detection_score": 0.8, "detection_auroc": 0.95}]}
    got = trace_prompt(model, tok, sae, 1, PROMPT, top_n=2, catalog=catalog, alphas=(0,), max_new_tokens=2)
    f0 = got["features"][0]
    assert (f0["name"], f0["desc"], f0["auroc"], f0["detection_balanced_accuracy"]) == ("cats", "cat words", 0.95, 0.8)
    assert "AUROC" in got["auroc_source"]
    other = got["features"][1]
    assert other["name"] == f"latent {other['id'][1:]}" and other["auroc"] is None
    del catalog["features"][0]["detection_auroc"]  # a balanced accuracy is never passed off as an AUROC
    old = trace_prompt(model, tok, sae, 1, PROMPT, top_n=1, catalog=catalog, alphas=(0,), max_new_tokens=2)
    assert old["features"][0]["auroc"] is None and old["features"][0]["detection_balanced_accuracy"] == 0.8
    with pytest.raises(ValueError, match="catalog"):
        trace_prompt(model, tok, sae, 1, PROMPT, catalog={"feature": []})


def test_alpha_zero_is_unsteered_greedy(trace, model_sae):
    model, tok, sae = model_sae
    enc = tok(PROMPT, return_tensors="pt").to(model_device(model))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=pad)
    plain = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert all(cf[alpha_key(0)] == plain for cf in trace["counterfactuals"].values())
    assert any(cf["3"] != plain or cf["-3"] != plain for cf in trace["counterfactuals"].values())


def test_bad_input_is_one_line_error(model_sae):
    model, tok, sae = model_sae
    for kw, word in (({"prompt": ""}, "prompt"), ({"top_n": 0}, "top_n")):
        args = {"prompt": PROMPT, **kw}
        with pytest.raises(ValueError, match=word):
            trace_prompt(model, tok, sae, 1, args.pop("prompt"), max_new_tokens=1, **args)
