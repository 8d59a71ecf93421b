"""JumpReLU + L0 and ReLU + decoder-norm-weighted L1 (sae_jumprelu.py, sae_relu.py): planted
dictionaries recovered, the straight-through gradients and the L1 term equal their formulas, the
trainer trains both, and the real sae_lens loads their exports and encodes identically."""

import json
import warnings

import pytest
import torch

from shared.saes import architectures, export, load
from shared.saes.jumprelu import JumpReLU, JumpReLUConfig, Step
from shared.saes.relu import ReLUConfig
from shared.training.config import TrainConfig
from shared.training.step import sae_step
from shared.training.trainer import train as train_run
from tests.test_sae import one_thread, planted, train  # noqa: F401 (one_thread: an autouse fixture)


def _recovered(atoms, sae) -> float:
    """Share of atoms some decoder direction matches with cosine > 0.9 (rows normalised here:
    the ReLU SAE's rows are free)."""
    W = sae.W_dec.detach()
    cos = atoms @ (W / W.norm(dim=1, keepdim=True)).T
    return (cos.max(dim=1).values > 0.9).float().mean().item()


@pytest.mark.parametrize("cfg, l0_range", [
    (JumpReLUConfig(d_in=32, d_sae=128, l0_coefficient=0.03, init_threshold=0.1, seed=1), (2.5, 6)),
    (ReLUConfig(d_in=32, d_sae=128, l1_coefficient=0.05, seed=1), (4, 25)),
], ids=["jumprelu", "relu"])
def test_planted_dictionary_is_recovered(cfg, l0_range):
    torch.manual_seed(0)
    atoms, sample = planted(n_atoms=64, d_in=32)
    sae = architectures.build_sae(cfg)
    sae.init_b_dec_geometric_median(sample(2048))
    metrics = train(sae, sample, steps=1500)
    assert _recovered(atoms, sae) >= 0.9
    assert metrics["fvu"].item() < 0.15
    assert l0_range[0] <= metrics["l0"].item() <= l0_range[1]  # 4 atoms a token; ReLU's L1 leaves small extras


def test_straight_through_gradients_equal_the_formula():
    """d/d theta of JumpReLU = -(theta/eps) K((pre - theta)/eps) * g, of Step = -(1/eps) K(...) * g, summed
    over tokens; JumpReLU passes g to pre where it fires, Step passes none (DeepMind's estimator)."""
    eps = 0.5
    theta = torch.tensor([0.3, 1.0, 0.0], requires_grad=True)
    pre = torch.tensor([[0.2, 1.1, -0.1], [0.5, 0.6, 0.2], [0.7, 3.0, 0.3]], requires_grad=True)
    g = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0], [4.0, 1.0, -2.0]])
    # by hand: K(u) = 1 where |pre - theta| < eps/2 = 0.25
    K = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    fires = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])

    out = JumpReLU.apply(pre, theta, eps)
    assert torch.equal(out, pre.detach() * fires)
    gp, gt = torch.autograd.grad(out, (pre, theta), g)
    assert torch.allclose(gt, -(theta.detach() / eps * K * g).sum(0))
    assert torch.allclose(gp, fires * g)

    step = Step.apply(pre, theta, eps)
    assert torch.equal(step, fires)
    (gt,) = torch.autograd.grad(step, theta, g)
    assert torch.allclose(gt, -(K / eps * g).sum(0))
    assert Step.apply(pre, theta, eps).grad_fn is not None and pre.grad is None

    # The same numbers as SAELens' own estimators (its DeepMind setting, ste_to_input=False).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sl = pytest.importorskip("sae_lens.saes.jumprelu_sae")
    for ours, theirs in ((JumpReLU, sl.JumpReLU), (Step, sl.Step)):
        a = torch.autograd.grad(ours.apply(pre, theta, eps), theta, g)[0]
        b = torch.autograd.grad(theirs.apply(pre, theta, eps, False), theta, g)[0]
        assert torch.allclose(a, b)


