"""BatchTopK and Matryoshka BatchTopK (sae_batchtopk.py, sae_matryoshka.py): the batch selection, the
threshold's moving average, loss and gradients against the formula written from scratch (SAELens'
rule), a planted dictionary recovered, train.train on a tiny model, and the export sae_lens loads."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from shared.saes import architectures, base, export, load
from shared.saes.batchtopk import BatchTopKConfig
from shared.saes.matryoshka import MatryoshkaConfig
from shared.training.config import TrainConfig
from shared.training.trainer import train as train_run

from tests.test_sae import one_thread, planted, train  # noqa: F401 (one_thread: the autouse fixture)


def _sae(cls=BatchTopKConfig, seed=0, **kw):
    sae = architectures.build_sae(cls(**{"d_in": 16, "d_sae": 64, "k": 3, "seed": seed, **kw}))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn(sae.W_enc.shape, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(sae.cfg.d_sae, generator=g))
        sae.b_dec.copy_(0.1 * torch.randn(sae.cfg.d_in, generator=g))
    return sae


def _x(n=40, seed=2):
    return torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))


def _from_scratch(sae, x):
    """SAELens' BatchTopK training pass written out: relu, top k*N of the flattened batch, dense decode,
    fvu; Matryoshka adds the fvu of each inner prefix's decode."""
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    acts = pre.relu().flatten()
    top = acts.topk(int(sae.cfg.k * x.shape[0]))
    z = torch.zeros_like(acts).scatter(0, top.indices, top.values).reshape(pre.shape)
    var = ((x - x.mean(0)) ** 2).sum()
    loss = ((z @ sae.W_dec + sae.b_dec - x) ** 2).sum() / var
    for w in getattr(sae.cfg, "matryoshka_widths", [sae.cfg.d_sae])[:-1]:
        loss = loss + ((z[:, :w] @ sae.W_dec[:w] + sae.b_dec - x) ** 2).sum() / var
    return loss, z


@pytest.mark.parametrize("cls", [BatchTopKConfig, MatryoshkaConfig])
@pytest.mark.parametrize("sparse", [True, False])
def test_loss_and_gradients_match_the_formula(cls, sparse):
    sae = _sae(cls, matryoshka_widths=[8, 24]) if cls is MatryoshkaConfig else _sae(cls)
    sae.sparse_kernels = sparse
    x = _x()
    out = sae(x)
    params = [sae.W_enc_T, sae.b_enc, sae.W_dec, sae.b_dec]
    ours = torch.autograd.grad(out.loss, params)
    loss, z = _from_scratch(sae, x)
    theirs = torch.autograd.grad(loss, params)
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sae._dense(base.Latents(out.latent_vals, out.latent_idx)), z.detach())
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    if cls is MatryoshkaConfig:
        assert sorted(out.losses) == ["aux", "fvu", "prefix_fvu_24", "prefix_fvu_8"]


def test_batch_keeps_k_times_batch_with_tokens_taking_different_counts():
    sae = _sae(k=3)
    out = sae(_x(n=40))
    per_token = (out.latent_vals > 0).sum(1)
    assert int(per_token.sum()) == 3 * 40 and out.l0.item() == 3.0
    assert per_token.min() < 3 < per_token.max()  # not TopK: the batch shares its budget


def test_threshold_is_the_moving_average_of_the_smallest_kept_activation():
    sae = _sae(topk_threshold_lr=0.1)
    thresholds = [0.0]
    for seed in range(3):
        out = sae(_x(seed=seed))
        smallest = out.latent_vals[out.latent_vals > 0].min().double().item()
        thresholds.append(0.9 * thresholds[-1] + 0.1 * smallest)
        assert sae.threshold.dtype == torch.float64 and (sae.threshold == sae.threshold[0]).all()
        assert sae.threshold[0].item() == pytest.approx(thresholds[-1], rel=1e-12)
    sae.eval()
    before = sae.threshold.clone()
    sae(_x(seed=9))
    assert torch.equal(sae.threshold, before)  # evaluation passes leave it alone
    x = _x(seed=4)  # inference: JumpReLU at the global threshold
    pre = sae.encode_pre(x)
    torch.testing.assert_close(sae.encode(x), pre.relu() * (pre > sae.threshold).float())


class _OtherRanksFireSmaller:
    """A reducer standing in for torchrun's: another rank's batch kept a smaller activation than this one's."""

    world = 2

    def __init__(self, theirs: float):
        self.theirs, self.asked = theirs, []

    def min(self, t):
        self.asked.append(float(t))
        return torch.minimum(t, torch.full_like(t, self.theirs))


