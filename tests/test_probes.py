"""Planted-truth tests of shared.probes: a hidden linear concept must be found, baselines stay honest."""
import json

import numpy as np
import pytest
import torch

from shared.model import capture, steer
from shared.readouts import probes
from shared.views import plots



def _unit(v):
    return v / np.linalg.norm(v)


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def planted(n, d=32, seed=0, label_noise=0.1):
    """Gaussian activations; label = sign of the projection on a hidden unit vector u (+ a little noise)."""
    rng = np.random.default_rng(seed)
    u = _unit(rng.standard_normal(d))
    X = rng.standard_normal((n, d)) + 0.5  # an offset, so nothing relies on centred inputs
    y = ((X - 0.5) @ u + label_noise * rng.standard_normal(n) > 0).astype(int)
    return X, y, u


def contrast(n, u, d=64, seed=0, strength=1.5):
    """CCS pairs: x± = base ± s·strength·u + side offset + noise, s = +1 when the x+ side is true."""
    rng = np.random.default_rng(seed)
    side = np.zeros(d)
    side[0] = 5.0  # the "Yes"/"No" token difference that per-side normalisation must remove
    y = rng.integers(0, 2, n)
    s = (2 * y - 1)[:, None]
    base = 2.0 * rng.standard_normal((n, d))
    x_pos = base + side + s * strength * u + rng.standard_normal((n, d))
    x_neg = base - side - s * strength * u + rng.standard_normal((n, d))
    return x_pos, x_neg, y


# ---------------------------------------------------------------------------------------------
# linear probe and diff-of-means


def test_linear_probe_finds_planted_concept():
    X, y, u = planted(1200, seed=0)
    r = probes.linear_probe(X[:800], y[:800], X[800:], y[800:])
    assert r.auroc > 0.95 and r.accuracy > 0.9
    assert _cos(r.direction, u) > 0.9
    assert r.test_scores.shape == (400,)
    json.dumps(r.to_dict())


def test_diff_of_means_aligns_with_planted_direction():
    X, y, u = planted(1200, seed=1)
    r = probes.diff_of_means(X[:800], y[:800], X[800:], y[800:])
    assert _cos(r.direction, u) > 0.9
    assert r.auroc > 0.95 and r.accuracy > 0.85


def test_probe_layers_table():
    X, y, u = planted(600, seed=2)
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(X.shape)
    tr, te = probes.train_test_indices(y, test_frac=0.3, seed=0)
    rows = probes.probe_layers({3: (X[tr], X[te]), 1: (noise[tr], noise[te])}, y[tr], y[te])
    assert [r["layer"] for r in rows] == [1, 3]
    assert rows[1]["lr_auroc"] > 0.95 and rows[1]["dom_auroc"] > 0.95
    assert rows[0]["lr_auroc"] < 0.7  # pure noise layer stays near chance
    json.dumps(rows)


def test_probes_accept_torch_tensors():
    X, y, _ = planted(300, seed=4)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    r = probes.linear_probe(Xt[:200], yt[:200], Xt[200:], yt[200:])
    assert r.auroc > 0.9


def test_train_test_indices_stratified():
    y = np.array([0] * 30 + [1] * 10)
    tr, te = probes.train_test_indices(y, test_frac=0.25, seed=0)
    assert len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 40
    assert set(y[te]) == {0, 1} and set(y[tr]) == {0, 1}


# ---------------------------------------------------------------------------------------------
# CCS


def test_ccs_gradient_matches_autograd():
    torch.manual_seed(0)
    p, q = torch.rand(3, 7, dtype=torch.float64), torch.rand(3, 7, dtype=torch.float64)
    zp, zn = torch.logit(p).requires_grad_(), torch.logit(q).requires_grad_()
    probes.ccs_loss(torch.sigmoid(zp), torch.sigmoid(zn)).sum().backward()
    gp, gn = probes._ccs_logit_grads(p, q)
    assert torch.allclose(gp, zp.grad) and torch.allclose(gn, zn.grad)


