"""sae_io.load_sae: folders written by the real sae_lens and eai-sparsify load and encode as those
packages encode; a Gemma Scope params.npz encodes by the JumpReLU formula; bad input is one line."""

import json
import re
import types
import warnings

import numpy as np
import pytest
import torch

from shared.recipes import sae_source
from shared.saes import export, formats, load, releases

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
    ours = load.load_sae(tmp_path, d_in=D_IN)
    assert ours.cfg.architecture == {"standard": "relu"}.get(arch, arch.removesuffix("_rescaled"))
    _assert_same(ours, theirs.encode, theirs.decode)
    if arch != "topk_rescaled":  # the decoder directions themselves come over unchanged
        assert torch.equal(ours.W_dec, theirs.W_dec) and torch.equal(ours.W_enc, theirs.W_enc)


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
        ours = load.load_sae(tmp_path / folder)
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
    ours = load.load_sae(tmp_path, subfolder="layers.3", d_in=D_IN)
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
    ours = load.load_sae(tmp_path, subfolder="layer_3/width_16k/average_l0_5", d_in=D_IN)
    assert ours.cfg.architecture == "jumprelu" and not ours.cfg.apply_b_dec_to_input

    def encode(x):  # Gemma Scope: no b_dec subtracted; relu(pre) where pre clears the threshold
        pre = x @ p["W_enc"] + p["b_enc"]
        return torch.relu(pre) * (pre > p["threshold"])

    _assert_same(ours, encode, lambda z: z @ p["W_dec"] + p["b_dec"])
    # a loaded JumpReLU SAE exports to SAELens and comes back the same
    info = export.ExportInfo(model_name="google/gemma-2-2b")
    again = load.load_sae(export.export_saelens(ours, tmp_path / "export", info, layer=3))
    assert again.cfg.architecture == "jumprelu" and torch.equal(again.threshold, ours.threshold)
    _assert_same(again, encode)


# ---------------------------------------------------------------- releases

def test_builtin_release_table_matches_sae_lens_yaml(sl, monkeypatch):
    """The fallback table holds what SAELens' own registry says for those releases."""
    full = releases.releases()
    assert len(full) > 50  # read from the installed sae_lens
    for name, entry in releases.BUILTIN_RELEASES.items():
        theirs = full[name]
        assert theirs["repo_id"] == entry["repo_id"] and theirs["conversion"] == entry["conversion"]
        assert all(theirs["saes"][sid] == path for sid, path in entry["saes"].items())
    assert releases.resolve_release("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical") == \
        ("google/gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82", "gemma_2")
    assert releases.resolve_release("me/my-saes", "blocks.3.hook_resid_post") == \
        ("me/my-saes", "blocks.3.hook_resid_post", None)  # not a release: a Hub repo, as in SAELens
    monkeypatch.setattr(releases.importlib.util, "find_spec", lambda name: None)  # sae_lens absent
    assert releases.releases.__wrapped__() is releases.BUILTIN_RELEASES


def test_release_loads_through_the_hub_path(tmp_path, monkeypatch):
    """release + sae_id -> repo + path -> the download (stood in for by a local snapshot)."""
    _gemma_scope_folder(tmp_path, layer=12)
    seen = {}

    def download(repo_id, subfolder, token):
        seen.update(repo_id=repo_id, subfolder=subfolder)
        return tmp_path / "layer_12" / "width_16k" / "average_l0_5"

    monkeypatch.setattr(load, "_download", download)
    sae = load.load_sae(release="gemma-scope-2b-pt-res-canonical", sae_id="layer_12/width_16k/canonical")
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
            load.load_sae("someone/saes", subfolder="layers.3", token="hf_fakeNeverPrinted")
    assert server.requests and "\n" not in str(e.value) and "hf_fake" not in str(e.value)


# ---------------------------------------------------------------- one-line errors

def _one_line(exc_type, match, fn, *a, **kw):
    with pytest.raises(exc_type, match=match) as e:
        fn(*a, **kw)
    assert "\n" not in str(e.value)


