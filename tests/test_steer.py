"""Steering by an SAE feature (shared.steer): alpha = 0 is plain greedy, alpha = +3 raises the
feature on the output, the loss field is the unsteered model's next-token loss, label search."""
import math

import pytest
import torch

from planted_sae import LAYER, planted_sae, sprinkle
from shared.data import packing, synthetic
from shared.features import stats
from shared.model import steer

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "the ~ cat sat on"


@pytest.fixture(scope="module")
def setup(tiny_model):
    model, tok = tiny_model("llama", device="cpu")
    sae = planted_sae(model, tok)
    texts = sprinkle(synthetic.synthetic_texts(20, seed=7), seed=1)
    feature_stats = stats.collect(model, tok, sae, LAYER, packing.token_batches(iter(texts), tok, 64, 4), 2000)
    return model, tok, sae, feature_stats


def test_feature_direction_and_typical_activation(setup):
    _, _, sae, feature_stats = setup
    assert torch.allclose(steer.feature_direction(sae, 0), sae.W_dec[0].detach())
    typ = steer.typical_activation(feature_stats, 0)
    assert typ == pytest.approx(float(feature_stats.mean_when_fired[0])) and typ > 0
    assert steer.typical_activation(feature_stats, 0, "max") >= typ
    with pytest.raises(ValueError, match="never fired"):
        steer.typical_activation(feature_stats, 1)
    with pytest.raises(ValueError, match="feature_id"):
        steer.feature_direction(sae, 99)