def test_ccs_adamw_matches_torch_optim():
    torch.manual_seed(1)
    xp, xn = torch.randn(20, 6), torch.randn(20, 6)
    W0, b0 = torch.randn(3, 6) * 0.3, torch.randn(3) * 0.3
    W, b = W0.clone(), b0.clone()
    probes._run_ccs(W, b, xp, xn, n_epochs=5, lr=1e-2, weight_decay=0.01)
    Wt, bt = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = torch.optim.AdamW([Wt, bt], lr=1e-2, weight_decay=0.01)
    for _ in range(5):
        opt.zero_grad()
        loss = probes.ccs_loss(torch.sigmoid(Wt @ xp.T + bt[:, None]), torch.sigmoid(Wt @ xn.T + bt[:, None]))
        loss.sum().backward()
        opt.step()
    assert torch.allclose(W, Wt.detach(), atol=1e-6) and torch.allclose(b, bt.detach(), atol=1e-6)


@pytest.fixture(scope="module")
def ccs_report():
    d = 64
    u = _unit(np.random.default_rng(10).standard_normal(d))
    train = contrast(800, u, d=d, seed=11)
    test = contrast(300, u, d=d, seed=12)
    return probes.ccs_with_baselines(*train, *test, probes.CCSConfig(seed=0)), u


def test_ccs_finds_planted_direction_up_to_sign(ccs_report):
    report, u = ccs_report
    ccs = report.results["ccs"]
    assert abs(_cos(ccs.direction, u)) > 0.8
    assert ccs.accuracy > 0.9 and ccs.sign_free


def test_ccs_baselines_are_honest(ccs_report):
    report, u = ccs_report
    res = report.results
    assert set(res) == {"ccs", "diff_of_means", "pca_top_pc", "random_floor", "lr_ceiling"}
    assert 0.45 <= res["random_floor"].accuracy <= 0.7
    assert res["diff_of_means"].accuracy > 0.9 and _cos(res["diff_of_means"].direction, u) > 0.9
    assert abs(_cos(res["pca_top_pc"].direction, u)) > 0.8
    assert res["lr_ceiling"].accuracy > 0.9
    for r in res.values():
        assert 0.0 <= r.accuracy <= 1.0
        if r.sign_free and r.method != "random_floor":
            assert r.extra["orientation"] in (1, -1)


def test_sign_free_directions_are_oriented_on_train_not_test():
    """The test pairs' labels flipped against the training pairs': a direction oriented on the training
    pairs scores ~0 on test, like the supervised baselines do; max(acc, 1-acc) on test scored it ~1."""
    d = 32
    u = _unit(np.random.default_rng(10).standard_normal(d))
    xp, xn, y = contrast(300, u, d=d, seed=11)
    tp, tn, ty = contrast(200, u, d=d, seed=12)
    res = probes.ccs_with_baselines(xp, xn, y, tp, tn, 1 - ty, probes.CCSConfig(n_epochs=300)).results
    assert res["diff_of_means"].accuracy < 0.1 and res["lr_ceiling"].accuracy < 0.1
    for name in ("ccs", "pca_top_pc"):
        assert res[name].accuracy < 0.1 and res[name].auroc < 0.1, name


def test_sign_free_scores_on_shuffled_test_labels_are_centred_on_chance():
    """Test labels shuffled: held-out accuracy and AUROC of CCS and of random directions sit around 0.5,
    below it as often as above (max(acc, 1-acc) on test kept every one >= 0.5: a floor of ~0.53)."""
    d = 32
    u = _unit(np.random.default_rng(10).standard_normal(d))
    xp, xn, y = contrast(300, u, d=d, seed=11)
    tp, tn, ty = contrast(200, u, d=d, seed=12)
    cfg = probes.CCSConfig(n_epochs=300, n_random=40)
    floors, ccs_auc = [], []
    for s in range(6):
        res = probes.ccs_with_baselines(xp, xn, y, tp, tn, np.random.default_rng(100 + s).permutation(ty), cfg).results
        floors.append(res["random_floor"].accuracy)
        ccs_auc.append(res["ccs"].auroc)
    assert abs(np.mean(floors) - 0.5) < 0.015
    assert min(ccs_auc) < 0.5 < max(ccs_auc)