def test_errors_are_one_line(sl, tmp_path):
    theirs = sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE))
    theirs.save_model(tmp_path / "ok")
    _one_line(ValueError, "expects d_in=16 .* d_in=32", load.load_sae, tmp_path / "ok", d_in=32)
    _one_line(FileNotFoundError, "no SAE folder", load.load_sae, tmp_path / "nowhere")
    (tmp_path / "ok" / "sae_weights.safetensors").unlink()
    _one_line(FileNotFoundError, "lacks sae_weights.safetensors", load.load_sae, tmp_path / "ok")
    (tmp_path / "empty").mkdir()
    _one_line(FileNotFoundError, "lacks cfg.json", load.load_sae, tmp_path / "empty")
    gated = sl.GatedSAE(sl.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE))
    gated.save_model(tmp_path / "gated")
    _one_line(ValueError, "architecture 'gated' is not supported", load.load_sae, tmp_path / "gated")
    _one_line(ValueError, r"release='gemma-scope-2b-pt-res-canonicl' .*close matches: \['gemma-scope-2b-pt-res-canonical'",
              load.load_sae, release="gemma-scope-2b-pt-res-canonicl", sae_id="layer_12/width_16k/canonical")
    _one_line(ValueError, r"sae_id='layer_12/width_16k/canon' .*'layer_12/width_16k/canonical'",
              load.load_sae, release="gemma-scope-2b-pt-res-canonical", sae_id="layer_12/width_16k/canon")
    _one_line(ValueError, "give both release= and sae_id=", load.load_sae, release="gpt2-small-res-jb")


def test_sparsify_transcoder_and_groupmax_refused(tmp_path):
    folder = tmp_path / "layers.0"
    folder.mkdir()
    (folder / "sae.safetensors").write_bytes(b"")
    for cfg, match in (({"activation": "groupmax"}, "activation='groupmax'"), ({"transcode": True}, "transcoder")):
        (folder / "cfg.json").write_text(json.dumps({"d_in": D_IN, "k": K, **cfg}))
        _one_line(ValueError, match, load.load_sae, folder)


def test_trainer_refuses_inference_only_architectures():
    """An architecture marked trainable = False (loads, encodes, has no training terms) is refused."""
    from shared.saes import architectures, registry
    from shared.saes.relu import ReLUConfig, ReLUSAE
    from shared.training import config, trainer

    registry.register("test-inference-only", ReLUConfig)(type("InferenceOnly", (ReLUSAE,), {"trainable": False}))
    try:
        sae_cfg = ReLUConfig(d_sae=D_SAE, architecture="test-inference-only")
        cfg = types.SimpleNamespace(sae=sae_cfg, variants=None, model_id="tiny:llama", seed=0)
        _one_line(NotImplementedError, "inference only", trainer._build_saes, cfg, D_IN, config.sae_plan(cfg, [0]), "cpu")
    finally:
        registry.ARCHITECTURES.pop("test-inference-only")
    assert architectures.registered()["jumprelu"].model.trainable and architectures.registered()["relu"].model.trainable


def test_open_sae_reads_a_tiny_trained_export(tmp_path, tiny_trained_model):
    from shared.model import layout
    from shared.recipes import tiny_sae

    model, tok = tiny_trained_model("gpt2")
    folder = tiny_sae.train_tiny_sae(model, tok, "tiny-trained:gpt2", 1, "synthetic", tmp_path, total_tokens=2000)
    assert folder == tmp_path / "blocks.1.hook_resid_post"
    sae, where = sae_source.open_sae(str(folder), "", d_in=layout.d_model(model))
    assert where == str(folder) and sae.cfg.d_sae == 4 * layout.d_model(model) and sae.cfg.k == 8
    same, _ = sae_source.open_sae(str(tmp_path), "blocks.1.hook_resid_post")  # the folder + SAE_ID as its subfolder
    assert torch.equal(same.W_dec, sae.W_dec)


@pytest.mark.parametrize("sae, sae_id, words", [
    ("", "", "must name an SAE"), ("no such sae", "", "neither a SAELens release"),
    ("gemma-scope-2b-pt-res-canonical", "layer_99/width_16k/canonical", "is not in release"),
    ("gemma-scope-2b-pt-res-canonical", 3, "must be a string"),
])
def test_check_source_is_one_line(sae, sae_id, words):
    with pytest.raises(ValueError, match=words) as e:
        releases.check_source(sae, sae_id)
    assert "\n" not in str(e.value)
    assert releases.check_source(releases.TRAIN_TINY) == releases.TRAIN_TINY
    assert releases.check_source("someone/my-sae", "blocks.3.hook_resid_post") == "someone/my-sae"
    with pytest.raises(ValueError, match="train it first"):
        sae_source.open_sae(releases.TRAIN_TINY)


# ---------------------------------------------------------------- the hook an SAE was trained on

