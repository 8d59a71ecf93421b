"""sae_io.load_sae: folders written by the real sae_lens and eai-sparsify load and encode as those
packages encode; a Gemma Scope params.npz encodes by the JumpReLU formula; bad input is one line."""

import json
import types
import warnings

import numpy as np
import pytest
import torch

from shared import export, sae_io, sae_releases

D_IN, D_SAE, K = 16, 64, 4


def _x(n=48, seed=2):
    return 2.0 * torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


def _randomize(module, seed=0):
    """Every floating parameter non-trivial, so a load that drops or transposes one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name == "threshold":
                p.copy_(0.5 * torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def sl():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("sae_lens")


def _assert_same(ours, theirs_encode, theirs_decode=None, x=None):
    x = _x() if x is None else x
    with torch.no_grad():
        z = theirs_encode(x)
        torch.testing.assert_close(ours.encode(x), z, atol=1e-6, rtol=1e-5)
        assert (z > 0).any() and (z == 0).any()  # the test exercises both sides of the activation
        if theirs_decode is not None:
            torch.testing.assert_close(ours.decode(z), theirs_decode(z), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- SAELens folders

@pytest.mark.parametrize("arch", ["standard", "jumprelu", "topk", "topk_rescaled"])
def test_saelens_folders_encode_as_sae_lens(arch, sl, tmp_path):
    if arch == "standard":
        theirs = sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE))
    elif arch == "jumprelu":
        theirs = sl.JumpReLUSAE(sl.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE))
    else:
        theirs = sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K,
                                             rescale_acts_by_decoder_norm=arch == "topk_rescaled"))
    _randomize(theirs)
    theirs.save_model(tmp_path)
    ours = sae_io.load_sae(tmp_path, d_in=D_IN)
    assert ours.cfg.architecture == {"standard": "relu"}.get(arch, arch.removesuffix("_rescaled"))
    _assert_same(ours, theirs.encode, theirs.decode)
    if arch != "topk_rescaled":  # the decoder directions themselves come over unchanged
        assert torch.equal(ours.W_dec, theirs.W_dec) and torch.equal(ours.W_enc, theirs.W_enc)
    assert export.load_sae(tmp_path).cfg.architecture == ours.cfg.architecture  # the one loader


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
def test_batchtopk_loads_as_the_jumprelu_sae_lens_runs_it(arch, sl, tmp_path):
    """SAELens saves a trained BatchTopK / Matryoshka SAE for inference as JumpReLU with its one global
    threshold; its training save (topk_threshold, decoder norm not yet folded) loads to the same SAE."""
    if arch == "batchtopk":
        theirs = sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    else:
        theirs = sl.MatryoshkaBatchTopKTrainingSAE(sl.MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=D_IN, d_sae=D_SAE, k=K, matryoshka_widths=[16, D_SAE]))
    _randomize(theirs)
    theirs.topk_threshold = torch.tensor(0.8)
    theirs.save_model(tmp_path / "train")
    theirs.save_inference_model(tmp_path / "inference")
    assert json.loads((tmp_path / "train" / "cfg.json").read_text())["architecture"] == \
        {"batchtopk": "batchtopk", "matryoshka": "matryoshka_batchtopk"}[arch]
    inference = sl.SAE.load_from_disk(str(tmp_path / "inference"))
    assert type(inference).__name__ == "JumpReLUSAE"
    for folder in ("train", "inference"):
        ours = sae_io.load_sae(tmp_path / folder)
        assert ours.cfg.architecture == "jumprelu"
        _assert_same(ours, inference.encode, inference.decode)


# ---------------------------------------------------------------- sparsify, Gemma Scope

def test_sparsify_folder_encodes_as_sparsify(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparsify = pytest.importorskip("sparsify")
    theirs = sparsify.SparseCoder(D_IN, sparsify.SparseCoderConfig(num_latents=D_SAE, k=K))
    _randomize(theirs)
    theirs.save_to_disk(tmp_path / "layers.3")
    ours = sae_io.load_sae(tmp_path, subfolder="layers.3", d_in=D_IN)
    assert ours.cfg.architecture == "topk" and ours.cfg.k == K and ours.cfg.apply_b_dec_to_input

    def encode(x):
        top_acts, top_idx, _ = theirs.encode(x)
        return torch.zeros(x.shape[0], D_SAE).scatter(1, top_idx, top_acts)

    def decode(z):
        vals, idx = z.topk(K, dim=1)
        return theirs.decode(vals, idx)

    _assert_same(ours, encode, decode)
    assert torch.equal(ours.W_dec, theirs.W_dec)  # [num_latents, d_in] already


def _gemma_scope_folder(root, layer=3, lowercase=False):
    g = np.random.default_rng(0)
    params = {"W_enc": g.normal(size=(D_IN, D_SAE)), "W_dec": g.normal(size=(D_SAE, D_IN)),
              "b_enc": g.normal(size=D_SAE) * 0.2, "b_dec": g.normal(size=D_IN),
              "threshold": g.uniform(0, 1.5, size=D_SAE)}
    if lowercase:
        params = {k.replace("W_", "w_"): v for k, v in params.items()}
    folder = root / f"layer_{layer}" / "width_16k" / "average_l0_5"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{k: v.astype(np.float32) for k, v in params.items()})
    return folder, {k.replace("w_", "W_"): torch.from_numpy(v.astype(np.float32)) for k, v in params.items()}


@pytest.mark.parametrize("lowercase", [False, True])
def test_gemma_scope_params_npz_encodes_by_the_jumprelu_formula(lowercase, tmp_path):
    folder, p = _gemma_scope_folder(tmp_path, lowercase=lowercase)
    ours = sae_io.load_sae(tmp_path, subfolder="layer_3/width_16k/average_l0_5", d_in=D_IN)
    assert ours.cfg.architecture == "jumprelu" and not ours.cfg.apply_b_dec_to_input

    def encode(x):  # Gemma Scope: no b_dec subtracted; relu(pre) where pre clears the threshold
        pre = x @ p["W_enc"] + p["b_enc"]
        return torch.relu(pre) * (pre > p["threshold"])

    _assert_same(ours, encode, lambda z: z @ p["W_dec"] + p["b_dec"])
    # a loaded JumpReLU SAE exports to SAELens and comes back the same
    info = export.ExportInfo(model_name="google/gemma-2-2b")
    again = sae_io.load_sae(export.export_saelens(ours, tmp_path / "export", info, layer=3))
    assert again.cfg.architecture == "jumprelu" and torch.equal(again.threshold, ours.threshold)
    _assert_same(again, encode)


# ---------------------------------------------------------------- releases

def test_builtin_release_table_matches_sae_lens_yaml(sl, monkeypatch):
    """The fallback table holds what SAELens' own registry says for those releases."""
    full = sae_io.releases()
    assert len(full) > 50  # read from the installed sae_lens
    for name, entry in sae_io.BUILTIN_RELEASES.items():
        theirs = full[name]
        assert theirs["repo_id"] == entry["repo_id"] and theirs["conversion"] == entry["conversion"]
        assert all(theirs["saes"][sid] == path for sid, path in entry["saes"].items())
    assert sae_io.resolve_release("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical") == \
        ("google/gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82", "gemma_2")
    assert sae_io.resolve_release("me/my-saes", "blocks.3.hook_resid_post") == \
        ("me/my-saes", "blocks.3.hook_resid_post", None)  # not a release: a Hub repo, as in SAELens
    monkeypatch.setattr(sae_releases.importlib.util, "find_spec", lambda name: None)  # sae_lens absent
    assert sae_io.releases.__wrapped__() is sae_io.BUILTIN_RELEASES