def test_jumprelu_loss_is_fvu_plus_l0_and_the_step_keeps_thresholds_nonnegative():
    sae = architectures.build_sae(JumpReLUConfig(d_in=8, d_sae=16, l0_coefficient=0.1, init_threshold=0.2, bandwidth=0.1))
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    out = sae(x)
    pre = sae.encode_pre(x)
    l0 = (pre > 0.2).float().sum(1).mean()
    assert out.losses["l0"].item() == pytest.approx(0.1 * l0.item())
    assert out.loss.item() == pytest.approx((out.fvu + out.losses["l0"]).item())
    assert torch.equal(out.latent_vals, torch.relu(pre) * (pre > 0.2))
    with torch.no_grad():
        sae.threshold[:4] = -1.0
    metrics = sae_step(sae, torch.optim.Adam(sae.parameters(), lr=1e-3), x)
    assert "l0_loss" in metrics and (sae.threshold >= 0).all()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16), atol=1e-5)  # unit rows, as the paper


def test_relu_l1_is_decoder_norm_weighted_and_rows_stay_free():
    sae = architectures.build_sae(ReLUConfig(d_in=8, d_sae=16, l1_coefficient=0.3))
    scales = torch.linspace(0.5, 2.0, 16)
    with torch.no_grad():
        sae.W_dec.mul_(scales[:, None])  # rows of norm 0.5 .. 2
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    out = sae(x)
    z = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc).detach()
    by_hand = 0.3 * sum(float(z[n, j]) * float(scales[j]) for n in range(32) for j in range(16)) / 32
    assert out.losses["l1"].item() == pytest.approx(by_hand, rel=1e-5)
    assert out.loss.item() == pytest.approx((out.fvu + out.losses["l1"]).item())
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    metrics = sae_step(sae, opt, x)
    assert "l1_loss" in metrics
    norms = sae.W_dec.norm(dim=1)
    assert not torch.allclose(norms, torch.ones(16), atol=1e-2)  # SAELens does not renormalise
    assert torch.allclose(norms, scales, atol=0.1)               # only Adam's small step moved them


@pytest.mark.parametrize("sae_cfg, term", [
    (JumpReLUConfig(d_sae=64, l0_coefficient=1e-3, dead_tokens_threshold=1000), "l0_loss"),
    (ReLUConfig(d_sae=64, l1_coefficient=1e-3, dead_tokens_threshold=1000), "l1_loss"),
], ids=["jumprelu", "relu"])
def test_trainer_trains_and_saelens_encodes_the_export_identically(sae_cfg, term, tmp_path):
    cfg = TrainConfig(model_id="tiny:gpt2", layers=(1,), sae=sae_cfg, total_tokens=768, batch_tokens=128,
                      context_len=32, model_batch_size=4, block_batches=2, warmup_steps=1, log_every=1,
                      checkpoint_every_tokens=768, checkpoint_dir=str(tmp_path / "ck"))
    result = train_run(cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / "ck" / "metrics.jsonl").read_text().splitlines()]
    assert result.tokens >= 768 and all(term.join(("L1/", "")) in e for e in log)
    assert log[-1]["L1/fvu"] < log[0]["L1/fvu"]
    sae = result.saes[1]

    info = export.ExportInfo(model_name="tiny:gpt2", layers_path="transformer.h", context_size=32,
                             prepend_bos=False, dataset_path="synthetic", tokens_trained=result.tokens)
    folder = export.export_saelens(sae, tmp_path / "out", info, layer=1)
    assert load.load_sae(folder).cfg == sae.cfg  # our own loader: typed config back
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae_lens = pytest.importorskip("sae_lens")
    theirs = sae_lens.SAE.load_from_disk(str(folder))
    assert type(theirs).__name__ == {"jumprelu": "JumpReLUSAE", "relu": "StandardSAE"}[sae.cfg.architecture]
    x = 3.0 * torch.randn(64, sae.cfg.d_in, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        z, ours = theirs.encode(x), sae.encode(x)
        torch.testing.assert_close(ours, z, atol=1e-5, rtol=1e-5)
        assert torch.equal(ours != 0, z != 0) and (z > 0).any() and (z == 0).any()
        torch.testing.assert_close(sae.decode(z), theirs.decode(z), atol=1e-5, rtol=1e-5)