def _saelens_folder(sl, folder, hook=None, seed=0, **cfg):
    """A SAELens StandardSAE saved to folder, trained (so its cfg.json says) at `hook`."""
    theirs = sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, **cfg))
    _randomize(theirs, seed)
    if hook is not None:
        theirs.cfg.metadata.hook_name = hook
    theirs.save_model(folder)
    return theirs


@pytest.mark.parametrize("hook, words", [
    ("blocks.3.hook_mlp_out", "the MLP output of block 3"), ("blocks.3.hook_attn_out", "the attention output"),
    ("blocks.3.hook_resid_mid", "resid_mid"), ("blocks.3.attn.hook_z", "hook_z"),
    ("blocks.3.ln2.hook_normalized", "a transcoder"), ("hook_embed", "the embeddings"),
    ("blocks.0.hook_resid_pre", "the embeddings"),
])
def test_saelens_folder_of_another_hook_is_refused(hook, words, sl, tmp_path):
    """GPT-2's mlp-out / attn-out / resid-mid releases have the residual width (768) too: only the hook
    in cfg.json tells them apart, and it is read."""
    _saelens_folder(sl, tmp_path, hook)
    _one_line(ValueError, f"{re.escape(words)}.*not the residual stream", load.load_sae, tmp_path, d_in=D_IN)


def test_saelens_hook_z_reshape_and_head_index_are_refused(sl, tmp_path):
    _saelens_folder(sl, tmp_path / "z", None, reshape_activations="hook_z")
    _one_line(ValueError, "hook_z", load.load_sae, tmp_path / "z")
    _saelens_folder(sl, tmp_path / "head", "blocks.3.hook_resid_post")
    cfg = json.loads((tmp_path / "head" / "cfg.json").read_text())
    cfg["metadata"]["hook_head_index"] = 2
    (tmp_path / "head" / "cfg.json").write_text(json.dumps(cfg))
    _one_line(ValueError, "attention head 2", load.load_sae, tmp_path / "head")


@pytest.mark.parametrize("hook, layer", [("blocks.3.hook_resid_post", 3), ("blocks.3.hook_resid_pre", 2),
                                         ("model.layers.3", 3)])
def test_residual_hooks_load_and_say_where_they_read(hook, layer, sl, tmp_path):
    _saelens_folder(sl, tmp_path, hook)
    sae = load.load_sae(tmp_path)
    assert sae.hook_name == hook and formats.residual_layer(hook) == layer
    assert releases.sae_facts(str(tmp_path)) == formats.SaeFacts(hook, D_IN, D_SAE)  # no weights read


@pytest.mark.parametrize("repo, refused", [("gemma-scope-2b-pt-res", None), ("gemma-scope-2b-pt-mlp", "MLP output"),
                                           ("gemma-scope-2b-pt-transcoders", "a transcoder"),
                                           ("gemma-scope-2b-pt-att", "attention")])
@pytest.mark.parametrize("layout", ["repo folder", "hf cache"])
def test_gemma_scope_site_comes_from_its_repo(repo, refused, layout, tmp_path):
    """A Gemma Scope transcoder or MLP-out params.npz has the keys and d_in of a residual one: the repo
    name (a folder of that name, or the HF cache's models--google--<repo>) says which it is."""
    root = tmp_path / (repo if layout == "repo folder" else f"models--google--{repo}/snapshots/{'0' * 40}")
    folder, _ = _gemma_scope_folder(root, layer=3)
    if refused:
        _one_line(ValueError, f"{refused}.* of block 3 .*not the residual stream", load.load_sae, folder)
    else:
        assert load.load_sae(folder).hook_name == "blocks.3.hook_resid_post"
    facts = releases.sae_facts(str(folder))
    assert (facts.d_in, facts.d_sae) == (D_IN, D_SAE)  # from the npz header: no array read