def test_release_loads_through_the_hub_path(tmp_path, monkeypatch):
    """release + sae_id -> repo + path -> the download (stood in for by a local snapshot)."""
    _gemma_scope_folder(tmp_path, layer=12)
    seen = {}

    def download(repo_id, subfolder, token):
        seen.update(repo_id=repo_id, subfolder=subfolder)
        return tmp_path / "layer_12" / "width_16k" / "average_l0_5"

    monkeypatch.setattr(sae_io, "_download", download)
    sae = sae_io.load_sae(release="gemma-scope-2b-pt-res-canonical", sae_id="layer_12/width_16k/canonical")
    assert seen == {"repo_id": "google/gemma-scope-2b-pt-res", "subfolder": "layer_12/width_16k/average_l0_82"}
    assert sae.cfg.architecture == "jumprelu"


def test_hub_failure_is_one_line(tmp_path, monkeypatch, hub_online):
    import huggingface_hub.constants

    from fake_hub import FakeHub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with FakeHub("401") as server:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        with pytest.raises(OSError, match=r"could not download the SAE someone/saes/layers\.3/") as e:
            sae_io.load_sae("someone/saes", subfolder="layers.3", token="hf_fakeNeverPrinted")
    assert server.requests and "\n" not in str(e.value) and "hf_fake" not in str(e.value)


# ---------------------------------------------------------------- one-line errors

def _one_line(exc_type, match, fn, *a, **kw):
    with pytest.raises(exc_type, match=match) as e:
        fn(*a, **kw)
    assert "\n" not in str(e.value)


