"""Several SAEs at one layer fed by one activation stream (TrainConfig.variants), their evaluation on
the same held-out tokens, the Pareto frontier and the BatchTopK-vs-TopK verdict (shared/sweep.py)."""
from __future__ import annotations

import math

import pytest
import torch

from shared.evals import metrics
from shared.model.layout import layers_path
from shared.model.loading import load_model
from shared.saes import export, load
from shared.saes.batchtopk import BatchTopKConfig
from shared.saes.topk import TopKConfig
from shared.training import sweep
from shared.training.config import TrainConfig
from shared.training.stream import validation_batches
from shared.training.trainer import train
from test_train import _interrupt_after_checkpoints

RUN = dict(model_id="tiny:gpt2", layers=(1,), batch_tokens=256, context_len=32, model_batch_size=8, block_batches=4,
           warmup_steps=5, checkpoint_every_tokens=1500)
TOPK = TopKConfig(d_sae=64, k=4, dead_tokens_threshold=1000)
VARIANTS = {"a": TOPK, "b": TopKConfig(d_sae=64, k=4, dead_tokens_threshold=1000),
            "btk": BatchTopKConfig(d_sae=64, k=4, dead_tokens_threshold=1000)}


def _same_weights(a, b) -> bool:
    return all(torch.equal(t, b.state_dict()[n]) for n, t in a.state_dict().items())


@pytest.mark.slow
def test_variants_at_one_layer_train_on_identical_batches(tmp_path):
    """Two identical TopK configs in one run end bitwise equal, and equal to the same TopK trained
    alone on the same stream; the BatchTopK beside them differs, and every SAE logs its own metrics."""
    result = train(TrainConfig(**RUN, variants=VARIANTS, total_tokens=3000, checkpoint_dir=str(tmp_path / "v")),
                   progress=False)
    assert set(result.saes) == {"L1/a", "L1/b", "L1/btk"}
    assert result.layer_of == {"L1/a": 1, "L1/b": 1, "L1/btk": 1}
    assert _same_weights(result.saes["L1/a"], result.saes["L1/b"])
    assert not torch.equal(result.saes["L1/a"].W_dec, result.saes["L1/btk"].W_dec)
    alone = train(TrainConfig(**RUN, sae=TOPK, total_tokens=3000, checkpoint_dir=str(tmp_path / "one")),
                  progress=False)
    assert set(alone.saes) == {1} and alone.layer_of == {1: 1}
    assert _same_weights(result.saes["L1/a"], alone.saes[1])
    last = result.history[-1]
    assert {"L1/a/fvu", "L1/b/fvu", "L1/btk/fvu", "L1/btk/l0"} <= set(last)
    assert last["L1/a/fvu"] == last["L1/b/fvu"]


@pytest.mark.slow
def test_variants_resume_bitwise_and_refuse_other_variants(tmp_path, monkeypatch):
    """A run interrupted after a checkpoint restores every variant (weights, Adam, BatchTopK's
    threshold) and ends as a run never interrupted; another set of variants is refused."""
    cfg = dict(RUN, variants=VARIANTS, total_tokens=4000)
    clean = train(TrainConfig(**cfg, checkpoint_dir=str(tmp_path / "clean")), progress=False)
    with monkeypatch.context() as m:
        saved = _interrupt_after_checkpoints(m, 1)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**cfg, checkpoint_dir=str(tmp_path / "killed")), progress=False)
    assert set(saved[0]["saes"]) == {"L1/a", "L1/b", "L1/btk"}
    resumed = train(TrainConfig(**cfg, checkpoint_dir=str(tmp_path / "killed")), progress=False)
    assert resumed.resumed_from == saved[0]["step"] * RUN["batch_tokens"] and resumed.tokens == clean.tokens
    for key in clean.saes:
        assert _same_weights(clean.saes[key], resumed.saes[key]), key
    assert float(resumed.saes["L1/btk"].threshold[0]) > 0
    with pytest.raises(ValueError, match="other settings.*variants"):
        train(TrainConfig(**{**cfg, "variants": {"a": TOPK}}, checkpoint_dir=str(tmp_path / "killed")), progress=False)
    with pytest.raises(ValueError, match="other settings.*variants"):  # one SAE per layer vs variants
        train(TrainConfig(**RUN, sae=TOPK, total_tokens=4000, checkpoint_dir=str(tmp_path / "killed")), progress=False)