def test_ccs_verdict_and_json(ccs_report):
    report, _ = ccs_report
    assert "CCS" in report.verdict and "diff-of-means" in report.verdict
    # here diff-of-means is as good as CCS, so the verdict must not credit CCS
    assert report.verdict.startswith("CCS adds nothing over diff-of-means")
    d = report.to_dict()
    json.dumps(d)
    assert "training pairs" in d["accuracy_note"] and "not max(acc, 1-acc)" in d["accuracy_note"]
    assert len(report.table()) == 5


def test_ccs_verdict_words():
    assert probes.ccs_verdict(0.81, 0.82, 0.8, 0.55, 0.9).startswith("CCS adds nothing over diff-of-means here (0.81 vs 0.82)")
    assert probes.ccs_verdict(0.95, 0.80, 0.8, 0.55, 0.97).startswith("CCS beats diff-of-means")
    assert probes.ccs_verdict(0.56, 0.80, 0.6, 0.55, 0.97).startswith("CCS is no better than random")
    # on 60 test pairs a 0.05 lead is noise, on 2000 it is not
    assert probes.ccs_verdict(0.65, 0.60, 0.6, 0.30, 0.7, n_test=60).startswith("CCS adds nothing")
    assert probes.ccs_verdict(0.95, 0.90, 0.9, 0.55, 0.97, n_test=2000).startswith("CCS beats")


# ---------------------------------------------------------------------------------------------
# RepE / LAT


def lat_pairs(n, d=48, seed=0, u=None):
    rng = np.random.default_rng(seed)
    u = _unit(rng.standard_normal(d)) if u is None else u
    base = 3.0 * rng.standard_normal((n, d))
    a = rng.uniform(1.0, 3.0, n)[:, None]
    pos = base + a * u + 0.5 * rng.standard_normal((n, d))
    neg = base + 0.5 * rng.standard_normal((n, d))
    return pos, neg, u


def test_reading_vector_aligns_with_correct_sign():
    pos, neg, u = lat_pairs(64, seed=0)
    v = probes.reading_vector(pos - neg, seed=0)
    assert _cos(v, u) > 0.9  # sign included
    v_swapped = probes.reading_vector(neg - pos, seed=0)
    assert _cos(v_swapped, u) < -0.9
    assert probes.reading_accuracy(pos, neg, v) > 0.95


def test_lat_layers_and_monitor():
    d = 48
    pos, neg, u = lat_pairs(128, d=d, seed=1)
    rng = np.random.default_rng(2)
    noise_pos, noise_neg = rng.standard_normal((128, d)), rng.standard_normal((128, d))
    lat = probes.lat_layers({0: noise_pos, 5: pos}, {0: noise_neg, 5: neg}, test_frac=0.3, val_frac=0.2, seed=0)
    rows = {r["layer"]: r for r in lat.table}
    assert lat.best_layer == 5
    assert rows[5]["test_accuracy"] > 0.95 and rows[0]["test_accuracy"] < 0.85
    assert _cos(lat.directions[5], u) > 0.9
    json.dumps(lat.table)
    new = np.stack([np.zeros(d) + 2 * u, np.zeros(d) - 2 * u])
    scores = probes.monitor_scores(new, lat.directions[5])
    assert scores[0] > 0 > scores[1]
    assert lat.norms[5] > 0