def test_errors_are_one_line(sl, tmp_path):
    theirs = sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE))
    theirs.save_model(tmp_path / "ok")
    _one_line(ValueError, "expects d_in=16 .* d_in=32", sae_io.load_sae, tmp_path / "ok", d_in=32)
    _one_line(FileNotFoundError, "no SAE folder", sae_io.load_sae, tmp_path / "nowhere")
    (tmp_path / "ok" / "sae_weights.safetensors").unlink()
    _one_line(FileNotFoundError, "lacks sae_weights.safetensors", sae_io.load_sae, tmp_path / "ok")
    (tmp_path / "empty").mkdir()
    _one_line(FileNotFoundError, "lacks cfg.json", sae_io.load_sae, tmp_path / "empty")
    gated = sl.GatedSAE(sl.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE))
    gated.save_model(tmp_path / "gated")
    _one_line(ValueError, "architecture 'gated' is not supported", sae_io.load_sae, tmp_path / "gated")
    _one_line(ValueError, r"release='gemma-scope-2b-pt-res-canonicl' .*close matches: \['gemma-scope-2b-pt-res-canonical'",
              sae_io.load_sae, release="gemma-scope-2b-pt-res-canonicl", sae_id="layer_12/width_16k/canonical")
    _one_line(ValueError, r"sae_id='layer_12/width_16k/canon' .*'layer_12/width_16k/canonical'",
              sae_io.load_sae, release="gemma-scope-2b-pt-res-canonical", sae_id="layer_12/width_16k/canon")
    _one_line(ValueError, "give both release= and sae_id=", sae_io.load_sae, release="gpt2-small-res-jb")


def test_sparsify_transcoder_and_groupmax_refused(tmp_path):
    folder = tmp_path / "layers.0"
    folder.mkdir()
    (folder / "sae.safetensors").write_bytes(b"")
    for cfg, match in (({"activation": "groupmax"}, "activation='groupmax'"), ({"transcode": True}, "transcoder")):
        (folder / "cfg.json").write_text(json.dumps({"d_in": D_IN, "k": K, **cfg}))
        _one_line(ValueError, match, sae_io.load_sae, folder)


def test_trainer_refuses_inference_only_architectures():
    """An architecture marked trainable = False (loads, encodes, has no training terms) is refused."""
    from shared import sae as S, train
    from shared.sae_relu import ReLUConfig, ReLUSAE

    S.register("test-inference-only", ReLUConfig)(type("InferenceOnly", (ReLUSAE,), {"trainable": False}))
    try:
        sae_cfg = ReLUConfig(d_sae=D_SAE, architecture="test-inference-only")
        cfg = types.SimpleNamespace(sae=sae_cfg, variants=None, model_id="tiny:llama", seed=0)
        _one_line(NotImplementedError, "inference only", train._build_saes, cfg, D_IN, train.sae_plan(cfg, [0]), "cpu")
    finally:
        S.ARCHITECTURES.pop("test-inference-only")
    assert S.ARCHITECTURES["jumprelu"].model.trainable and S.ARCHITECTURES["relu"].model.trainable


def test_open_sae_reads_a_tiny_trained_export(tmp_path, tiny_trained_model):
    from shared import models, train

    model, tok = tiny_trained_model("gpt2")
    folder = train.train_tiny_sae(model, tok, "tiny-trained:gpt2", 1, "synthetic", tmp_path, total_tokens=2000)
    assert folder == tmp_path / "blocks.1.hook_resid_post"
    sae, where = sae_io.open_sae(str(folder), "", d_in=models.d_model(model))
    assert where == str(folder) and sae.cfg.d_sae == 4 * models.d_model(model) and sae.cfg.k == 8
    same, _ = sae_io.open_sae(str(tmp_path), "blocks.1.hook_resid_post")  # the folder + SAE_ID as its subfolder
    assert torch.equal(same.W_dec, sae.W_dec)


@pytest.mark.parametrize("sae, sae_id, words", [
    ("", "", "must name an SAE"), ("no such sae", "", "neither a SAELens release"),
    ("gemma-scope-2b-pt-res-canonical", "layer_99/width_16k/canonical", "is not in release"),
    ("gemma-scope-2b-pt-res-canonical", 3, "must be a string"),
])
def test_check_source_is_one_line(sae, sae_id, words):
    with pytest.raises(ValueError, match=words) as e:
        sae_io.check_source(sae, sae_id)
    assert "\n" not in str(e.value)
    assert sae_io.check_source(sae_io.TRAIN_TINY) == sae_io.TRAIN_TINY
    assert sae_io.check_source("someone/my-sae", "blocks.3.hook_resid_post") == "someone/my-sae"
    with pytest.raises(ValueError, match="train it first"):
        sae_io.open_sae(sae_io.TRAIN_TINY)
