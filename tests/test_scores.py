"""InterpScore v0.0.1 (shared/scores.py): the formula and its parts on planted data and a tiny model, the
one-line errors, and (when `make sae-bench-venv` built it) SAEBench's own functions on the same latents."""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import peer_python
from shared.data import packing, sources, synthetic
from shared.evals import metrics, scores
from shared.model import layout
from shared.saes import architectures
from shared.saes.topk import TopKConfig

LAYER = 2


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def test_l0_score_peaks_at_80_and_halves_at_40_and_160():
    assert scores.l0_score(80) == pytest.approx(1.0)
    assert scores.l0_score(40) == pytest.approx(0.5)
    assert scores.l0_score(160) == pytest.approx(0.5)
    assert scores.l0_score(0) == 0.0
    assert scores.l0_score(8) == pytest.approx(math.exp(-abs(math.log(8 / 80))))
    with pytest.raises(ValueError) as e:
        scores.l0_score(float("nan"))
    one_line(e)


def test_tpp_component_is_the_share_of_above_chance_auroc_removed():
    assert scores.tpp_component(0.9, 0.5) == pytest.approx(1.0)
    assert scores.tpp_component(0.9, 0.7) == pytest.approx(0.5)
    assert scores.tpp_component(0.9, 0.95) == 0.0  # ablation helped: clipped at 0
    assert scores.tpp_component(0.9, 0.2) == 1.0  # below chance: clipped at 1
    assert scores.tpp_component(0.5, 0.3) == 0.0  # nothing above chance to remove


def test_combine_checks_its_components():
    parts = dict.fromkeys(scores.WEIGHTS, 1.0)
    assert scores.combine(parts) == pytest.approx(1.0)
    assert sum(scores.WEIGHTS.values()) == pytest.approx(1.0)
    for bad in ({**parts, "tpp": 1.5}, {k: v for k, v in parts.items() if k != "alive"}, {**parts, "alive": "x"}):
        with pytest.raises(ValueError) as e:
            scores.combine(bad)
        one_line(e)