def test_lat_chooses_the_layer_on_validation_and_reports_its_test_accuracy():
    """Layer 3 reads the concept on the validation pairs and reverses it on the test pairs; layer 7 the
    opposite. Choosing on test accuracy would pick 7 and report 1.0; the layer is chosen on validation
    (3) and its test accuracy (0.0) is the number reported."""
    d, n = 16, 40
    pos, neg, u = lat_pairs(n, d=d, seed=4)
    split = probes.pair_split(n, test_frac=0.25, val_frac=0.25, seed=0)
    assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(n))  # disjoint, complete

    def reversed_on(part):
        P, N = pos.copy(), neg.copy()
        P[split[part]], N[split[part]] = neg[split[part]], pos[split[part]]
        return P, N

    (p3, n3), (p7, n7) = reversed_on("test"), reversed_on("val")
    lat = probes.lat_layers({3: p3, 7: p7}, {3: n3, 7: n7}, test_frac=0.25, val_frac=0.25, seed=0)
    rows = {r["layer"]: r for r in lat.table}
    assert rows[3]["val_accuracy"] == 1.0 and rows[3]["test_accuracy"] == 0.0
    assert rows[7]["val_accuracy"] == 0.0 and rows[7]["test_accuracy"] == 1.0
    assert lat.best_layer == 3 and lat.test_accuracy == 0.0
    assert {k: v.tolist() for k, v in lat.split.items()} == {k: v.tolist() for k, v in split.items()}
    with pytest.raises(ValueError, match="sum below 1"):
        probes.pair_split(n, test_frac=0.5, val_frac=0.5)
    with pytest.raises(ValueError, match="to fit on"):
        probes.pair_split(4, test_frac=0.4, val_frac=0.4)


# ---------------------------------------------------------------------------------------------
# errors


def test_errors_are_clear():
    X, y, _ = planted(100, seed=5)
    with pytest.raises(ValueError, match="only class"):
        probes.linear_probe(X, np.ones(100), X, y)
    with pytest.raises(ValueError, match="must match"):
        probes.diff_of_means(X, y[:50], X, y)
    with pytest.raises(ValueError, match="2-D"):
        probes.linear_probe(X[:, 0], y, X, y)
    with pytest.raises(ValueError, match="features"):
        probes.linear_probe(X, y, X[:, :5], y)
    with pytest.raises(ValueError, match="binary"):
        probes.diff_of_means(X, y * 2, X, y)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        probes.linear_probe(bad, y, X, y)
    with pytest.raises(ValueError, match="empty"):
        probes.probe_layers({}, y, y)
    with pytest.raises(ValueError, match="same shape"):
        probes.ccs_with_baselines(X, X[:50], y, X, X, y)
    with pytest.raises(ValueError, match="only class"):
        probes.ccs_with_baselines(X, X, np.zeros(100), X, X, y)
    with pytest.raises(ValueError, match="same shape"):
        probes.reading_accuracy(X, X[:10], np.ones(32))
    with pytest.raises(ValueError, match="dims"):
        probes.monitor_scores(X, np.ones(7))
    with pytest.raises(ValueError, match="no variance"):
        probes.reading_vector(np.zeros((5, 4)))


# ---------------------------------------------------------------------------------------------
# steering on a tiny model (needs shared.models and shared.capture)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request, tiny_model):
    torch.manual_seed(0)
    return tiny_model(request.param)


PROMPTS = ["The cat sat on the mat", "Paris is the capital of", "one two three", "I think that"]


def test_last_token_states_handles_padding(tiny):
    model, tok = tiny
    batched = capture.last_token_states(model, tok, PROMPTS, layers=[0, 2], batch_size=4)
    single = capture.last_token_states(model, tok, PROMPTS, layers=[0, 2], batch_size=1)
    assert batched[2].shape == (len(PROMPTS), model.config.hidden_size)
    np.testing.assert_allclose(batched[2], single[2], atol=1e-4)
    mean_b = capture.sequence_states(model, tok, PROMPTS, layers=[1], batch_size=4, pool="mean")[1]
    mean_s = capture.sequence_states(model, tok, PROMPTS, layers=[1], batch_size=1, pool="mean")[1]
    np.testing.assert_allclose(mean_b, mean_s, atol=1e-4)


def test_steering_moves_monitor_score_with_sign_of_alpha(tiny):
    model, tok = tiny
    layer = 1
    d = model.config.hidden_size
    u = _unit(np.random.default_rng(0).standard_normal(d))
    base = capture.last_token_states(model, tok, PROMPTS, layers=[layer])[layer]
    scale = probes.typical_norm(base)
    means = {}
    for alpha in (-2.0, 0.0, 2.0):
        with steer.steering_hook(model, layer, u, alpha, scale=scale):
            acts = capture.last_token_states(model, tok, PROMPTS, layers=[layer, layer + 1])
        means[alpha] = {L: probes.monitor_scores(a, u).mean() for L, a in acts.items()}
    for L in (layer, layer + 1):  # at the steered layer and one block later
        assert means[-2.0][L] < means[0.0][L] < means[2.0][L]
    # at the steered layer the shift is exactly alpha * scale
    assert means[2.0][layer] - means[0.0][layer] == pytest.approx(2.0 * scale, rel=1e-3)