def test_threshold_moves_by_the_smallest_kept_activation_over_the_reducers_ranks():
    """The trainer hands the SAE its reducer (as TopK's batch statistics take it): the threshold's
    moving average then takes the smallest kept activation of every rank, not this rank's alone."""
    sae = _sae(topk_threshold_lr=0.5)
    sae.reducer = _OtherRanksFireSmaller(theirs=0.2)
    sae.update_threshold(torch.tensor([[0.8, 0.0], [0.9, 1.5]]))  # this rank's smallest kept activation: 0.8
    assert sae.reducer.asked == [pytest.approx(0.8)]
    assert (sae.threshold == 0.5 * 0.2).all()  # from 0, half way to the smallest over both ranks


def test_matryoshka_widths():
    assert MatryoshkaConfig(d_sae=64, k=2).matryoshka_widths == [8, 16, 32, 64]
    assert MatryoshkaConfig(d_sae=64, k=2, matryoshka_widths=[16]).matryoshka_widths == [16, 64]
    for bad in ([32, 16], [0, 64], []):
        with pytest.raises(ValueError, match="matryoshka_widths"):
            MatryoshkaConfig(d_sae=64, k=2, matryoshka_widths=bad)
    with pytest.raises(ValueError, match="topk_threshold_lr"):
        BatchTopKConfig(d_sae=64, k=2, topk_threshold_lr=0)


@pytest.mark.parametrize("cls", [BatchTopKConfig, MatryoshkaConfig])
def test_planted_dictionary_is_recovered(cls):
    torch.manual_seed(0)
    atoms, sample = planted()
    # Matryoshka: the first prefix is as wide as the dictionary (128 atoms of equal frequency), so it can hold it all
    widths = {"matryoshka_widths": [128, 192]} if cls is MatryoshkaConfig else {}
    sae = architectures.build_sae(cls(d_in=32, d_sae=256, k=4, dead_tokens_threshold=20_000, seed=1, topk_threshold_lr=0.05,
                          **widths))
    sae.init_b_dec_geometric_median(sample(2048))
    metrics = train(sae, sample, steps=2500)
    cos = atoms @ sae.W_dec.detach().T
    recovered = (cos.max(dim=1).values > 0.9).float().mean().item()
    # Matryoshka pays for its prefix terms with slower recovery at this step count (76% at 2500 steps)
    assert recovered >= (0.7 if cls is MatryoshkaConfig else 0.8), f"only {recovered:.0%} of atoms recovered"
    assert metrics["fvu"].item() < 0.3 and metrics["l0"].item() == 4.0
    sae.eval()  # inference with the learned threshold keeps about k latents a token
    x = sample(2048)
    assert 2.5 < (sae.encode(x) > 0).sum(1).float().mean().item() < 6
    if cls is MatryoshkaConfig:  # each prefix reconstructs, better the wider it is
        rec = sae.reconstruct(x)
        fvus = [sae._reconstruction_error(sae.prefix_reconstruction(rec, w), x).fvu.item()
                for w in sae.cfg.matryoshka_widths]
        assert all(a > b for a, b in zip(fvus, fvus[1:])) and fvus[0] < 0.95, fvus


@pytest.mark.parametrize("cls", [BatchTopKConfig, MatryoshkaConfig])
def test_train_run_on_a_tiny_model(cls, tmp_path):
    cfg = TrainConfig(model_id="tiny:gpt2", layers=(1,), sae=cls(d_sae=128, k=8, dead_tokens_threshold=1500),
                      batch_tokens=128, context_len=32, model_batch_size=4, block_batches=2, warmup_steps=2,
                      total_tokens=512, checkpoint_dir=str(tmp_path / "ckpt"))
    result = train_run(cfg, progress=False)
    sae = result.saes[1]
    assert type(sae).__name__ == {BatchTopKConfig: "BatchTopKSAE", MatryoshkaConfig: "MatryoshkaBatchTopKSAE"}[cls]
    assert result.tokens >= 512 and sae.threshold[0] > 0


@pytest.mark.parametrize("cls", [BatchTopKConfig, MatryoshkaConfig])
def test_export_loads_in_sae_lens_and_back_as_jumprelu_encodes(cls, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sl = pytest.importorskip("sae_lens")
    sae = _sae(cls)
    for seed in range(3):
        sae(_x(seed=seed))  # a threshold of its own
    info = export.ExportInfo(model_name="gpt2", context_size=32)
    folder = export.export_saelens(sae, tmp_path / "blocks.1.hook_resid_post", info, layer=1)
    theirs = sl.SAE.load_from_disk(str(folder))
    assert type(theirs).__name__ == "JumpReLUSAE"
    ours = load.load_sae(folder)
    assert ours.cfg.architecture == sae.cfg.architecture and not ours.training
    x = 3 * _x(n=64, seed=5)
    with torch.no_grad():
        z = theirs.encode(x)
        assert (z > 0).any() and (z == 0).any()
        assert torch.equal(ours.encode(x), z)
        torch.testing.assert_close(sae.encode(x), z)
        torch.testing.assert_close(ours.decode(z), theirs.decode(z))