def test_gemma_scope_release_of_another_site_is_refused_before_download(tmp_path, monkeypatch):
    """A release's repo says the site: gemma-scope-2b-pt-mlp loads as SAELens' gemma_2 conversion would
    name it (hook_mlp_out) and is refused; its transcoder release is a conversion we do not implement."""
    releases.releases.cache_clear()
    table = {"mlp": {"repo_id": "google/gemma-scope-2b-pt-mlp", "model": "gemma-2-2b", "conversion": "gemma_2",
                     "config_overrides": {}, "saes": {"layer_3/width_16k/canonical": "layer_3/width_16k/average_l0_5"}},
             "tc": {"repo_id": "google/gemma-scope-2b-pt-transcoders", "model": "gemma-2-2b",
                    "conversion": "gemma_2_transcoder", "config_overrides": {}, "saes": {"layer_3": "layer_3"}}}
    monkeypatch.setattr(releases, "releases", lambda: table)
    _gemma_scope_folder(tmp_path, layer=3)
    monkeypatch.setattr(load, "_download", lambda repo, sub, token: tmp_path / sub)
    _one_line(ValueError, r"mlp/layer_3/width_16k/canonical reads the MLP output of block 3",
              load.load_sae, release="mlp", sae_id="layer_3/width_16k/canonical")
    assert releases.sae_facts("mlp", "layer_3/width_16k/canonical").hook == "blocks.3.hook_mlp_out"
    _one_line(ValueError, "holds transcoders", load.load_sae, release="tc", sae_id="layer_3")
    _one_line(ValueError, "holds transcoders", releases.check_source, "tc")