def _planted(n: int, spread: int, seed: int):
    """Latents [n, 200] whose label is written in `spread` latents, over sparse noise in all of them."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.exponential(0.3, (n, 200)) * (rng.random((n, 200)) < 0.3)
    X[:, :spread] += (2.0 / math.sqrt(spread)) * y[:, None]
    return X, y


def test_tpp_high_when_a_concept_sits_in_few_latents_and_low_when_smeared():
    Xtr, ytr = _planted(400, 1, 0)
    Xte, yte = _planted(200, 1, 1)
    few = scores.probe_task("few", Xtr, ytr, Xte, yte)
    assert few.auroc > 0.95 and 0 in few.top_features and few.tpp > 0.8
    Xtr, ytr = _planted(400, 150, 0)
    Xte, yte = _planted(200, 150, 1)
    many = scores.probe_task("many", Xtr, ytr, Xte, yte)
    assert many.auroc > 0.95 and many.tpp < 0.3
    assert len(many.top_features) == scores.TPP_TOP_N
    assert scores.sparse_probing([few, many]) == pytest.approx((few.auroc + many.auroc) / 2)


def test_bad_inputs_get_one_line_errors(tiny_trained_model):
    model, tok = tiny_trained_model("llama")
    wrong = architectures.build_sae(TopKConfig(d_in=layout.d_model(model) + 1, d_sae=32, k=4))
    with pytest.raises(ValueError, match="d_in") as e:
        scores.reconstruction_parts(model, tok, wrong, LAYER, [])
    one_line(e)
    with pytest.raises(ValueError, match="d_in") as e:
        scores.pooled_latents(model, tok, wrong, LAYER, ["a text"])
    one_line(e)
    one_class = [{"text": "x", "label": 1}] * 4
    with pytest.raises(ValueError, match="only class") as e:
        scores.check_items("ones", one_class, 4, "train")
    one_line(e)
    with pytest.raises(ValueError, match="fewer than the 10 requested") as e:
        scores.check_items("short", one_class, 10, "train")
    one_line(e)
    with pytest.raises(ValueError, match="binary") as e:
        scores.check_items("topic", synthetic.synthetic_task("topic", 12), 12, "train")
    one_line(e)
    Xtr, ytr = _planted(40, 1, 0)
    with pytest.raises(ValueError, match="probing task 'flat'") as e:
        scores.probe_task("flat", Xtr, np.ones(40, int), Xtr, ytr)
    one_line(e)
    short = [torch.zeros(2, 16, dtype=torch.long)] * 3
    with pytest.raises(ValueError, match="fewer than eval_tokens=1000") as e:
        scores.take_tokens(iter(short), 1000)
    one_line(e)
    got = scores.take_tokens(iter(short), 40)  # 32 in the first batch, then one row of the second
    assert [b.shape[0] for b in got] == [2, 1]


def test_pool_latents_averages_each_tokens_latents():
    torch.manual_seed(0)
    sae = architectures.build_sae(TopKConfig(d_in=8, d_sae=32, k=3)).eval()
    acts = torch.randn(3, 5, 8)
    keep = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    got = scores.pool_latents(sae, acts, keep)
    with torch.no_grad():
        want = torch.stack([sae.encode(acts[i][keep[i]]).mean(0) for i in range(3)])
    assert torch.allclose(got, want, atol=1e-6)


@pytest.fixture(scope="module")
def scored(tiny_trained_model):
    """A whole InterpScore run on tiny-trained:llama with a random TopK SAE: (report, evaluate report, sae)."""
    model, tok = tiny_trained_model("llama")
    torch.manual_seed(0)
    sae = architectures.build_sae(TopKConfig(d_in=layout.d_model(model), d_sae=128, k=8)).eval()
    batches = scores.take_tokens(packing.token_batches(sources.text_stream("synthetic"), tok, 32, 4), 512)
    parts, val = scores.reconstruction_parts(model, tok, sae, LAYER, batches)
    results = []
    for task in ("synthetic:sentiment", "synthetic:names"):
        t = scores.task_latents(model, tok, sae, LAYER, task, 60, 30, max_length=48)
        assert t.X_train.shape == (60, 128) and t.R_test.shape == (30, layout.d_model(model))
        results.append(scores.probe_task(task, t.X_train, t.y_train, t.X_test, t.y_test))
    report = scores.interpscore_report(parts=parts, task_results=results, sae_repo="random", model="tiny-trained:llama",
                                       layer=LAYER, d_model=layout.d_model(model), d_sae=128, k=8, tokens_trained=None,
                                       eval_tokens=sum(b.numel() for b in batches))
    return report, val, sae, batches, model, tok


def test_interp_score_equals_the_weighted_components_recomputed_by_hand(scored, tmp_path):
    report = scored[0]
    path = tmp_path / "interpscore.json"
    path.write_text(json.dumps(report))
    back = json.loads(path.read_text())
    by_hand = (0.30 * back["components"]["loss_recovered"] + 0.15 * back["components"]["alive"]
               + 0.15 * back["components"]["l0_score"] + 0.25 * back["components"]["sparse_probing"]
               + 0.15 * back["components"]["tpp"])
    assert back["interp_score"] == pytest.approx(by_hand, abs=1e-6)
    assert back["weights"] == {"loss_recovered": 0.30, "alive": 0.15, "l0_score": 0.15, "sparse_probing": 0.25,
                               "tpp": 0.15}
    design_keys = {"version", "sae_repo", "model", "layer", "d_model", "d_sae", "k", "tokens_trained", "eval_tokens",
                   "probing_tasks", "probing_per_task_auc", "tpp_concept", "tpp_top_features", "components",
                   "weights", "interp_score", "timestamp"}
    assert design_keys <= set(back) and back["version"] == "0.0.1"
    assert all(0.0 <= v <= 1.0 for v in back["components"].values())
    assert back["tpp_concept"] == back["probing_tasks"][0] == "synthetic:sentiment"
    assert back["components"]["sparse_probing"] == pytest.approx(np.mean(list(back["probing_per_task_auc"].values())),
                                                                 abs=1e-5)
    row = scores.leaderboard_entry(back)
    assert row["interp_score"] == back["interp_score"] and row["tpp"] == back["components"]["tpp"]
    assert sum(scores.weighted_parts(back).values()) == pytest.approx(back["interp_score"], abs=1e-5)


def test_loss_alive_l0_parts_are_evaluate_saes_numbers(scored):
    report, val, sae, batches, model, tok = scored
    again = metrics.evaluate_saes(model, tok, {LAYER: sae}, batches)[str(LAYER)]
    # InterpScore v0.0.1's loss_recovered is SAELens' ce_loss_score (ablation zeroes BOS too), not ours
    assert report["components"]["loss_recovered"] == pytest.approx(
        min(1, max(0, again["saelens"]["ce_loss_score"])), abs=1e-6)
    assert again["saelens"]["ce_loss_score"] != pytest.approx(again["ce_loss_recovered"], abs=1e-4)
    assert report["components"]["alive"] == pytest.approx(again["alive"] / 128, abs=1e-6)
    assert report["components"]["l0_score"] == pytest.approx(scores.l0_score(again["l0"]), abs=1e-6)
    assert report["eval_tokens"] >= 512


# --------------------------------------------------------------------------------------------
# SAEBench's own functions on the same latents (its pins clash with ours: `make sae-bench-venv`)


SAE_BENCH_SCRIPT = r"""
import json, sys
import numpy as np, torch
from sae_bench.evals.sparse_probing import probe_training as pt
from sae_bench.evals.scr_and_tpp import main as tpp
from shared.saes.architectures import build_sae, config_from_dict