def test_bad_variants_are_refused_in_one_line():
    for bad, match in (({}, "non-empty"), ({"a/b": TOPK}, "without '/'"), ({"a": 3}, "SAE config"),
                       ({"a": TopKConfig(seed=2)}, "seed")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**RUN, variants=bad)
    cfg = TrainConfig(**RUN, variants={"a": {"architecture": "batchtopk", "d_sae": 64, "k": 4}})
    assert isinstance(cfg.variants["a"], BatchTopKConfig)


@pytest.mark.slow
def test_evaluating_variants_matches_evaluating_each_alone(tmp_path):
    """evaluate_saes keyed by variant name with layer_of gives each SAE the numbers it gets alone
    (the layer's zero-ablation runs are shared, not changed)."""
    model, tok = load_model("tiny:gpt2")
    cfg = TrainConfig(**RUN, variants=VARIANTS, total_tokens=1024, checkpoint_dir=str(tmp_path / "v"))
    result = train(cfg, model, tok, progress=False)
    batches = validation_batches(cfg, tok, 600)
    sparsity = {}
    both = metrics.evaluate_saes(model, tok, result.saes, batches, layer_of=result.layer_of, sparsity=sparsity)
    alone = metrics.evaluate_saes(model, tok, {1: result.saes["L1/btk"]}, batches)
    assert set(both) == {"L1/a", "L1/b", "L1/btk"}
    for name in ("var_expl", "l0", "dead_pct", "ce_loss_recovered", "kl_div_spliced", "ce_loss_zero_ablation"):
        assert both["L1/btk"][name] == pytest.approx(alone["1"][name], rel=1e-6), name
    assert both["L1/btk"]["saelens"] == pytest.approx(alone["1"]["saelens"], rel=1e-6)
    assert metrics.summarize(both).splitlines()[0].startswith("L1/a: var_expl")
    assert metrics.summarize(alone).startswith("L1: var_expl")
    with pytest.raises(ValueError, match="layer_of"):
        metrics.evaluate_saes(model, tok, result.saes, batches)
    points = sweep.sweep_points(both, VARIANTS, result.layer_of)
    assert {(p["name"], p["architecture"], p["k"]) for p in points} == {
        ("a", "topk", 4), ("b", "topk", 4), ("btk", "batchtopk", 4)}
    assert all(0 <= p["dead_pct"] <= 100 and p["l0"] > 0 for p in points)
    # every variant exports to its own SAELens folder, which loads back and encodes as the trained SAE
    info = export.ExportInfo(model_name="tiny:gpt2", layers_path=layers_path(model), context_size=32,
                             dataset_path="synthetic", tokens_trained=result.tokens)
    folders = export.export_run(result.saes, tmp_path / "export", info, report=both, sparsity=sparsity,
                                layer_of=result.layer_of)
    assert folders == {key: tmp_path / "export" / key.split("/")[1] / "blocks.1.hook_resid_post" for key in result.saes}
    x = torch.randn(16, result.saes["L1/a"].cfg.d_in)
    for key, folder in folders.items():
        loaded = load.load_sae(folder)
        assert torch.allclose(loaded.encode(x), result.saes[key].eval().encode(x), atol=1e-5), key
        assert (folder / "sparsity.safetensors").exists()


def test_sweep_input_is_checked_in_one_line():
    with pytest.raises(ValueError, match="architectures is empty"):
        sweep.check_sweep([], [8], 64)
    with pytest.raises(ValueError, match="k_values is empty"):
        sweep.check_sweep(["topk"], [], 64)
    with pytest.raises(ValueError, match=r"'topkk' is not registered; registered: \[.*'batchtopk'.*'jumprelu'.*'topk'"):
        sweep.check_sweep(["topk", "topkk"], [8], 64)
    with pytest.raises(ValueError, match="'jumprelu' has no k to sweep"):
        sweep.check_sweep(["jumprelu"], [8], 64)
    with pytest.raises(ValueError, match=r"k=128 .*1..d_sae=64"):
        sweep.check_sweep(["topk"], [8, 128], 64)
    with pytest.raises(ValueError, match="repeats"):
        sweep.check_sweep(["topk", "topk"], [8], 64)
    # the configs refuse k > d_sae on their own too
    with pytest.raises(ValueError, match=r"k=128 must be in 1..d_sae=64"):
        TopKConfig(d_sae=64, k=128)
    with pytest.raises(ValueError, match=r"k=128 must be in 1..d_sae=64"):
        BatchTopKConfig(d_sae=64, k=128)
    assert {"topk", "batchtopk", "matryoshka_batchtopk"} <= set(sweep.k_architectures())
    variants = sweep.sweep_variants(["topk", "batchtopk"], [4, 8], 64, dead_tokens_threshold=100)
    assert list(variants) == ["topk-k4", "topk-k8", "batchtopk-k4", "batchtopk-k8"]
    assert isinstance(variants["batchtopk-k8"], BatchTopKConfig) and variants["batchtopk-k8"].k == 8
    assert variants["topk-k4"].dead_tokens_threshold == 100


