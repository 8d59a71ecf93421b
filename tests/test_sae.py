"""Unit tests of shared/sae.py, sae_topk.py and sae_kernels.py: recovery of a planted dictionary, AuxK, geometric median,
unit-norm decoder, sparse kernels == dense autograd, normalisation folding, clear errors."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.saes import architectures, base, registry
from shared.saes.kernels import topk_indices
from shared.saes.topk import TopKConfig
from shared.training.step import sae_step


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls: threads only add overhead (and the CI box has 2 shared cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def planted(n_atoms=128, d_in=32, k=4, seed=0):
    """Unit-norm dictionary and a sampler of sparse non-negative combinations of k atoms."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d_in, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)

    def sample(n):
        idx = torch.rand(n, n_atoms, generator=g).topk(k, dim=1).indices
        coef = torch.rand(n, k, generator=g) * 1.5 + 0.5
        z = torch.zeros(n, n_atoms).scatter(1, idx, coef)
        return z @ atoms

    return atoms, sample


def train(sae, sample, steps, batch=256, lr=3e-3):
    """Train with the trainer's own step (AuxK on the SAE's dead tracking); last step's metrics."""
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    for _ in range(steps):
        metrics = sae_step(sae, opt, sample(batch))
    return metrics


@pytest.mark.slow
def test_planted_dictionary_is_recovered():
    torch.manual_seed(0)
    atoms, sample = planted()
    cfg = TopKConfig(d_in=32, d_sae=256, k=4, dead_tokens_threshold=20_000, seed=1)
    sae = architectures.build_sae(cfg)
    sae.init_b_dec_geometric_median(sample(2048))
    metrics = train(sae, sample, steps=2500)
    cos = atoms @ sae.W_dec.detach().T                   # [atoms, latents], rows unit norm
    recovered = (cos.max(dim=1).values > 0.9).float().mean().item()
    assert recovered >= 0.8, f"only {recovered:.0%} of atoms recovered"
    assert metrics["fvu"].item() < 0.3
    assert abs(metrics["l0"].item() - 4) < 0.5


def _killed_sae(n_killed=16, seed=3):
    """SAE whose last n_killed latents can never reach the top-k (zero encoder, tiny bias)."""
    cfg = TopKConfig(d_in=32, d_sae=64, k=4, k_aux=16, dead_tokens_threshold=1024, seed=seed)
    sae = architectures.build_sae(cfg)
    with torch.no_grad():
        sae.W_enc[:, -n_killed:] = 0.0
        sae.b_enc[-n_killed:] = 1e-3
    return sae, n_killed


@pytest.mark.parametrize("aux_coef", [0.0, 1 / 32])
def test_auxk_revives_dead_latents(aux_coef):
    torch.manual_seed(0)
    _, sample = planted(n_atoms=96)
    sae, n_killed = _killed_sae()
    sae.cfg.aux_coef = aux_coef
    train(sae, sample, steps=600, lr=3e-3)
    alive_killed = (~sae.dead_mask()[-n_killed:]).float().mean().item()
    if aux_coef == 0:
        assert alive_killed == 0.0, "without AuxK the killed latents must stay dead"
        assert torch.all(sae.W_enc[:, -n_killed:] == 0)
    else:
        assert alive_killed >= 0.5, f"AuxK revived only {alive_killed:.0%} of the dead latents"


def test_aux_loss_zero_without_dead_and_finite_with_zero_residual():
    sae = architectures.build_sae(TopKConfig(d_in=8, d_sae=16, k=16))
    x = torch.randn(32, 8)
    out = sae(x, dead_mask=torch.zeros(16, dtype=torch.bool))
    assert out.aux_loss.item() == 0.0
    out = sae(torch.zeros(4, 8), dead_mask=torch.ones(16, dtype=torch.bool))
    assert torch.isfinite(out.loss) and torch.isfinite(out.aux_loss)
    out = sae(torch.zeros(0, 8), dead_mask=torch.ones(16, dtype=torch.bool))  # an empty batch: no error
    assert out.loss.item() == 0.0


def test_geometric_median_matches_brute_force():
    from scipy.optimize import minimize

    g = torch.Generator().manual_seed(0)
    pts = torch.randn(300, 5, generator=g, dtype=torch.float64)
    pts[:20] += 40.0  # outliers pull the mean, not the median
    gm = base.geometric_median(pts, eps=1e-10, max_iter=2000).numpy()

    p = pts.numpy()
    f = lambda y: np.linalg.norm(p - y, axis=1).sum()  # noqa: E731
    best = minimize(f, p.mean(0), method="Nelder-Mead",
                    options=dict(xatol=1e-10, fatol=1e-12, maxiter=40_000, maxfev=40_000))
    assert f(gm) <= best.fun + 1e-6
    assert np.linalg.norm(gm - best.x) < 1e-3
    assert np.linalg.norm(gm - p.mean(0)) > 1.0