def test_sparsify_mlp_subfolder_is_refused(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparsify = pytest.importorskip("sparsify")
    coder = sparsify.SparseCoder(D_IN, sparsify.SparseCoderConfig(num_latents=D_SAE, k=K))
    for name in ("layers.3.mlp", "layers.3", "embed_tokens"):
        coder.save_to_disk(tmp_path / name)
    _one_line(ValueError, r"the MLP output of block 3 \(layers\.3\.mlp\)", load.load_sae, tmp_path,
              subfolder="layers.3.mlp")
    _one_line(ValueError, "the embeddings", load.load_sae, tmp_path, subfolder="embed_tokens")
    assert load.load_sae(tmp_path, subfolder="layers.3").hook_name == "layers.3"
    assert releases.sae_facts(str(tmp_path), "layers.3") == formats.SaeFacts("layers.3", D_IN, D_SAE)


def test_resid_pre_sae_reads_the_previous_block_output_as_sae_lens_would(sl, tmp_path):
    """blocks.L.hook_resid_pre is the input of block L, which is block L-1's output: with LAYER = L-1
    the notebooks read exactly the activations SAELens encodes (the HF hidden state L), and LAYER = L
    (one block late) is refused, in the first cell and again after loading."""
    from shared.model import hooks, layout, loading
    from shared.notebook import parameters
    from shared.notebook.rules import saes

    model, tok = loading.load_model("tiny:gpt2", device="cpu")
    d = layout.d_model(model)
    theirs = sl.StandardSAE(sl.StandardSAEConfig(d_in=d, d_sae=4 * d))
    _randomize(theirs)
    theirs.cfg.metadata.hook_name = "blocks.2.hook_resid_pre"
    theirs.save_model(tmp_path)
    params = {"MODEL_ID": "tiny:gpt2", "SAE": str(tmp_path), "SAE_ID": ""}
    with pytest.raises(parameters.ParameterError, match=r"^SAE = .*after block 1 \(blocks\.2\.hook_resid_pre\), "
                                                      r"but LAYER is 2: make LAYER 1"):
        parameters.check_parameters({**params, "LAYER": 2})
    assert parameters.check_parameters({**params, "LAYER": 1}).LAYER == [1]
    ours = load.load_sae(tmp_path, d_in=d)
    with pytest.raises(parameters.ParameterError, match="LAYER is 2: make LAYER 1"):
        saes.check_loaded_sae({**params, "LAYER": [2]}, ours.hook_name, ours.cfg.d_sae, 2)
    ids = tok("The cat sat on the mat and the dog sat on the rug", return_tensors="pt").input_ids
    with torch.no_grad(), hooks.read_residuals(model, [1]) as acts:
        hidden = model(ids, output_hidden_states=True).hidden_states
    assert torch.equal(acts[1], hidden[2])  # LAYER = 1 reads the input of block 2
    with torch.no_grad():
        z = theirs.encode(hidden[2][0])
        torch.testing.assert_close(ours.encode(acts[1][0]), z, atol=1e-5, rtol=1e-5)
        assert (z > 0).any() and not torch.allclose(theirs.encode(hidden[3][0]), z)  # one block late differs


# ---------------------------------------------------------------- release entries: conversion, overrides

def test_release_overrides_and_conversions_are_read_from_sae_lens(sl):
    """What the registry says about releases our defaults and the refusals rest on."""
    from sae_lens.loading.pretrained_saes_directory import get_config_overrides

    table = releases.releases()
    theirs = get_config_overrides("mistral-7b-res-wg", "blocks.8.hook_resid_pre")  # + its neuronpedia_id
    assert table["mistral-7b-res-wg"]["config_overrides"] == {"normalize_activations": "constant_norm_rescale"} == \
        {k: v for k, v in theirs.items() if k != "neuronpedia_id"}
    for name, entry in table.items():  # every centring override is a GPT-2 (LayerNorm) release
        if (entry["config_overrides"].get("model_from_pretrained_kwargs") or {}).get("center_writing_weights"):
            assert entry["model"].startswith("gpt2"), name
    for name, entry in releases.BUILTIN_RELEASES.items():
        assert entry["config_overrides"] == table[name]["config_overrides"]


def test_normalising_release_is_refused(sl, tmp_path, monkeypatch):
    """SAELens encodes mistral-7b-res-wg's inputs rescaled to norm sqrt(d_in) (constant_norm_rescale, a
    config override its cfg.json does not carry); ours has no such input scale: refused, never read raw."""
    _one_line(ValueError, r"normalize_activations='constant_norm_rescale'", releases.check_source, "mistral-7b-res-wg")
    with pytest.raises(ValueError, match="constant_norm_rescale"):
        releases.resolve_release("mistral-7b-res-wg", "blocks.8.hook_resid_pre")
    _saelens_folder(sl, tmp_path / "mistral_7b_layer_8", "blocks.8.hook_resid_pre")  # cfg says "none"
    monkeypatch.setattr(load, "_download", lambda repo, sub, token: tmp_path / sub)
    _one_line(ValueError, "constant_norm_rescale", load.load_sae, release="mistral-7b-res-wg",
              sae_id="blocks.8.hook_resid_pre")


def test_centring_override_is_folded_into_the_encoder(sl, tmp_path, monkeypatch):
    """gpt2-small-res-jb was trained on TransformerLens' centred residual stream (center_writing_weights:
    the residual minus its mean over d_model); loaded by release, our SAE encodes the raw residual as
    SAELens encodes the centred one, and re-centring first changes nothing."""
    theirs = _saelens_folder(sl, tmp_path / "blocks.8.hook_resid_pre", "blocks.8.hook_resid_pre")
    monkeypatch.setattr(load, "_download", lambda repo, sub, token: tmp_path / sub)
    ours = load.load_sae(release="gpt2-small-res-jb", sae_id="blocks.8.hook_resid_pre")
    x = _x() + 3.0  # a mean over d_model the SAE never saw in training
    centred = x - x.mean(-1, keepdim=True)
    with torch.no_grad():
        z = theirs.encode(centred)
        torch.testing.assert_close(ours.encode(x), z, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.encode(centred), z, atol=1e-5, rtol=1e-5)
        assert (z > 0).any() and not torch.allclose(theirs.encode(x), z)
        torch.testing.assert_close(ours.decode(z), theirs.decode(z))
    assert not torch.equal(load.load_sae(tmp_path / "blocks.8.hook_resid_pre").W_enc, ours.W_enc)  # a folder: as is


# ---------------------------------------------------------------- what loader messages say (issue 19)

def test_qwen_scope_is_a_format_we_do_not_read_yet(sl, tmp_path):
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "layer12.sae.pt").write_bytes(b"not read")
    _one_line(ValueError, r"layer12\.sae\.pt.*a format we do not read yet", load.load_sae, tmp_path / "qwen")
    _one_line(ValueError, "a format we do not read yet", load.load_sae, tmp_path / "qwen", subfolder="layer12.sae.pt")
    _one_line(ValueError, "a format we do not read yet", releases.check_source,
              "Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_50", "layer12.sae.pt")
    _one_line(ValueError, r"Qwen Scope .*a format we do not read yet", releases.check_source,
              "qwen-scope-3.5-2b-base-w32k-l50", "layer12")


def test_builtin_table_points_to_the_full_registry(monkeypatch):
    """Without sae_lens only the built-in table is known: what it does not list may well exist."""
    monkeypatch.setattr(releases, "releases", lambda: releases.BUILTIN_RELEASES)
    _one_line(ValueError, "install sae_lens for the full registry", releases.check_source,
              "qwen-scope-3.5-2b-base-w32k-l50")
    for fn in (releases.check_source, releases.resolve_release):
        with pytest.raises(ValueError, match="install sae_lens for the full registry") as e:
            fn("gemma-scope-2b-pt-res-canonical", "layer_12/width_65k/canonical")
        assert "is not in release" not in str(e.value)