def _pt(arch, k, l0, ve, ce=None, dead=0.0):
    return {"architecture": arch, "k": k, "l0": l0, "var_expl": ve, "ce_loss_recovered": ve if ce is None else ce,
            "dead_pct": dead}


def test_pareto_frontier_keeps_the_non_dominated_points():
    pts = [_pt("t", 1, 10, 0.5), _pt("t", 2, 20, 0.7), _pt("t", 3, 20, 0.6),  # (20, 0.6) dominated by (20, 0.7)
           _pt("b", 4, 15, 0.45), _pt("b", 5, 40, 0.9), _pt("b", 6, 50, 0.9),  # (15, .45) by (10, .5); (50, .9) by (40, .9)
           _pt("b", 7, 5, float("nan"))]
    assert sweep.pareto_frontier(pts) == [0, 1, 4]
    assert sweep.pareto_frontier([_pt("t", 1, 10, 0.5), _pt("t", 1, 10, 0.5)]) == [0, 1]  # equal points: neither dominates
    assert sweep.pareto_frontier([]) == []


def test_verdict_on_constructed_points():
    topk = [_pt("topk", k, k, ve, dead=10.0) for k, ve in ((16, 0.60), (32, 0.70), (64, 0.80))]
    better = [_pt("batchtopk", k, k * 1.1, ve + 0.02, dead=4.0) for k, ve in ((16, 0.60), (32, 0.70), (64, 0.80))]
    v = sweep.compare(topk + better)
    assert v["verdict"] == "dominates" and len(v["matched_k"]) == 3
    assert v["matched_k"][0]["d_dead_pct"] == pytest.approx(-6.0)
    assert len(v["matched_l0"]) == 2  # L0 70.4 lies past TopK's largest L0 (64)
    # at L0 17.6 TopK interpolates (log L0) to 0.60 + 0.1 * log(1.1)/log(2)
    assert v["matched_l0"][0]["d_var_expl"] == pytest.approx(0.62 - (0.60 + 0.1 * math.log(1.1) / math.log(2)))
    assert "dominates" in v["text"] and "matched L0" in v["text"] and "-6.0" in v["text"]
    assert v["on_frontier"] == {"batchtopk": 3, "topk": 3}  # each TopK point has the lower L0

    worse = [_pt("batchtopk", k, k, ve - 0.05) for k, ve in ((16, 0.60), (32, 0.70), (64, 0.80))]
    assert sweep.compare(topk + worse)["verdict"] == "dominated"
    mixed = [_pt("batchtopk", 16, 16, 0.65), _pt("batchtopk", 64, 64, 0.75)]
    m = sweep.compare(topk + mixed)
    assert m["verdict"] == "mixed" and "Better at L0 16.0; worse at L0 64.0" in m["text"]
    part_tie = [_pt("batchtopk", 16, 16, 0.65), _pt("batchtopk", 32, 32, 0.7005)]
    assert sweep.compare(topk + part_tie)["verdict"] == "dominates"
    tie = [_pt("batchtopk", 32, 32, 0.7005)]
    assert sweep.compare(topk + tie)["verdict"] == "tie"
    # no L0 overlap: judged at matched k, and said so
    far = [_pt("batchtopk", 16, 200, 0.9), _pt("batchtopk", 32, 300, 0.95)]
    f = sweep.compare(topk + far)
    assert f["verdict"] == "mixed" and f["matched_l0"] == [] and "matched k is the only comparison" in f["text"]
    assert "Trade-off at k=16, k=32" in f["text"]  # more variance for 10x the latents is no domination
    sparser = [_pt("batchtopk", 16, 12, 0.61), _pt("batchtopk", 32, 20, 0.72)]  # fewer latents, more variance
    assert sweep.compare(topk + sparser, l0_tol=0.0)["matched_l0"][0]["status"] == "better"
    nothing = sweep.compare(topk + [_pt("batchtopk", 8, 500, 0.9)])
    assert nothing["verdict"] == "not compared" and "no common k" in nothing["text"]
    missing = sweep.compare(topk)
    assert missing["verdict"] == "not compared" and "no batchtopk points" in missing["text"]