def test_init_b_dec_geometric_median():
    sae = architectures.build_sae(TopKConfig(d_in=6, d_sae=12, k=2))
    sample = torch.randn(500, 6) + 3.0
    sae.init_b_dec_geometric_median(sample)
    assert torch.allclose(sae.b_dec.detach(), base.geometric_median(sample), atol=1e-5)


def test_decoder_norms_stay_one():
    torch.manual_seed(0)
    _, sample = planted(d_in=16, n_atoms=40)
    sae = architectures.build_sae(TopKConfig(d_in=16, d_sae=48, k=3))
    train(sae, sample, steps=30, lr=1e-2)
    norms = sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_parallel_grad_removed():
    sae = architectures.build_sae(TopKConfig(d_in=8, d_sae=20, k=3))
    out = sae(torch.randn(64, 8))
    out.loss.backward()
    sae.remove_parallel_decoder_grad()
    dots = (sae.W_dec.grad * sae.W_dec).sum(1)
    assert dots.abs().max() < 1e-6


def test_kernel_choice_sparse_on_cpu_dense_for_half_matmuls_elsewhere():
    """The automatic choice: sparse kernels on CPU (any dtype) and for fp32 matmuls off the CPU;
    the dense tensor-core path where the encoder matmul runs in bf16 off the CPU (measured faster
    on an H200: BENCHMARKS.md); an explicit sparse_kernels wins. ("meta" stands in for a GPU here.)"""
    fp32 = architectures.build_sae(TopKConfig(d_in=8, d_sae=32, k=4))
    bf16 = architectures.build_sae(TopKConfig(d_in=8, d_sae=32, k=4, dtype="bfloat16"))
    on_cpu, elsewhere = torch.zeros(2, 8), torch.empty(2, 8, device="meta")
    assert fp32.use_sparse_kernels(on_cpu) and bf16.use_sparse_kernels(on_cpu)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fp32.use_sparse_kernels(on_cpu)
    assert fp32.use_sparse_kernels(elsewhere) and not bf16.use_sparse_kernels(elsewhere)
    bf16.sparse_kernels = True
    assert bf16.use_sparse_kernels(elsewhere)
    fp32.sparse_kernels = False
    assert not fp32.use_sparse_kernels(on_cpu)


