"""shared.watch on a planted feature that fires exactly on '~': thresholds from a baseline without it
flag exactly the prompts and tokens that hold it, offline and during generate alike."""
import json

import numpy as np
import pytest
import torch
from planted_sae import LAYER, TOKEN, planted_sae, sprinkle
from shared.data import synthetic
from shared.features import watch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tiny_model):
    model, tok = tiny_model("llama", device="cpu")
    sae = planted_sae(model, tok)
    baseline = synthetic.synthetic_texts(30, seed=5)
    thresholds = watch.calibrate(model, tok, sae, LAYER, baseline, [0, 1], percentile=99.5)
    return model, tok, sae, thresholds


def test_calibrated_thresholds_from_a_baseline_without_the_token(setup):
    _, _, _, thresholds = setup
    assert set(thresholds) == {0, 1}
    assert thresholds[0] == 0.0 and thresholds[1] == 0.0  # never fires on the baseline


def test_flags_exactly_the_prompts_and_tokens_holding_it(setup, tmp_path):
    model, tok, sae, thresholds = setup
    clean = synthetic.synthetic_texts(6, seed=21)
    marked = sprinkle(synthetic.synthetic_texts(6, seed=22), seed=3, n=2)
    prompts = [p for pair in zip(clean, marked) for p in pair]
    tower = watch.Watchtower(model, tok, sae, LAYER, thresholds)
    results = tower.scan(prompts)
    assert [r["flagged"] for r in results] == [TOKEN in p for p in prompts]
    tid = tok.convert_tokens_to_ids(TOKEN)
    for r in results:
        ids = tok(r["prompt"])["input_ids"]
        assert sorted(f["position"] for f in r["flags"]) == [i for i, t in enumerate(ids) if t == tid]
        assert all(f["feature"] == 0 and f["token"] == TOKEN for f in r["flags"])
    payload = tower.write_report(tmp_path / "w.json", tmp_path / "w.csv")
    assert payload["summary"]["n_flagged"] == len(marked)
    assert json.loads((tmp_path / "w.json").read_text())["summary"] == payload["summary"]
    rows = (tmp_path / "w.csv").read_text().splitlines()
    assert len(rows) - 1 == sum(len(r["flags"]) for r in results) == 2 * len(marked)


def test_prompts_from_a_file(setup, tmp_path):
    model, tok, sae, thresholds = setup
    path = tmp_path / "prompts.txt"
    path.write_text("a plain line\nthis one has ~ in it\n")
    tower = watch.Watchtower(model, tok, sae, LAYER, thresholds)
    flagged = [r["flagged"] for r in tower.scan(str(path))]
    assert True in flagged and sum(flagged) == 1


def test_generate_hook_flags_like_the_offline_pass(setup):
    model, tok, sae, thresholds = setup
    tower = watch.Watchtower(model, tok, sae, LAYER, thresholds)
    enc = tok("the ~ cat sat on ~ the mat and", return_tensors="pt")
    with tower.during_generate() as live:
        out = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_token_id)
    live_flags = live.flags(out[0])
    assert live_flags and len(live.events) == len(live_flags)
    ids = out[0, :-1]  # the last generated token is never run through the model
    keep, acts = watch.ids_activations(model, tok, sae, LAYER, ids, [0, 1])
    offline = tower.flags_for(ids, keep, acts)
    assert [(f["position"], f["feature"]) for f in live_flags] == [(f["position"], f["feature"]) for f in offline]
    for a, b in zip(live_flags, offline):
        assert a["activation"] == pytest.approx(b["activation"], rel=1e-4, abs=1e-5)


def test_bad_input_is_one_line_error(setup):
    model, tok, sae, _ = setup
    with pytest.raises(ValueError, match="percentile"):
        watch.calibrate(model, tok, sae, LAYER, ["x"], [0], percentile=100)
    with pytest.raises(ValueError, match="features"):
        watch.calibrate(model, tok, sae, LAYER, ["x"], [99])


def test_thresholds_for_share_flags_that_share_of_documents():
    rng = np.random.default_rng(0)
    maxima = rng.gamma(2.0, size=(1000, 8))
    maxima[:, 3] = 0.0  # a feature that never fires: threshold 0, and it flags nothing here
    limits = watch.thresholds_for_share(maxima, 0.05)
    assert limits[3] == 0.0
    assert 0.04 <= (maxima > limits).any(axis=1).mean() <= 0.05  # at most the share, as close as steps allow
    one = watch.thresholds_for_share(maxima[:, :1], 0.1)  # one feature: the percentile of its maxima
    assert one[0] == pytest.approx(np.quantile(maxima[:, 0], 0.9), rel=0.01)


def test_flagged_share_of_held_out_baseline_documents_is_one_minus_percentile(tiny_model):
    """A prompt is flagged when any token x feature pair crosses; with eight features that fire on about
    half the tokens, thresholds from the per-token percentile flag nearly every document. Calibrated on the
    per-document maximum, held-out documents of the baseline's distribution are flagged at ~1 - p/100."""
    from shared.model.layout import d_model
    from shared.saes import architectures
    from shared.saes.relu import ReLUConfig

    model, tok = tiny_model("llama", device="cpu")
    torch.manual_seed(0)
    sae = architectures.build_sae(ReLUConfig(d_in=d_model(model), d_sae=8)).eval()
    feats = list(range(8))
    thresholds = watch.calibrate(model, tok, sae, LAYER, synthetic.synthetic_texts(400, seed=31), feats,
                                 percentile=90)
    tower = watch.Watchtower(model, tok, sae, LAYER, thresholds)
    tower.scan(synthetic.synthetic_texts(400, seed=32))  # held out: same generator, other documents
    s = tower.summary()
    assert s["n_prompts"] == 400
    assert 0.06 <= s["prompt_flag_rate"] <= 0.14, s  # binomial sd at 10 % of 400: 1.5 %
    assert s["n_tokens"] > 10 * s["n_prompts"]
    assert 0 < s["token_flag_rate"] < s["prompt_flag_rate"]  # per token, far rarer than per prompt
    assert s["n_flagged_tokens"] == sum(len({f["position"] for f in r["flags"]}) for r in tower.results)