def test_alpha_zero_leaves_logits_unchanged_and_hook_is_removed(tiny):
    model, tok = tiny
    ids = tok(PROMPTS[0], return_tensors="pt")["input_ids"]
    u = np.ones(model.config.hidden_size)
    with torch.no_grad():
        ref = model(ids).logits
        with steer.steering_hook(model, 1, u, 0.0, scale=5.0):
            same = model(ids).logits
        with steer.steering_hook(model, 1, u, 3.0):
            moved = model(ids).logits
        after = model(ids).logits
    assert torch.equal(ref, same)
    assert not torch.allclose(ref, moved)
    assert torch.equal(ref, after)


def test_generate_steered_greedy(tiny):
    model, tok = tiny
    u = _unit(np.random.default_rng(1).standard_normal(model.config.hidden_size))
    out = steer.generate_steered(model, tok, "The cat", 1, u, [-8.0, 0.0, 8.0], max_new_tokens=6, seed=0)
    assert set(out) == {-8.0, 0.0, 8.0} and all(isinstance(t, str) for t in out.values())
    again = steer.generate_steered(model, tok, "The cat", 1, u, [0.0], max_new_tokens=6, seed=0)
    assert again[0.0] == out[0.0]  # greedy: deterministic
    with pytest.raises(ValueError, match="out of range"):
        with steer.steering_hook(model, 99, u, 1.0):
            pass


# ---------------------------------------------------------------------------------------------
# notebook helpers: layer parsing, CCS prompts, plots, truncation


def test_ccs_prompt_pairs_keeps_answer_when_truncating():
    class CharTok:  # one token per character, enough for the truncation contract
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    items = [{"text": "x" * 500, "label": 1}, {"text": "short", "label": 0}]
    pos, neg, y = probes.ccs_prompt_pairs(items, "sentiment", CharTok(), max_text_tokens=20)
    assert pos[0].endswith("Answer: Yes") and neg[0].endswith("Answer: No")
    assert "x" * 21 not in pos[0] and "x" * 20 in pos[0]
    assert "short" in pos[1] and y.tolist() == [1, 0]
    assert probes.ccs_task_of("truthful_qa") == "truth" and probes.ccs_task_of("imdb") == "sentiment"
    with pytest.raises(ValueError, match="unknown CCS task"):
        probes.ccs_prompt_pairs(items, "topic")


def test_plot_helpers_return_figures(ccs_report):
    import matplotlib

    report, _ = ccs_report
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = [{"layer": 0, "lr_auroc": 0.6, "dom_auroc": 0.55}, {"layer": 1, "lr_auroc": 0.9, "dom_auroc": 0.85}]
    figs = [plots.plot_layer_auroc(table, best_layer=1),
            plots.plot_reading_accuracy([{"layer": 0, "train_accuracy": 1.0, "test_accuracy": 0.8}], 0),
            plots.plot_ccs_methods(report),
            plots.plot_ccs_sweep([{"layer": 0, "ccs": 0.7, "diff_of_means": 0.8}])]
    for fig in figs:
        assert fig.axes and fig.axes[0].get_title()
        plt.close(fig)
    assert len(figs[2].axes[0].patches) == len(report.results)
    with pytest.raises(ValueError, match="empty"):
        plots.plot_layer_auroc([])


def test_sequence_states_max_length_truncates(tiny):
    model, tok = tiny
    long = ["word " * 40, "short one"]
    full = capture.sequence_states(model, tok, long, layers=[1], pool="mean")[1]
    cut = capture.sequence_states(model, tok, long, layers=[1], pool="mean", max_length=8, progress=True)[1]
    assert cut.shape == full.shape
    assert not np.allclose(cut[0], full[0])
    with pytest.raises(ValueError, match="max_length"):
        capture.sequence_states(model, tok, long, layers=[1], max_length=0)