@pytest.mark.parametrize("normalize", ["none", "expected_average_only_in"])
@pytest.mark.parametrize("x_grad", [False, True])
@pytest.mark.parametrize("aux_dense_ratio", [6.0, 0.0])  # AuxK as dense dead-column matmuls / as sparse slots
@pytest.mark.parametrize("dead_every", [3, 20])  # 32 dead (top k_aux=7 of them) / 5 dead (all of them)
def test_sparse_kernels_match_dense_autograd(normalize, x_grad, aux_dense_ratio, dead_every):
    torch.manual_seed(0)
    cfg = TopKConfig(d_in=16, d_sae=96, k=5, k_aux=7, normalize_activations=normalize,
                      dtype="float64", seed=2)
    x = torch.randn(40, 16, dtype=torch.float64) * 3 + 1
    dead = torch.zeros(96, dtype=torch.bool)
    dead[::dead_every] = True
    grads = []
    for sparse in (True, False):
        sae = architectures.build_sae(cfg)
        sae.estimate_norm_scale(x)
        torch.manual_seed(1)
        with torch.no_grad():
            sae.b_dec.normal_()
            sae.b_enc.normal_(std=0.1)
        sae.sparse_kernels = sparse
        sae.aux_dense_ratio = aux_dense_ratio
        xi = x.clone().requires_grad_(x_grad)
        out = sae(xi, dead_mask=dead)
        assert out.aux_loss.item() > 0
        out.loss.backward()
        grads.append([out.loss.detach(), out.x_hat.detach()] +
                     [p.grad for p in (sae.W_enc_T, sae.b_enc, sae.W_dec, sae.b_dec)] +
                     ([xi.grad] if x_grad else []))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10), (a - b).abs().max()


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("dead_shift", [0.0, -6.0])  # -6: few dead pre-activations > 0, AuxK skips its top-k
def test_loss_and_gradients_match_the_formula_written_from_scratch(sparse, dead_shift):
    """loss = ||x - x_hat||^2 / sum (x - mean x)^2 + aux_coef ||e_hat - e||^2 / sum (e - mean e)^2 with
    e = x - x_hat a target (no gradient) and e_hat the decode (no b_dec) of each token's top-k_aux
    dead latents: the SAE's losses and gradients equal this plain dense autograd version."""
    torch.manual_seed(0)
    cfg = TopKConfig(d_in=16, d_sae=96, k=5, k_aux=7, dtype="float64", seed=3)
    x = torch.randn(40, 16, dtype=torch.float64) * 3 + 1
    dead = torch.zeros(96, dtype=torch.bool)
    dead[::3] = True
    sae = architectures.build_sae(cfg)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
        sae.b_enc[dead] += dead_shift
    sae.sparse_kernels = sparse
    if dead_shift:
        pre_dead = sae.encode_pre(x).detach()[:, dead]
        assert 0 < (pre_dead > 0).sum(1).max() <= cfg.k_aux < dead.sum()  # the shortcut's case, not a trivial one
        assert sae._few_positive(pre_dead) == sparse
    out = sae(x, dead_mask=dead)
    out.loss.backward()

    W_enc, b_enc, W_dec, b_dec = (p.detach().clone().requires_grad_()
                                  for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    pre = (x - b_dec) @ W_enc + b_enc
    top = pre.topk(cfg.k, dim=1)
    x_hat = torch.zeros_like(pre).scatter(1, top.indices, top.values.relu()) @ W_dec + b_dec
    fvu = ((x_hat - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    top_dead = pre[:, dead].topk(cfg.k_aux, dim=1)
    e_hat = torch.zeros(40, int(dead.sum()), dtype=x.dtype).scatter(1, top_dead.indices, top_dead.values.relu()) \
        @ W_dec[dead]
    e = (x - x_hat).detach()
    aux = cfg.aux_coef * ((e_hat - e) ** 2).sum() / ((e - e.mean(0)) ** 2).sum()
    (fvu + aux).backward()

    assert torch.allclose(out.fvu, fvu) and torch.allclose(out.aux_loss, aux) and out.aux_loss > 0
    assert torch.allclose(out.mse_loss, ((x_hat - x) ** 2).sum(1).mean())
    for mine, ref in ((sae.W_enc_T.grad.t(), W_enc.grad), (sae.b_enc.grad, b_enc.grad),
                      (sae.W_dec.grad, W_dec.grad), (sae.b_dec.grad, b_dec.grad)):
        assert torch.allclose(mine, ref, rtol=1e-9, atol=1e-10), (mine - ref).abs().max()


def test_encode_decode_and_forward_agree():
    sae = architectures.build_sae(TopKConfig(d_in=12, d_sae=40, k=6))
    x = torch.randn(3, 7, 12)
    z = sae.encode(x)
    assert z.shape == (3, 7, 40)
    assert ((z > 0).sum(-1) <= 6).all() and (z >= 0).all()
    out = sae(x.reshape(-1, 12))
    assert torch.allclose(sae.decode(z).reshape(-1, 12), out.x_hat, atol=1e-5)
    vals, idx = sae.encode_sparse(x.reshape(-1, 12))
    dense = torch.zeros(21, 40).scatter(1, idx, vals)
    assert torch.allclose(dense, z.reshape(-1, 40))


def test_fold_normalization_keeps_encodings():
    torch.manual_seed(0)
    cfg = TopKConfig(d_in=10, d_sae=30, k=4, normalize_activations="expected_average_only_in")
    sae = architectures.build_sae(cfg)
    x = torch.randn(50, 10) * 25
    scale = sae.estimate_norm_scale(x)
    assert scale == pytest.approx(math.sqrt(10) / x.norm(dim=1).mean().item(), rel=1e-5)
    with torch.no_grad():
        sae.b_dec.normal_()
    z0, r0 = sae.encode(x), sae.decode(sae.encode(x))
    sae.fold_normalization()
    assert sae.cfg.normalize_activations == "none" and float(sae.norm_scale) == 1.0
    assert torch.allclose(sae.encode(x), z0, atol=1e-4)
    assert torch.allclose(sae.decode(sae.encode(x)), r0, atol=1e-3)


def test_dead_tracking_counts_tokens_and_is_saved():
    sae = architectures.build_sae(TopKConfig(d_in=4, d_sae=8, k=2, dead_tokens_threshold=100))
    idx = torch.tensor([[0, 1], [1, 2]])
    dead = sae.update_dead_tracking(idx, 60)
    assert not dead.any()
    dead = sae.update_dead_tracking(idx[:1], 60, latent_vals=torch.tensor([[1.0, 0.0]]))
    assert dead.tolist() == [False, False, False, True, True, True, True, True]
    assert sae.tokens_since_fired.tolist() == [0, 60, 60, 120, 120, 120, 120, 120]
    assert "tokens_since_fired" in sae.state_dict()


def test_state_dict_names_and_shapes_match_saelens():
    sae = architectures.build_sae(TopKConfig(d_in=6, d_sae=24, k=3))
    state = sae.state_dict()
    shapes = {n: tuple(t.shape) for n, t in state.items() if n not in ("tokens_since_fired", "norm_scale")}
    assert shapes == {"W_enc": (6, 24), "b_enc": (24,), "W_dec": (24, 6), "b_dec": (6,)}
    assert torch.equal(state["W_enc"], sae.W_enc) and sae.W_enc_T.is_contiguous()
    # the encoder is held latent-major; loading SAELens-named weights puts them back in place
    other = architectures.build_sae(TopKConfig(d_in=6, d_sae=24, k=3, seed=1))
    other.load_state_dict({k: v.contiguous() for k, v in state.items()})
    x = torch.randn(5, 6)
    assert torch.equal(other.encode(x), sae.encode(x))
    with torch.no_grad():  # W_enc is a view: in-place edits reach the parameter
        other.W_enc[:, 0] = 0.0
    assert torch.all(other.W_enc_T[0] == 0)


def test_topk_indices_two_stage_is_exact():
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(64, 4096, generator=g)
    pre[:8] = torch.randint(-3, 3, (8, 4096), generator=g).float()  # heavy ties
    pre[8, :] = 0.0
    for k in (1, 7, 32):
        idx = topk_indices(pre, k)
        assert idx.shape == (64, k) and all(len(set(r)) == k for r in idx.tolist())
        ours = pre.gather(1, idx).sort(1).values
        ref = pre.topk(k, dim=1).values.sort(1).values
        assert torch.equal(ours, ref)  # the same values (the same set when there are no ties)
    no_ties = pre[16:]
    assert torch.equal(topk_indices(no_ties, 32).sort(1).values, no_ties.topk(32, dim=1).indices.sort(1).values)
    narrow = torch.randn(5, 96)  # too few blocks for the two stages: falls back to torch.topk
    assert torch.equal(topk_indices(narrow, 32).sort(1).values, narrow.topk(32, dim=1).indices.sort(1).values)


def test_nan_input_is_a_clear_error():
    sae = architectures.build_sae(TopKConfig(d_in=4, d_sae=8, k=2))
    x = torch.randn(5, 4)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sae(x)
    with pytest.raises(ValueError, match="NaN"):
        sae.encode(x)


def test_bad_config_and_shape_errors():
    with pytest.raises(ValueError, match="k=9"):
        TopKConfig(d_in=4, d_sae=8, k=9)
    with pytest.raises(ValueError, match="Unknown SAE architecture"):
        architectures.build_sae(TopKConfig(d_in=4, d_sae=8, k=2, architecture="nope"))
    with pytest.raises(ValueError, match="normalize_activations"):
        TopKConfig(d_in=4, d_sae=8, k=2, normalize_activations="layer_norm")
    sae = architectures.build_sae(TopKConfig(d_in=4, d_sae=8, k=2))
    with pytest.raises(ValueError, match="d_in=4"):
        sae(torch.randn(3, 5))


def test_training_is_bitwise_deterministic_on_cpu():
    """Exact resume relies on it: the same steps give the same weights, bit for bit."""
    _, sample = planted(d_in=16, n_atoms=40)
    batches = [sample(128) for _ in range(5)]
    weights = []
    for _ in range(2):
        sae = architectures.build_sae(TopKConfig(d_in=16, d_sae=64, k=4, k_aux=8, dead_tokens_threshold=128))
        it = iter(batches)
        train(sae, lambda n: next(it), steps=5)
        weights.append([p.detach().clone() for p in sae.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_a_sibling_architecture_is_one_short_class():
    """The base's extension points carry a dense architecture (ReLU + L1, written here in a few
    lines): its config from a dict that also holds other architectures' knobs, the loss as fvu plus
    its named term, the trainer's step, dead tracking and sparse encoding of dense latents."""
    from dataclasses import dataclass

    import torch.nn.functional as F

    @dataclass
    class ReLUConfig(base.SAEConfig):
        architecture: str = "test-relu"
        l1_coef: float = 1e-3

    class ReLUSAE(base.SparseAutoencoder):
        def activation(self, pre):
            return base.Latents(F.relu(pre))

        def extra_losses(self, xn, rec, err):
            return {"l1": self.cfg.l1_coef * rec.latents.vals.abs().sum(1).mean()}

    registry.register("test-relu", ReLUConfig)(ReLUSAE)
    try:
        cfg = architectures.config_from_dict({"architecture": "test-relu", "d_in": 8, "d_sae": 32, "l1_coef": 0.01,
                                  "k": 5, "dead_tokens_threshold": 100})
        assert isinstance(cfg, ReLUConfig) and not hasattr(cfg, "k")
        sae = architectures.build_sae(cfg)
        with torch.no_grad():
            sae.b_enc[:4] = -1e3  # these four can never fire
        x = torch.randn(64, 8)
        out = sae(x)
        assert out.latent_idx is None and out.latent_vals.shape == (64, 32)
        assert out.loss.item() == pytest.approx((out.fvu + out.losses["l1"]).item()) and out.aux_loss.item() == 0
        metrics = train(sae, lambda n: x, steps=3, lr=1e-3)
        assert torch.isfinite(metrics["loss"])
        assert sae.dead_mask()[:4].all() and not sae.dead_mask()[4:].any()
        vals, idx = sae.encode_sparse(x)
        assert torch.allclose(torch.zeros(64, 32).scatter(1, idx, vals), sae.encode(x))
    finally:
        registry.ARCHITECTURES.pop("test-relu")


@pytest.mark.parametrize("module", ["topk", "batchtopk", "matryoshka", "jumprelu", "relu"])
def test_each_architecture_module_imports_first(module):
    """`from shared.saes.topk import TopKConfig` in a fresh interpreter works (no circular import: the
    registry imports no architecture) and `architectures` has every built-in one after it."""
    import subprocess
    import sys

    code = (f"import shared.saes.{module}; from shared.saes import architectures; "
            "print(sorted(architectures.registered()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-800:]
    assert "'topk'" in out.stdout and "'matryoshka_batchtopk'" in out.stdout and "'jumprelu'" in out.stdout


def test_every_config_field_says_what_it_is_and_fixed_choices_are_literals():
    """Each field of SAEConfig, of every architecture's config and of CrosscoderConfig has a docstring under it
    (sparsify's config.py form), and the fixed choices are Literal types: each architecture's `architecture`
    is its registered name alone, normalize_activations / b_dec_init / dtype the values __post_init__ accepts."""
    import ast
    import inspect
    import typing

    from shared.saes import crosscoder

    configs = {arch.config for arch in registry.ARCHITECTURES.values()} | {base.SAEConfig, crosscoder.CrosscoderConfig}
    for cls in configs:
        source = Path(inspect.getfile(cls)).read_text(encoding="utf-8")
        (node,) = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
        for i, stmt in enumerate(node.body):
            if isinstance(stmt, ast.AnnAssign):
                after = node.body[i + 1] if i + 1 < len(node.body) else None
                assert (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                        and isinstance(after.value.value, str)), f"{cls.__name__}.{stmt.target.id}: add a docstring"
    for name, arch in registry.ARCHITECTURES.items():
        assert typing.get_args(typing.get_type_hints(arch.config)["architecture"]) == (name,)
        assert arch.config(d_in=8, d_sae=64, **({"k": 4} if "k" in arch.config.__dataclass_fields__ else {})
                           ).architecture == name
    hints = typing.get_type_hints(base.SAEConfig)
    assert typing.get_args(hints["normalize_activations"]) == base.NORMALIZATIONS == ("none", "expected_average_only_in")
    assert typing.get_args(hints["b_dec_init"]) == base.B_DEC_INITS == ("geometric_median", "mean", "zeros")
    assert typing.get_args(hints["dtype"]) == tuple(base.DTYPES) and base.DTYPES["bfloat16"] is torch.bfloat16
    assert typing.get_args(typing.get_type_hints(crosscoder.CrosscoderConfig)["architecture"]) == crosscoder.ARCHITECTURES
    for field, bad in (("normalize_activations", "layer_norm"), ("b_dec_init", "median"), ("dtype", "int8")):
        with pytest.raises(ValueError, match=f"{field}='{bad}': use one of"):
            TopKConfig(d_in=8, d_sae=64, k=4, **{field: bad})