d = np.load(sys.argv[1])
out = {}
Xtr, Xte = torch.tensor(d["Xtr"]), torch.tensor(d["Xte"])
ytr, yte = torch.tensor(d["ytr"], dtype=torch.int), torch.tensor(d["yte"], dtype=torch.int)
for k in (1, 2, 5):
    mask = pt.get_top_k_mean_diff_mask(Xtr, ytr, k)
    _, acc = pt.train_sklearn_probe(pt.apply_topk_mask_reduce_dim(Xtr, mask), ytr,
                                    pt.apply_topk_mask_reduce_dim(Xte, mask), yte)
    out[f"sae_top_{k}_test_accuracy"] = float(acc)
blob = torch.load(sys.argv[2])
sae = build_sae(config_from_dict(blob["cfg"]))
sae.load_state_dict(blob["state"])
sae.eval()
probe = pt.Probe(int(d["w"].shape[0]), torch.float32)
with torch.no_grad():
    probe.net.weight.copy_(torch.tensor(d["w"])[None])
acts = {"pos": torch.tensor(d["acts_pos"]), "neg": torch.tensor(d["acts_neg"])}
with torch.no_grad():
    effects = tpp.get_effects_per_class_precomputed_acts(sae, probe, "pos", acts, False, 16)
out["effects"] = effects.tolist()
out["top"] = sorted(int(i) for i in torch.nonzero(tpp.select_top_n_features(effects, 20, "pos")).flatten())
with torch.no_grad():
    out["ablated_pos"] = tpp.ablated_precomputed_activations(acts["pos"], sae, tpp.select_top_n_features(effects, 20, "pos"),
                                                             16).tolist()