def test_alpha_zero_is_plain_greedy_and_plus_three_raises_the_feature(setup):
    model, tok, sae, feature_stats = setup
    rows = steer.steer_feature(model, tok, sae, LAYER, 0, PROMPT, [-3, 0, 1, 3],
                               typical=steer.typical_activation(feature_stats, 0), max_new_tokens=10)
    enc = tok(PROMPT, return_tensors="pt")
    plain = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tok.eos_token_id)
    by = {r["alpha"]: r for r in rows}
    assert by[0.0]["text"] == tok.decode(plain[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert by[3.0]["feature_activation"] > by[0.0]["feature_activation"]
    assert by[3.0]["feature_activation"] > by[1.0]["feature_activation"]
    assert by[0.0]["feature_activation"] == pytest.approx(by[0.0]["feature_activation_reread"])


def test_counterfactuals_have_the_trace_shape(setup):
    """interventions.json's counterfactuals are TraceData's: {"f<id>": {alpha key: text}}, as trace.json writes."""
    from shared.features.trace import trace_prompt

    model, tok, sae, feature_stats = setup
    rows = steer.steer_feature(model, tok, sae, LAYER, 0, PROMPT, [-3, 0, 1.5], typical=1.0, max_new_tokens=4)
    cf = steer.counterfactuals(0, rows)
    assert cf == {"f0": {"-3": rows[0]["text"], "0": rows[1]["text"], "1.5": rows[2]["text"]}}
    traced = trace_prompt(model, tok, sae, LAYER, PROMPT, top_n=1, alphas=(-3, 0, 1.5), max_new_tokens=4)
    ((fid, texts),) = traced["counterfactuals"].items()
    assert fid == "f0" and list(texts) == list(cf["f0"]) and all(isinstance(t, str) for t in texts.values())


def test_loss_is_the_unsteered_next_token_loss(setup):
    model, tok, sae, feature_stats = setup
    (row,) = steer.steer_feature(model, tok, sae, LAYER, 0, PROMPT, [3], typical=1.0, max_new_tokens=6)
    prompt_ids = tok(PROMPT)["input_ids"]
    ids = prompt_ids + row["token_ids"]
    assert len(ids) - len(prompt_ids) == row["n_tokens"]
    nll = []
    with torch.no_grad():
        for t in range(len(prompt_ids), len(ids)):
            logp = torch.log_softmax(model(torch.tensor([ids[:t]])).logits[0, -1].float(), -1)
            nll.append(-float(logp[ids[t]]))
    assert row["loss"] == pytest.approx(sum(nll) / len(nll), rel=1e-4)
    assert not math.isnan(row["feature_activation"])


def test_find_features_searches_labels(tmp_path):
    catalog = {"features": [{"id": 3, "name": "French words", "desc": "fires on French text"},
                            {"id": 7, "name": "latent 7", "desc": "code: Python indentation"}]}
    assert [e["id"] for e in steer.find_features(catalog, "french")] == [3]
    assert [e["id"] for e in steer.find_features(catalog["features"], "PYTHON code")] == [7]
    assert steer.find_features(catalog, "german") == []
    with pytest.raises(ValueError, match="not a file"):
        steer.find_features(str(tmp_path / "none.json"), "x")


def test_reread_sees_a_feature_the_steered_text_carries(setup):
    """feature_activation_reread is the unsteered model reading the text back: on a model whose output
    head is wired so that the planted '~' direction makes it write '~' (a self-reinforcing feature, as
    real models have and a 3-layer tiny one lacks), alpha = 3 puts '~' into the text and the re-read
    activation rises from 0; alpha = 0 writes no '~' and re-reads 0."""
    import copy

    from planted_sae import TOKEN
    from shared.model.layout import unembed

    model, tok, sae, feature_stats = setup
    wired = copy.deepcopy(model)
    head = unembed(wired)
    head.weight = torch.nn.Parameter(head.weight.detach().clone())  # untie from the embedding: layer 0 unchanged
    typical = steer.typical_activation(feature_stats, 0)
    direction = steer.feature_direction(sae, 0)
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        plain = wired(ids, output_hidden_states=True).hidden_states[-1][0, -1]
        with steer.steering_hook(wired, LAYER, direction, 3.0, scale=typical * float(direction.norm())):
            pushed = wired(ids, output_hidden_states=True).hidden_states[-1][0, -1]
        shift = pushed - plain
        head.weight[tok.convert_tokens_to_ids(TOKEN)] += 40 * shift / shift.norm() ** 2
    rows = steer.steer_feature(wired, tok, sae, LAYER, 0, PROMPT, [0, 3], typical=typical, max_new_tokens=8)
    by = {r["alpha"]: r for r in rows}
    assert TOKEN not in by[0.0]["text"] and TOKEN in by[3.0]["text"]
    assert by[0.0]["feature_activation_reread"] == 0.0
    assert by[3.0]["feature_activation_reread"] > 0.1 * typical


def test_steering_along_a_reading_vector_raises_its_reading_on_the_generated_text(setup):
    """RepE on a planted model: the LAT reading vector of pairs that end in '~' vs 'x' (layer 0), and an
    output head wired so that pushing the residual along it makes the model write '~' (a concept the
    steered text itself comes to carry). steer_and_read's reading, the unsteered model re-reading the
    continuation, rises with +alpha; alpha = 0 is plain greedy."""
    import copy

    from planted_sae import TOKEN
    from shared.model import capture
    from shared.model.layout import unembed
    from shared.readouts import probes

    model, tok, _, _ = setup
    stems = synthetic.synthetic_texts(24, seed=3)
    pos = capture.last_token_states(model, tok, [t + " " + TOKEN for t in stems], [LAYER])
    neg = capture.last_token_states(model, tok, [t + " x" for t in stems], [LAYER])
    lat = probes.lat_layers(pos, neg, seed=0)
    assert lat.test_accuracy == 1.0
    v, scale = lat.directions[LAYER], 0.5 * lat.norms[LAYER]
    wired = copy.deepcopy(model)
    head = unembed(wired)
    head.weight = torch.nn.Parameter(head.weight.detach().clone())  # untie from the embedding: layer 0 unchanged
    prompt = "the cat sat on"
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        plain = wired(ids, output_hidden_states=True).hidden_states[-1][0, -1]
        with steer.steering_hook(wired, LAYER, v, 2.0, scale=scale):
            pushed = wired(ids, output_hidden_states=True).hidden_states[-1][0, -1]
        shift = pushed - plain
        head.weight[tok.convert_tokens_to_ids(TOKEN)] += 40 * shift / shift.norm() ** 2
    rows = steer.steer_and_read(wired, tok, prompt, LAYER, v, [-2, 0, 2], scale=scale, max_new_tokens=8)
    by = {r["alpha"]: r for r in rows}
    plain_text = steer.generate_steered(wired, tok, prompt, LAYER, v, [0], max_new_tokens=8)[0.0]
    assert by[0.0]["text"] == plain_text and TOKEN not in plain_text and TOKEN in by[2.0]["text"]
    assert by[2.0]["reading"] > by[0.0]["reading"] and by[2.0]["reading"] > by[-2.0]["reading"]
    # the reading is the unsteered re-read: recompute it by hand for alpha = 2
    gen = tok(prompt)["input_ids"] + tok(by[2.0]["text"], add_special_tokens=False)["input_ids"]
    x = capture.capture_residuals(wired, torch.tensor([gen]), [LAYER])[LAYER][0, len(ids[0]):]
    assert by[2.0]["reading"] == pytest.approx(float((x @ torch.as_tensor(v, dtype=torch.float32)).mean()), rel=1e-3)
