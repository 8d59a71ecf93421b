"""The acausal crosscoder: planted layer-local and persistent features are recovered and classified,
the decoder-norm-weighted sparsity has Lindsey's formula and gradient, save/load round-trips, bad
input fails in one line; it trains through the SAE trainer (training.trainer.train), which resumes it
bitwise and refuses a checkpoint of other settings."""
from __future__ import annotations

import pytest
import torch

from shared.saes import crosscoder as X
from shared.training import trainer
from shared.training.config import TrainConfig
from shared.training.schedule import lr_at
from shared.training.step import adam, sae_step

LAYERS = (2, 5, 9)
D_IN = 32
# planted class -> the layers (positions in LAYERS) its atoms write to
PLANTED = {"persistent": (0, 1, 2), "early-only": (0,), "middle-only": (1,), "late-only": (2,)}
PER_CLASS = 6
LAYER_SCALE = torch.tensor([1.0, 3.0, 10.0])  # layers of different norms: the crosscoder's scales even them out


def planted_atoms(seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Atoms [n, n_layers, d_in]: a random unit direction at each layer the atom lives in, zero elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    atoms, classes = [], []
    for cls, where in PLANTED.items():
        for _ in range(PER_CLASS):
            a = torch.zeros(len(LAYERS), D_IN)
            for l in where:
                v = torch.randn(D_IN, generator=gen)
                a[l] = v / v.norm()
            atoms.append(a)
            classes.append(cls)
    return torch.stack(atoms), classes


def planted_batches(atoms: torch.Tensor, n_batches: int, batch: int = 256, p: float = 0.06, seed: int = 1):
    """Sparse non-negative codes times the atoms, plus a little noise and a per-layer offset and scale."""
    gen = torch.Generator().manual_seed(seed)
    offset = torch.randn(len(LAYERS), D_IN, generator=torch.Generator().manual_seed(7))  # the same in every split
    scale = LAYER_SCALE[:, None]
    for _ in range(n_batches):
        on = torch.rand(batch, atoms.shape[0], generator=gen) < p
        codes = on * (0.5 + torch.rand(batch, atoms.shape[0], generator=gen))
        x = torch.einsum("na,ald->nld", codes, atoms) + 0.01 * torch.randn(batch, len(LAYERS), D_IN, generator=gen)
        yield (x + 0.2 * offset) * scale


def match_and_classify(xc: X.Crosscoder, atoms: torch.Tensor, fired: torch.Tensor):
    """For each planted atom: the learned live feature whose decoder (all layers, scaled space) has the
    highest cosine with it, that cosine, and that feature's class."""
    classes = X.classify_features(xc.decoder_norms(), fired)
    W = xc.W_dec.detach() / xc.scales[:, None]  # the decoder in each layer's raw space, as the atoms are
    W = torch.nn.functional.normalize(W.flatten(1), dim=1)
    A = torch.nn.functional.normalize((atoms * LAYER_SCALE[:, None]).flatten(1), dim=1)
    cos = A @ W.T
    cos[:, ~fired] = -1
    best = cos.max(1)
    return best.values, [classes[i] for i in best.indices]


def fit(xc: X.Crosscoder, batches, steps: int, **schedule) -> list[float]:
    """The trainer's step and schedule on in-memory batches [N, n_layers, d_in] (no model): the first batch
    initialises, then step.sae_step at schedule.lr_at; -> the FVU every 100 steps."""
    plan = TrainConfig(model_id="planted", layers=LAYERS, **schedule)
    optimizer = adam(xc.parameters(), lr=plan.lr, device=xc.W_enc.device)
    fvus = []
    for step, x in zip(range(steps), batches):
        if step == 0:
            xc.initialise(x)
        metrics = sae_step(xc, optimizer, x, lr_at(step, plan, steps))
        if (step + 1) % 100 == 0:
            fvus.append(float(metrics["fvu"]))
    return fvus


@pytest.mark.parametrize("architecture", ["topk", "l1"])
def test_planted_layer_features_are_recovered_and_classified(architecture):
    torch.manual_seed(0)
    atoms, truth = planted_atoms()
    cfg = X.CrosscoderConfig(layers=LAYERS, d_in=D_IN, d_sae=64, architecture=architecture, k=4,
                             l1_coefficient=0.03, dead_tokens_threshold=50_000)
    xc = X.Crosscoder(cfg)
    fvus = fit(xc, planted_batches(atoms, 600), 600, lr=3e-3, lr_min=3e-4, warmup_steps=30)
    assert len(fvus) == 6 and fvus[-1] < fvus[0]
    report = X.evaluate(xc, planted_batches(atoms, 8, seed=99))
    assert report["var_expl"] > 0.8, report
    assert all(r["var_expl"] > 0.7 for r in report["per_layer"]), report["per_layer"]
    cos, got = match_and_classify(xc, atoms, report["fired"])
    assert (cos > 0.9).float().mean() >= 0.8, cos
    agree = sum(g == t for g, t in zip(got, truth)) / len(truth)
    assert agree >= 0.8, list(zip(truth, got))


def test_l1_penalty_is_activation_times_summed_layer_norms_and_its_gradient():
    cfg = X.CrosscoderConfig(layers=LAYERS, d_in=8, d_sae=16, architecture="l1", l1_coefficient=0.5)
    xc = X.Crosscoder(cfg)
    with torch.no_grad():  # per-layer decoder norms that differ, so the sum of norms is not the norm of the concatenation
        xc.W_dec.mul_(torch.rand(16, 3, 1) * 3)
    x = torch.randn(40, 3, 8)
    out = xc(x)
    z = xc.encode(x).detach()
    norms = xc.W_dec.detach().norm(dim=2)  # [d_sae, n_layers]
    expected = 0.5 * (z * norms.sum(1)).sum(1).mean()
    assert torch.allclose(out.losses["l1"], expected, rtol=1e-5)
    assert torch.allclose(out.loss, out.fvu + expected, rtol=1e-5)
    (g,) = torch.autograd.grad(out.losses["l1"], xc.W_dec)
    want = 0.5 * z.mean(0)[:, None, None] * xc.W_dec.detach() / norms[:, :, None]
    assert torch.allclose(g, want, rtol=1e-4, atol=1e-7)
    # the reconstruction sums every layer's squared error over the batch's total variance
    xn = xc.normalize(x)
    sq = (xc.decode_normalized(z) - xn).pow(2).sum()
    assert torch.allclose(out.fvu, sq / (xn - xn.mean(0)).pow(2).sum(), rtol=1e-5)


def test_encoder_and_decoder_shapes_are_per_layer():
    xc = X.Crosscoder(X.CrosscoderConfig(layers=LAYERS, d_in=8, d_sae=16, architecture="l1"))
    assert tuple(xc.W_enc.shape) == (3, 8, 16) and tuple(xc.W_dec.shape) == (16, 3, 8)
    with torch.no_grad():
        xc.b_enc.normal_()
        xc.b_dec.normal_()
        xc.scales.copy_(torch.tensor([0.5, 2.0, 1.0]))
    x = torch.randn(5, 3, 8)
    pre = sum((x[:, l] * xc.scales[l]) @ xc.W_enc[l] for l in range(3)) + xc.b_enc
    assert torch.allclose(xc.encode(x), torch.relu(pre), atol=1e-5)
    z = torch.rand(5, 16)
    x_hat = xc.decode(z)
    for l in range(3):
        assert torch.allclose(x_hat[:, l], (z @ xc.W_dec[:, l] + xc.b_dec[l]) / xc.scales[l], atol=1e-5)


def test_topk_keeps_k_and_holds_the_all_layer_decoder_at_unit_norm_with_free_layer_shares():
    from shared.training.step import adam, sae_step

    xc = X.Crosscoder(X.CrosscoderConfig(layers=LAYERS, d_in=8, d_sae=16, k=3))
    opt = adam(xc.parameters(), lr=1e-2)
    for _ in range(20):
        x = torch.randn(64, 3, 8) * torch.tensor([1.0, 0.0, 0.0])[:, None]  # only the first layer carries signal
        x[:, 1:] += 0.01 * torch.randn(64, 2, 8)
        metrics = sae_step(xc, opt, x, 1e-2)
    assert float(metrics["l0"]) <= 3
    assert ((xc.encode(torch.randn(10, 3, 8)) > 0).sum(1) <= 3).all()
    norms = xc.decoder_norms()
    assert torch.allclose(norms.pow(2).sum(1), torch.ones(16), atol=1e-5)
    assert not torch.allclose(norms, norms[:1].expand_as(norms), atol=1e-3)  # per-layer norms moved apart


def test_classify_rule():
    norms = torch.tensor([[1.0, 1.0, 1.0], [0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.1, 0.8, 0.1],
                          [0.5, 0.45, 0.05], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    fired = torch.tensor([True] * 6 + [False])
    assert X.classify_features(norms, fired) == ["persistent", "early-only", "late-only", "middle-only",
                                                 "mixed", "dead", "dead"]
    counts = X.count_classes(X.classify_features(norms, fired))
    assert list(counts) == list(X.CLASSES) and counts["dead"] == 2 and sum(counts.values()) == 7
    assert "0.7" in X.classification_rule()


def test_save_load_round_trip(tmp_path):
    xc = X.Crosscoder(X.CrosscoderConfig(layers=LAYERS, d_in=8, d_sae=16, k=2, seed=3))
    xc.initialise(torch.randn(64, 3, 8) * torch.tensor([1.0, 4.0, 9.0])[:, None])
    folder = X.save(xc, tmp_path / "xc", model_name="tiny")
    back = X.load(folder, layers=list(LAYERS))
    for key in X.WEIGHT_KEYS:
        assert torch.equal(getattr(back, key), getattr(xc, key)), key
    assert back.cfg == xc.cfg
    x = torch.randn(7, 3, 8)
    assert torch.equal(back.decode(back.encode(x)), xc.decode(xc.encode(x)))
    import json
    cfg = json.loads((folder / X.CFG_FILE).read_text())
    assert cfg["layers"] == list(LAYERS) and cfg["hook_names"][0] == "blocks.2.hook_resid_post"
    assert cfg["model_name"] == "tiny" and len(cfg["scales"]) == 3 and cfg["architecture"] == "topk"


@pytest.mark.parametrize("kwargs, match", [
    (dict(layers=(3,)), "at least 2 layers"),
    (dict(layers=(5, 3, 9)), "increasing"),
    (dict(layers=(3, 3, 9)), "distinct"),
    (dict(layers=6), "list of block indices"),
    (dict(layers=LAYERS, d_sae=8, k=9), "k=9"),
    (dict(layers=LAYERS, architecture="gated"), "architecture"),
    (dict(layers=LAYERS, hook_names=("a", "b")), "hook_names"),
    (dict(layers=(1, 5, 9), hook_names=X.CrosscoderConfig(layers=LAYERS).hook_names), "names block 2, its layer is 1"),
    (dict(layers=LAYERS, l1_coefficient=-1.0), "l1_coefficient"),
])
def test_bad_config_is_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        X.CrosscoderConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_input_and_wrong_layer_set_are_one_line(tmp_path):
    xc = X.Crosscoder(X.CrosscoderConfig(layers=LAYERS, d_in=8, d_sae=16, k=2))
    with pytest.raises(ValueError, match="n_layers=3, d_in=8"):
        xc.encode(torch.randn(4, 2, 8))
    with pytest.raises(ValueError, match="NaN"):
        xc(torch.full((4, 3, 8), float("nan")))
    with pytest.raises(ValueError, match="d_in is None"):
        X.Crosscoder(X.CrosscoderConfig(layers=LAYERS))
    folder = X.save(xc, tmp_path / "xc")
    with pytest.raises(ValueError, match=r"over layers \[2, 5, 9\], not \[2, 5\]"):
        X.load(folder, layers=[2, 5])
    with pytest.raises(ValueError, match="holds no crosscoder"):
        X.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="dominant"):
        X.classify_features(torch.ones(4, 3), dominant=0.4)
    with pytest.raises(ValueError, match="persistent"):
        X.classify_features(torch.ones(4, 3), persistent=0.5)


def _crosscoder_run(folder, k: int = 4, layers=(0, 1, 3), **over) -> TrainConfig:
    """A tiny crosscoder run on tiny:llama (width 64), checkpointing every 700 tokens into `folder`."""
    run = dict(total_tokens=3072, context_len=32, batch_tokens=256, model_batch_size=4, block_batches=3,
               warmup_steps=2, log_every=2, checkpoint_dir=str(folder), checkpoint_every_tokens=700)
    run.update(over)
    return TrainConfig(model_id="tiny:llama", layers=layers, sae=X.CrosscoderConfig(layers=layers, d_sae=64, k=k),
                       **run)


def test_the_trainer_trains_a_crosscoder_on_every_layer_from_one_forward(tmp_path):
    from shared.model.loading import load_model
    from shared.training.stream import validation_batches

    model, tok = load_model("tiny:llama")
    cfg = _crosscoder_run(tmp_path, total_tokens=2048, block_batches=4)
    out = trainer.train(cfg, model, tok, progress=False)
    xc = out.saes["xc"]
    assert list(out.saes) == ["xc"] and out.layer_of == {"xc": (0, 1, 3)}
    assert out.tokens == 2048 and xc.cfg.d_in == 64 and cfg.sae.d_in is None
    assert out.history[-1]["xc/fvu"] < out.history[0]["xc/fvu"]
    assert trainer.load_metrics(out.metrics_path) == out.history  # the metrics log, as every SAE's
    held = validation_batches(cfg, tok, 256)
    report = X.evaluate(xc, X.model_batches(model, tok, held, xc.cfg.layers))
    assert [r["layer"] for r in report["per_layer"]] == [0, 1, 3] and report["tokens"] > 0
    with pytest.raises(ValueError, match="out of range") as e:
        trainer.train(_crosscoder_run(tmp_path / "deep", layers=(0, 1, 7), total_tokens=256), model, tok)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("change, match", [
    (dict(layers=(0, 1)), r"sae.layers=\[0, 1, 3\] but layers=\[0, 1\]"),
    (dict(variants={"a": {"d_sae": 64, "k": 4}}), "variants"),
    (dict(sae=X.CrosscoderConfig(layers=(0, 1, 3), seed=2)), "sae.seed=2"),
])
def test_a_crosscoder_run_config_that_cannot_be_is_one_line(change, match):
    """The crosscoder reads exactly the run's layers (none left unread, none missing), alone, seeded by the run."""
    fields = dict(model_id="tiny:llama", layers=(0, 1, 3), sae=X.CrosscoderConfig(layers=(0, 1, 3)))
    with pytest.raises(ValueError, match=match) as e:
        TrainConfig(**{**fields, **change})
    assert "\n" not in str(e.value)
    as_dict = TrainConfig(model_id="tiny:llama", layers=(0, 1, 3), sae={"layers": [0, 1, 3], "k": 8, "scales": [1]})
    assert as_dict.sae == X.CrosscoderConfig(layers=(0, 1, 3), k=8)  # a dict with layers (say, a cfg.json)


def test_feature_figure_groups_live_features_by_class():
    import matplotlib

    matplotlib.use("Agg")
    from shared.views import plots

    norms = torch.tensor([[1.0, 1.0, 1.0], [0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.0, 0.0, 0.0]])
    classes = ["persistent", "early-only", "late-only", "dead"]
    fig = plots.plot_crosscoder_features(norms, classes, list(LAYERS), X.CLASSES)
    heat, bars = fig.axes[0], fig.axes[1]
    assert [t.get_text() for t in heat.get_yticklabels()] == ["persistent (1)", "early-only (1)", "late-only (1)"]
    assert [p.get_height() for p in bars.patches] == [1, 1, 0, 1, 0, 1]


def test_topk_auxk_trains_only_dead_latents_on_the_residual():
    xc = X.Crosscoder(X.CrosscoderConfig(layers=LAYERS, d_in=8, d_sae=16, k=2, k_aux=3, aux_coef=0.5))
    x = torch.randn(32, 3, 8)
    assert "aux" not in xc(x).losses and "aux" not in xc(x, dead_mask=torch.zeros(16, dtype=torch.bool)).losses
    dead = torch.zeros(16, dtype=torch.bool)
    dead[10:] = True
    out = xc(x, dead_mask=dead)
    assert float(out.losses["aux"].detach()) > 0 and torch.equal(out.aux_loss, out.losses["aux"])
    (g,) = torch.autograd.grad(out.losses["aux"], xc.W_enc)
    moved = g.abs().sum((0, 1)) > 0  # per latent
    assert moved[10:].any() and not moved[:10].any()


def _tiny_crosscoder_run(folder, k=4, **over):
    return trainer.train(_crosscoder_run(folder, k=k, **over), progress=False)


def _logged(result) -> list[dict]:
    """The run's whole metrics log, less its wall-clock throughput."""
    return [{k: v for k, v in entry.items() if k != "tokens_per_s"} for entry in trainer.load_metrics(result.metrics_path)]


def test_interrupted_crosscoder_run_resumes_bitwise(tmp_path, monkeypatch):
    """Interrupted right after its first checkpoint (rows carried into the next block), then run
    again through the trainer: the same weights, Adam state and metrics log as a run never interrupted."""
    from shared.training import checkpoint as ckpt

    clean = _tiny_crosscoder_run(tmp_path / "clean")
    saved, open_store = [], ckpt.open_store

    def interrupting(*args, **kwargs):
        store = open_store(*args, **kwargs)
        save = store.save

        def save_then_stop(tokens, state, step=None):
            save(tokens, state, step=step)
            saved.append(state)
            raise KeyboardInterrupt("injected after a checkpoint")

        store.save = save_then_stop
        return store

    with monkeypatch.context() as m:
        m.setattr(ckpt, "open_store", interrupting)
        with pytest.raises(KeyboardInterrupt):
            _tiny_crosscoder_run(tmp_path / "killed")
    assert 0 < saved[0]["step"] * 256 < 3072 and saved[0]["data"]["carry"]["0"].shape[0] > 0  # mid-run, with a carry
    assert set(saved[0]["saes"]) == {"xc"} and "crosscoder.k" in saved[0]["config"]
    resumed = _tiny_crosscoder_run(tmp_path / "killed")
    assert resumed.resumed_from == saved[0]["step"] * 256
    assert resumed.tokens == clean.tokens == 3072 and _logged(resumed) == _logged(clean)
    for name, tensor in clean.saes["xc"].state_dict().items():
        assert torch.equal(tensor, resumed.saes["xc"].state_dict()[name]), name
    adam_of = {run: ckpt.open_store(str(tmp_path / run)).load_latest()[1]["optimizers"]["xc"]["state"]
               for run in ("clean", "killed")}
    for index, moments in adam_of["clean"].items():
        assert all(torch.equal(t, adam_of["killed"][index][name]) for name, t in moments.items()), index
    again = _tiny_crosscoder_run(tmp_path / "killed")  # finished: loads, trains nothing more
    assert again.history == [] and _logged(again) == _logged(clean)
    assert all(torch.equal(t, again.saes["xc"].state_dict()[n]) for n, t in clean.saes["xc"].state_dict().items())


def test_crosscoder_checkpoint_of_other_settings_is_refused_not_overwritten(tmp_path):
    """Other run settings, other crosscoder settings, or a per-layer SAE in its place: refused in one line,
    and the folder is left as it was."""
    _tiny_crosscoder_run(tmp_path, total_tokens=1024)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="other settings.*total_tokens") as e:
        _tiny_crosscoder_run(tmp_path, total_tokens=2048)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"other settings \(crosscoder.k\)"):
        _tiny_crosscoder_run(tmp_path, k=5, total_tokens=1024)
    with pytest.raises(ValueError, match=r"other settings \(.*crosscoder.l1_coefficient"):
        trainer.train(TrainConfig(**{**vars(_crosscoder_run(tmp_path, total_tokens=1024)),
                                     "sae": X.CrosscoderConfig(layers=(0, 1, 3), d_sae=64, k=4, l1_coefficient=0.5)}),
                      progress=False)
    with pytest.raises(ValueError, match="other settings.*crosscoder.architecture"):  # an SAE in its place
        trainer.train(TrainConfig(**{**vars(_crosscoder_run(tmp_path, total_tokens=1024)), "sae": {"d_sae": 64, "k": 4}}),
                      progress=False)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
