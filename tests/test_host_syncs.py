"""Host syncs of the SAE step (issue 23: a GPU step is host-bound; every value read back drains the GPU's
queue). Counted with bench/host_syncs.py's dispatch mode on the path a GPU runs (the dense step), and
the sync-free AuxK checked against the host-read one on planted dead sets."""
import sys
from pathlib import Path

import pytest
import torch

from shared.saes.architectures import build_sae
from shared.saes.batchtopk import BatchTopKConfig
from shared.saes.topk import TopKConfig
from shared.training.step import adam, sae_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from host_syncs import OpCounter, count_step  # noqa: E402

D_IN, D_SAE, K, N = 32, 256, 8, 128  # k_aux = d_in // 2 = 16


def _sae(cfg_cls=TopKConfig, sync_free=False, sparse=False, **kw):
    sae = build_sae(cfg_cls(d_in=D_IN, d_sae=D_SAE, k=K, seed=0, dtype="float64", **kw))
    sae.sparse_kernels = sparse  # False: the dense step, what a GPU runs under bf16 autocast; True: a T4's fp32
    sae.sync_free_aux = sync_free
    return sae


def _dead(n_dead: int) -> torch.Tensor:
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=torch.Generator().manual_seed(1))[:n_dead]] = True
    return dead


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("cfg_cls", [TopKConfig, BatchTopKConfig])
@pytest.mark.parametrize("n_dead", [0, 5, 16, 40, 100])  # none; under k_aux; k_aux; the sparse path's dense AuxK; more
def test_sync_free_auxk_is_the_same_auxk(cfg_cls, n_dead, sparse):
    """The masked top-k over all latents gives the AuxK loss and every gradient of the dead-set path
    (the live picks past the dead ones weigh nothing; no dead latent: no AuxK term), up to rounding, on
    the dense path and the sparse kernels."""
    x = torch.randn(N, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    dead = _dead(n_dead)
    outs, grads = [], []
    for sync_free in (False, True):
        sae = _sae(cfg_cls, sync_free, sparse)
        sae.init_b_dec(x)
        out = sae(x, dead_mask=dead)
        out.loss.backward()
        outs.append(out)
        grads.append({name: p.grad.clone() for name, p in sae.named_parameters()})
    ref, free = outs
    assert (ref.aux_loss > 0) == (n_dead > 0)  # a planted dead set gives a real AuxK term to compare
    torch.testing.assert_close(free.aux_loss, ref.aux_loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(free.loss, ref.loss, rtol=1e-12, atol=1e-14)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-10, atol=1e-12, msg=name)


def test_the_trainers_dense_step_syncs_only_for_auxk_and_not_at_all_sync_free():
    """One steady step as the trainer runs it on a GPU (rows checked at capture, check_finite=False): the
    host-read AuxK's nonzero is its one sync; with sync_free_aux none is left. The input check that the
    trainer skips is a sync of its own (so the counter sees what it should)."""
    x = torch.randn(N, D_IN, dtype=torch.float64)
    dead = _dead(40)
    assert count_step(_sae(), x, dead).syncs == ["nonzero"]
    assert count_step(_sae(sync_free=True), x, dead).syncs == []
    assert count_step(_sae(), x, dead, check_finite=True).syncs.count("_local_scalar_dense") == 1
    # the sparse kernels (a T4's fp32 step): the by-latent plan's counts need no host read either
    assert count_step(_sae(sparse=True, sync_free=True), x, dead).syncs == []


def test_the_counter_sees_host_reads():
    """OpCounter flags the reads a GPU waits on: .item(), bool(), a nonzero, bool-mask indexing."""
    t = torch.arange(6.0)
    with OpCounter() as c:
        t.sum().item()
        bool(t.any())
        t.nonzero()
        t[t > 2]
        (t * 2 + 1).topk(2)
    assert len(c.syncs) == 4 and c.ops["topk"] == 1


def test_the_trainer_still_refuses_nonfinite_rows_without_the_step_check():
    """The step no longer checks its rows (a sync a step); the trainer's rows are checked at capture, so a
    NaN input stops a direct sae_step only where the caller asks for the check."""
    sae = _sae()
    opt = adam(sae.parameters(), lr=1e-3, device="cpu")
    x = torch.randn(N, D_IN, dtype=torch.float64)
    x[3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        sae_step(sae, opt, x, 1e-3)
    metrics = sae_step(sae, opt, x, 1e-3, check_finite=False)
    assert not torch.isfinite(metrics["loss"])


@pytest.mark.parametrize("n_dead", [0, 5, 100])
def test_the_crosscoders_sync_free_auxk_is_the_same_auxk(n_dead):
    """The crosscoder's AuxK read the dead count twice a step (any, sum); sync-free it gives the same loss
    and gradients, and its trainer step reads nothing back."""
    from shared.saes.crosscoder import Crosscoder, CrosscoderConfig

    x = torch.randn(N, 2, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    dead = _dead(n_dead)
    outs, grads = [], []
    for sync_free in (False, True):
        xc = Crosscoder(CrosscoderConfig(d_in=D_IN, d_sae=D_SAE, layers=(0, 1), k=K, seed=0)).double()
        xc.sync_free_aux = sync_free
        out = xc(x, dead_mask=dead)
        out.loss.backward()
        outs.append(out)
        grads.append({name: p.grad.clone() for name, p in xc.named_parameters()})
    assert (outs[0].aux_loss > 0) == (n_dead > 0)
    torch.testing.assert_close(outs[1].loss, outs[0].loss, rtol=1e-12, atol=1e-14)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-10, atol=1e-12, msg=name)
    xc.sync_free_aux = True
    assert count_step(xc, x, _dead(40)).syncs == []


def _trainer_syncs(tmp_path, batch_tokens: int, sync_free: bool) -> tuple[int, int]:
    """(host syncs of a whole tiny training run, its SAE steps): 40 forwards of 8 x 64 tokens, logged once."""
    from shared.model.loading import load_model
    from shared.saes.topk import TopKSAE
    from shared.training.config import TrainConfig
    from shared.training.trainer import train

    model, tok = load_model("tiny:llama")
    cfg = TrainConfig(model_id="tiny:llama", layers=(1,), dataset=("synthetic",), context_len=64,
                      sae=TopKConfig(d_sae=256, k=8, dead_tokens_threshold=1024), total_tokens=40 * 8 * 63,
                      batch_tokens=batch_tokens, model_batch_size=8, block_batches=4, warmup_steps=2,
                      checkpoint_every_tokens=10**12, log_every=10**9,
                      checkpoint_dir=str(tmp_path / f"ck{batch_tokens}{sync_free}"))
    old, TopKSAE.sync_free_aux = TopKSAE.sync_free_aux, sync_free
    try:
        with OpCounter() as counter:
            result = train(cfg, model, tok, progress=False)
    finally:
        TopKSAE.sync_free_aux = old
    return len(counter.syncs), result.steps


def test_the_trainers_host_syncs_do_not_grow_with_its_steps(tmp_path):
    """The whole training loop (forwards, blocks, steps, the final log and checkpoint): twice the SAE steps on
    the same forwards add no host sync with sync_free_aux (the loop's syncs are per forward, per log, per
    checkpoint), and exactly one a step (AuxK's dead count) without it."""
    few, steps_few = _trainer_syncs(tmp_path, 504, True)
    many, steps_many = _trainer_syncs(tmp_path, 252, True)
    assert steps_many == 2 * steps_few and many == few
    read_few, _ = _trainer_syncs(tmp_path, 504, False)
    read_many, _ = _trainer_syncs(tmp_path, 252, False)
    assert read_many - read_few == steps_many - steps_few