def test_summary_marks_the_frontier_and_compares_with_topk():
    pts = [_pt("topk", 16, 16, 0.6), _pt("topk", 32, 32, 0.7), _pt("batchtopk", 16, 16, 0.65),
           _pt("matryoshka_batchtopk", 16, 16, 0.55)]
    for p in pts:
        p["name"] = sweep.variant_name(p["architecture"], p["k"])
    s = sweep.summarize(pts, ["topk", "batchtopk", "matryoshka_batchtopk"])
    assert s["frontier"] == ["batchtopk-k16", "topk-k32"]
    assert [p["on_frontier"] for p in pts] == [False, True, True, False]
    assert set(s["comparisons"]) == {"batchtopk", "matryoshka_batchtopk"}
    assert s["verdict"] == s["comparisons"]["batchtopk"]["text"] and "dominates" in s["verdict"]
    assert s["comparisons"]["matryoshka_batchtopk"]["verdict"] == "dominated"
    only = sweep.summarize(pts[3:], ["matryoshka_batchtopk"])
    assert only["comparisons"] == {} and "nothing to compare" in only["verdict"]
    table = sweep.format_points(pts)
    assert len(table.splitlines()) == 5 and "batchtopk" in table


def test_pareto_plot_has_three_panels_and_the_frontier():
    import matplotlib

    matplotlib.use("Agg")
    from shared.views import plots

    pts = [_pt("topk", 16, 16, 0.6), _pt("topk", 32, 32, 0.7), _pt("batchtopk", 16, 18, 0.65)]
    for p in pts:
        p["name"] = sweep.variant_name(p["architecture"], p["k"])
    sweep.summarize(pts, ["topk", "batchtopk"])
    fig = plots.plot_pareto(pts)
    assert len(fig.axes) == 3
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["topk", "batchtopk", "Pareto frontier"]
    assert list(fig.axes[0].lines[-1].get_xdata()) == [16, 18, 32]
    with pytest.raises(ValueError, match="no sweep points"):
        plots.plot_pareto([])


DDP_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from shared.training import distributed
from shared.training.config import TrainConfig
from shared.training.trainer import train
distributed.init(timeout_s=60)
cfg = TrainConfig(**json.loads(sys.argv[1]))
result = train(cfg, progress=False)
group = distributed.current()
if group is None or group.main:
    torch.save({k: v.state_dict() for k, v in result.saes.items()}, sys.argv[2])
rank = 0 if group is None else group.rank
torch.save({k: v.threshold.clone() for k, v in result.saes.items() if hasattr(v, "threshold")},
           sys.argv[2] + f".threshold{rank}")
"""


@pytest.mark.slow
def test_variants_under_two_processes_match_one_process(tmp_path):
    """Data-parallel (torchrun, two CPU processes): every TopK variant ends as in one process (TopK's
    one-process equivalence, to fp32 round-off), identical variants stay bitwise equal, and BatchTopK's
    threshold (a moving average of the smallest kept activation over all ranks' batches) is the same on
    both ranks."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from conftest import REPO

    script = tmp_path / "job.py"
    script.write_text(DDP_SCRIPT)
    variants = {"a": TOPK.to_dict(), "b": TOPK.to_dict(), "k8": {**TOPK.to_dict(), "k": 8},
                "btk": VARIANTS["btk"].to_dict()}
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = {}
    for nproc in (1, 2):
        cfg = {**RUN, "variants": variants, "total_tokens": 2048, "checkpoint_dir": str(tmp_path / f"ck{nproc}")}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launcher = ([] if nproc == 1 else ["-m", "torch.distributed.run", "--nproc-per-node", "2",
                                           "--master-addr", "127.0.0.1", "--master-port", str(port)])
        path = tmp_path / f"w{nproc}.pt"
        proc = subprocess.run([sys.executable, *launcher, str(script), json.dumps(cfg), str(path)], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        out[nproc] = torch.load(path)
    assert set(out[2]) == {"L1/a", "L1/b", "L1/k8", "L1/btk"}
    thresholds = [torch.load(f"{tmp_path / 'w2.pt'}.threshold{rank}") for rank in (0, 1)]
    assert set(thresholds[0]) == {"L1/btk"} and float(thresholds[0]["L1/btk"][0]) > 0
    assert torch.equal(thresholds[0]["L1/btk"], thresholds[1]["L1/btk"])
    for key in ("L1/a", "L1/b", "L1/k8"):  # BatchTopK selects over each rank's batch: not one-process equal
        for name, tensor in out[1][key].items():
            torch.testing.assert_close(tensor, out[2][key][name], rtol=1e-4, atol=1e-5, msg=f"{key} {name}")
    for name, tensor in out[2]["L1/a"].items():
        assert torch.equal(tensor, out[2]["L1/b"][name]), name