print(json.dumps(out))
"""


def test_saebench_functions_agree_with_ours_on_the_same_latents(tmp_path):
    """SAEBench 0.6.0's sparse-probing (top-k mean-diff selection + sklearn probe accuracy) and TPP latent
    selection (effects, top-N), run by the package itself, give what scores.saebench_* give."""
    sae_bench_python = peer_python("SAE_BENCH_PYTHON", ".venv-saebench", "sae_bench", "sae-bench-venv")
    torch.manual_seed(0)
    d, n, T = 16, 40, 6
    sae = architectures.build_sae(TopKConfig(d_in=d, d_sae=64, k=6)).eval()
    concept = torch.randn(d)

    def acts(sign: float):  # [n, T, d] with zeroed (masked) trailing positions, as SAEBench stores them
        a = torch.randn(n, T, d) + sign * concept
        lengths = torch.randint(2, T + 1, (n,))
        a[torch.arange(T)[None, :] >= lengths[:, None]] = 0.0
        return a

    pos, neg = acts(1.0), acts(-1.0)
    both = torch.cat([pos, neg])
    latents = scores.pool_latents(sae, both, both.sum(-1) != 0).numpy()
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    Xtr, Xte, ytr, yte = latents[::2], latents[1::2], y[::2], y[1::2]
    w = np.random.default_rng(0).standard_normal(d).astype(np.float32) + concept.numpy()
    np.savez(tmp_path / "in.npz", Xtr=Xtr.astype(np.float32), Xte=Xte.astype(np.float32), ytr=ytr, yte=yte, w=w,
             acts_pos=pos.numpy(), acts_neg=neg.numpy())
    torch.save({"cfg": sae.cfg.to_dict(), "state": sae.state_dict()}, tmp_path / "sae.pt")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sae_bench_python, "-c", SAE_BENCH_SCRIPT, str(tmp_path / "in.npz"), str(tmp_path / "sae.pt")],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    theirs = json.loads(r.stdout.strip().splitlines()[-1])
    ours = scores.saebench_top_k_accuracies(Xtr, ytr, Xte, yte)
    for key, value in ours.items():
        assert theirs[key] == pytest.approx(value, abs=1e-9), key
    effects = scores.saebench_tpp_effects(latents, y, w, sae.W_dec)
    assert np.allclose(theirs["effects"], effects, atol=1e-4)
    assert theirs["top"] == scores.saebench_top_n(effects, 20)
    assert (effects != 0).sum() >= 20  # the comparison picked real latents, not an empty set
    # SAEBench's ablation (zero per token, decode, add the SAE error, re-pool the residual) is the pooled
    # residual minus the pooled ablated latents times their decoder rows: zeroing pooled latents is the same cut
    top = theirs["top"]
    keep = pos.sum(-1) != 0
    resid = (pos * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    want = resid - torch.from_numpy(latents[:n][:, top]) @ sae.W_dec.detach()[top]
    assert np.allclose(theirs["ablated_pos"], want.numpy(), atol=1e-4)


def test_scores_a_published_format_sae_read_by_load_sae(tiny_trained_model, tmp_path):
    """A Gemma Scope style params.npz (JumpReLU, no b_dec subtracted) goes through sae_io.load_sae and
    every InterpScore part comes out in [0, 1]; a folder for another width is refused in one line."""
    from shared.saes import load

    model, tok = tiny_trained_model("llama")
    d, m = layout.d_model(model), 96
    rng = np.random.default_rng(0)
    W_enc = rng.standard_normal((d, m)).astype(np.float32) / np.sqrt(d)
    folder = tmp_path / "layer_2" / "width_96" / "average_l0_20"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", W_enc=W_enc, W_dec=W_enc.T.copy(), b_enc=np.zeros(m, np.float32),
             b_dec=np.zeros(d, np.float32), threshold=np.full(m, 0.1, np.float32))
    sae = load.load_sae(folder, d_in=d)
    assert sae.cfg.architecture == "jumprelu"
    batches = scores.take_tokens(packing.token_batches(sources.text_stream("synthetic"), tok, 32, 4), 256)
    parts, _ = scores.reconstruction_parts(model, tok, sae, LAYER, batches)
    X, R = scores.pooled_latents(model, tok, sae, LAYER, ["a short text", "and another one, longer than that"])
    assert X.shape == (2, m) and R.shape == (2, d) and np.isfinite(X).all()
    assert all(0.0 <= v <= 1.0 for v in parts.values())
    with pytest.raises(ValueError, match="d_in") as e:
        load.load_sae(folder, d_in=d + 1)
    one_line(e)


def test_tokens_trained_is_read_from_a_local_export(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"metadata": {"tokens_trained": 20480}}))
    assert scores.tokens_trained_in(tmp_path) == 20480
    assert scores.tokens_trained_in(tmp_path / "missing") is None
    assert scores.tokens_trained_in("google/gemma-scope-2b-pt-res/layer_12") is None
    (tmp_path / "cfg.json").write_text("{not json")
    assert scores.tokens_trained_in(tmp_path) is None


# ---------------------------------------------------------------------------------------------
# the evaluation text (notebook 18): held out from the stream the SAEs train on


def test_evaluation_text_is_held_out_from_the_training_stream(tiny_model, tmp_path):
    """train-tiny (and a tier notebook) trains on DATASET from the start of its stream; the evaluation
    used to read that very stream. It now reads VAL_DATASET, or the synthetic corpus's test split."""
    from itertools import islice

    from shared.data import packing, sources

    _, tok = tiny_model("llama", device="cpu")
    trained = {tuple(r) for b in islice(packing.token_batches(sources.text_stream("synthetic"), tok, 32, 8), 8)
               for r in b.tolist()}
    texts, record = scores.evaluation_text("synthetic", "synthetic", seed=0)
    rows = [tuple(r) for b in scores.take_tokens(packing.token_batches(texts, tok, 32, 8), 2000) for r in b.tolist()]
    assert not trained & set(rows)  # no evaluation context is one the SAE trained on
    assert record["held_out"] is True and record["sources"] == ["synthetic:test"]
    assert scores.evaluation_text("", "synthetic")[1]["held_out"] is True  # "" = DATASET's held-out split

    other, train = tmp_path / "other.txt", tmp_path / "train.txt"
    other.write_text("held out text\n\nmore of it\n")
    train.write_text("training text\n\nmore of it\n")
    texts, record = scores.evaluation_text(str(other), str(train))
    assert record["held_out"] is True and list(texts) == ["held out text", "more of it"]  # one pass, as is
    record = scores.evaluation_text("", str(train))[1]
    assert record["held_out"] is False and "NOT held out" in record["note"]


def test_notebook_18_states_its_definitions_itself():
    """It cited DESIGN.md, which is not in the repository: the rendered notebook names every key itself."""
    import build_notebooks as bn
    from conftest import REPO

    entry = next(e for e in bn.load_catalog(REPO) if e.id == "18_interpscore_eval")
    text = bn.render_entry(REPO, entry, bn.load_settings(REPO))
    assert "DESIGN.md" not in text
    markdown = " ".join("".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "markdown")
    report_keys = ("version", "sae_repo", "model", "layer", "d_model", "d_sae", "k", "tokens_trained", "eval_tokens",
                   "probing_tasks", "probing_per_task_auc", "tpp_concept", "tpp_top_features", "components",
                   "weights", "interp_score", "timestamp", "loss_recovered", "alive", "l0_score", "sparse_probing",
                   "tpp")
    assert not [k for k in report_keys if f"`{k}`" not in markdown]