class _FileHub:
    """A Hub on 127.0.0.1 serving a few files ({repo: {path: bytes}}) to the real huggingface_hub client,
    404 for any other; it records the paths asked for."""

    def __init__(self, files):
        import hashlib
        from http.server import BaseHTTPRequestHandler

        from local_server import LocalServer

        self.requests = requests = []

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bool):
                requests.append(f"{self.command} {self.path}")
                parts = self.path.split("?")[0].strip("/").split("/")
                served = files.get("/".join(parts[:2]), {}) if parts[2:3] == ["resolve"] else {}
                data = served.get("/".join(parts[4:]))
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", "a" * 40)
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

        self.server = LocalServer.for_handler(Handler)

    def __enter__(self):
        self.server.__enter__()
        self.url = self.server.url
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)


def test_first_cell_reads_a_hub_sae_cfg_without_its_weights(tmp_path, monkeypatch, hub_online):
    """Before any weights download, the parameter check fetches only cfg.json (a SAELens release's, a Hub
    repo's): its hook and width stop a wrong SAE in the first cell."""
    import huggingface_hub.constants

    from shared.notebook import parameters

    def cfg(hook):
        return json.dumps({"d_in": 64, "d_sae": 256, "architecture": "standard", "metadata": {"hook_name": hook}})

    cfgs = {"jbloom/GPT2-Small-SAEs-Reformatted": {"blocks.8.hook_resid_pre/cfg.json": json.dumps(  # pre-6 names
                {"d_in": 768, "d_sae": 24576, "hook_point": "blocks.8.hook_resid_pre"}).encode()},
            "someone/saes": {"blocks.3/cfg.json": cfg("blocks.3.hook_mlp_out").encode(),
                             "blocks.2/cfg.json": cfg("blocks.2.hook_resid_post").encode()}}
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with _FileHub(cfgs) as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        assert releases.sae_facts("gpt2-small-res-jb", "blocks.8.hook_resid_pre") == \
            formats.SaeFacts("blocks.8.hook_resid_pre", 768, 24576)
        params = {"MODEL_ID": "tiny:gpt2", "LAYER": 2, "SAE": "someone/saes", "SAE_ID": "blocks.3"}
        with pytest.raises(parameters.ParameterError, match=r"^SAE_ID = 'blocks\.3': this SAE reads the MLP output"):
            parameters.check_parameters(params)
        with pytest.raises(parameters.ParameterError, match=r"^WATCH_FEATURES = \[300\]: latent id 300 beyond the "
                                                          r"SAE's 256 latents"):
            parameters.check_parameters({**params, "SAE_ID": "blocks.2", "WATCH_FEATURES": [300]})
        assert parameters.check_parameters({**params, "SAE_ID": "blocks.2", "WATCH_FEATURES": [255]})
    files = {r.split(" ", 1)[1] for r in hub.requests if "/resolve/" in r}
    assert len(files) == 3 and all(path.endswith("/cfg.json") for path in files)  # no weights asked for


def test_the_release_table_alone_says_which_saes_read_a_centred_residual(monkeypatch):
    """Whether a release's SAEs read TransformerLens' centred residual is its table entry's config override
    (center_writing_weights), read by releases.centred_input for the circuits' splice and by load.py's fold:
    a release added to the table with that override is centred with no list elsewhere to update; folders, Hub
    repos and train-tiny are not. Which block an SAE id reads is the table module's too."""
    from shared.circuits import nodes
    from shared.recipes import circuit_saes

    assert releases.centred_input("gpt2-small-res-jb")
    assert not any(releases.centred_input(s) for s in ("gemma-scope-2b-pt-res-canonical", "pythia-70m-deduped-res-sm",
                                                       releases.TRAIN_TINY, "someone/my-sae", "./a_folder"))
    centred = {"model_from_pretrained_kwargs": {"center_writing_weights": True}}
    table = {**releases.releases(), "someone-gpt2-res": {"repo_id": "someone/gpt2-res", "model": "gpt2-small",
                                                         "conversion": None, "config_overrides": centred, "saes": {}}}
    monkeypatch.setattr(releases, "releases", lambda: table)
    assert releases.centred_input("someone-gpt2-res") and releases.centres_input(centred)
    assert releases.sae_layer_from_id("blocks.8.hook_resid_pre") == 7 and releases.sae_layer_from_id("x") is None
    for module in (nodes, circuit_saes):  # no second list of centred releases, no second reading of an SAE id
        assert not hasattr(module, "CENTRED_RELEASES")
    assert nodes.sae_layer_from_id is releases.sae_layer_from_id
