"""SAELens-6 export: round trip through load_sae, real sae_lens loading, model card, push_to_hub."""

import importlib.util
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from shared import hub
from shared.evals import metrics
from shared.saes import export, load
from shared.saes.architectures import build_sae
from shared.saes.topk import TopKConfig

ROOT = Path(__file__).resolve().parents[1]


def _sae(d_in=16, d_sae=64, k=4, seed=0, **kw):
    sae = build_sae(TopKConfig(d_in=d_in, d_sae=d_sae, k=k, seed=seed, **kw))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # make every parameter non-trivial so the round trip checks them all
        sae.W_enc.add_(0.3 * torch.randn(sae.W_enc.shape, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(d_sae, generator=g))
        sae.b_dec.copy_(torch.randn(d_in, generator=g))
    return sae


def _x(d_in=16, n=32, scale=1.0, seed=2):
    return scale * torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed))


def _export(sae, folder, tokens_trained=None, **kw):
    info = export.ExportInfo(model_name="google/gemma-2-2b", layers_path="model.layers", context_size=128,
                             prepend_bos=True, dataset_path="synthetic", tokens_trained=tokens_trained)
    return export.export_saelens(sae, folder, info, **{"layer": 3, **kw})


def _normalized_sae():
    sae = _sae(apply_b_dec_to_input=False, normalize_activations="expected_average_only_in", seed=5)
    sae.estimate_norm_scale(_x(scale=30.0, seed=9))
    return sae


def test_round_trip_equal_weights_and_encode(tmp_path):
    sae = _sae()
    sparsity = export.log_sparsity(torch.arange(64), 1000)
    folder = _export(sae, tmp_path / "blocks.3.hook_resid_post", sparsity=sparsity,
                     val_metrics={"var_expl": 0.81, "l0": 4.0, "dead_pct": 1.5})
    loaded = load.load_sae(folder, d_in=16)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(sae, name), getattr(loaded, name)), name
    x = _x()
    assert torch.equal(sae.encode(x), loaded.encode(x))
    assert loaded.cfg.k == 4 and loaded.cfg.k_aux == sae.cfg.k_aux and loaded.cfg.seed == sae.cfg.seed
    assert torch.equal(load_file(str(folder / "sparsity.safetensors"))["sparsity"], sparsity)


def test_cfg_json_and_side_files(tmp_path):
    folder = _export(_sae(), tmp_path / "out", neuronpedia_id="gemma-2-2b/3-ladder-res-64",
                     sparsity=torch.zeros(64), val_metrics={"var_expl": 0.8123, "l0": 4.0}, tokens_trained=12345)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert {k: cfg[k] for k in ("architecture", "d_in", "d_sae", "k", "dtype", "device",
                                "apply_b_dec_to_input", "normalize_activations")} == {
        "architecture": "topk", "d_in": 16, "d_sae": 64, "k": 4, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none"}
    md = cfg["metadata"]
    assert md["hook_name"] == "blocks.3.hook_resid_post" and md["hf_hook_name"] == "model.layers.3"
    assert md["model_name"] == "google/gemma-2-2b" and md["context_size"] == 128 and md["prepend_bos"] is True
    assert md["dataset_path"] == "synthetic" and md["neuronpedia_id"] == "gemma-2-2b/3-ladder-res-64"
    assert md["sae_lens_version"].startswith("6.") and md["tokens_trained"] == 12345
    assert set(load_file(str(folder / "sae_weights.safetensors"))) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    readme = (folder / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: saelens\ntags:\n")
    assert "base_model: google/gemma-2-2b" in readme and "| var_expl | 0.8123 |" in readme
    np_meta = json.loads((folder / "neuronpedia.json").read_text())
    assert np_meta["modelId"] == "gemma-2-2b" and np_meta["layer"] == 3
    assert np_meta["hookName"] == "blocks.3.hook_resid_post"
    assert export.neuronpedia_metadata(export.ExportInfo("Qwen/Qwen3-4B"), layer=11, d_sae=16384)["saeId"] == \
        "11-ladder-res-16k"


def test_model_card_names_each_metric_definition():
    cfg = export.saelens_cfg(_sae(), export.ExportInfo("google/gemma-2-2b"), layer=3)
    card = export.model_card(cfg, {"var_expl": 0.8, "ce_loss_recovered": 0.923, "kl_div_spliced": 0.1,
                                   "saelens": {"ce_loss_score": 0.944, "kl_div_score": 0.95}},
                             definitions=metrics.METRIC_DEFINITIONS)
    assert "| ce_loss_recovered | 0.923 |" in card and "| ce_loss_score | 0.944 |" in card
    assert "`sae_lens.evals.run_evals`" in card
    for key in ("var_expl", "ce_loss_recovered", "kl_div_spliced", "saelens"):
        assert f"- `{key}`" in card, key
    assert "- `l0`" not in card  # only the metrics the card shows are defined
    assert "How these are computed" not in export.model_card(cfg, {"tokens_trained": 1.0},
                                                             definitions=metrics.METRIC_DEFINITIONS)


def test_normalisation_is_folded_and_original_untouched(tmp_path):
    sae = _normalized_sae()
    scale = float(sae.norm_scale)
    assert scale != 1.0
    folder = _export(sae, tmp_path / "n")
    assert float(sae.norm_scale) == scale and sae.cfg.normalize_activations == "expected_average_only_in"
    loaded = load.load_sae(folder)
    assert loaded.cfg.normalize_activations == "none" and not loaded.cfg.apply_b_dec_to_input
    x = _x(scale=30.0)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), atol=1e-4, rtol=1e-5)
    z = sae.encode(x)
    torch.testing.assert_close(loaded.decode(z), sae.decode(z), atol=1e-4, rtol=1e-5)


def test_own_cfg_folder_loads(tmp_path):
    sae = _sae(seed=3)
    tmp_path.joinpath("cfg.json").write_text(json.dumps(sae.cfg.to_dict()))
    save_file({k: v.contiguous() for k, v in sae.state_dict().items()}, str(tmp_path / "sae_weights.safetensors"))
    loaded = load.load_sae(tmp_path / "cfg.json")
    assert torch.equal(loaded.W_dec, sae.W_dec) and torch.equal(loaded.encode(_x()), sae.encode(_x()))


def test_load_errors(tmp_path):
    folder = _export(_sae(), tmp_path / "e")
    with pytest.raises(ValueError, match="expects d_in=16 .* d_in=32"):
        load.load_sae(folder, d_in=32)
    with pytest.raises(FileNotFoundError, match="no SAE folder"):
        load.load_sae(tmp_path / "nowhere")
    (folder / "sae_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks sae_weights.safetensors"):
        load.load_sae(folder)
    with pytest.raises(ValueError, match="one log10 firing frequency per latent"):
        _export(_sae(), tmp_path / "s", sparsity=torch.zeros(3))
    # weights that disagree with cfg.json
    folder = _export(_sae(), tmp_path / "w")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["d_sae"] = 32
    cfg["metadata"]["sae_ladder_cfg"]["d_sae"] = 32
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="W_enc .* shape"):
        load.load_sae(folder)


class _FakeApi:
    def __init__(self):
        self.calls = []

    def repo_info(self, repo_id, **kw):  # a missing repo, as the Hub answers it (404)
        raise type("NotFound", (Exception,), {"response": type("R", (), {"status_code": 404})})()

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw.get("private")))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw["repo_id"], kw["path_in_repo"], kw["folder_path"]))


def test_push_to_hub_needs_a_token_and_uploads_with_one(tmp_path, monkeypatch, capsys):
    """push_to_hub is the unguarded push (upload_export guards it): no token is a one-line error."""
    folder = _export(_sae(), tmp_path / "blocks.3.hook_resid_post")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="^Uploading blocks.3.hook_resid_post to me/saes needs HF_TOKEN"):
        export.push_to_hub(folder, "me/saes")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    api = _FakeApi()
    url = export.push_to_hub(folder, "me/saes", api=api)
    assert url == "https://huggingface.co/me/saes/tree/main/blocks.3.hook_resid_post"
    assert api.calls[0] == ("create_repo", "me/saes", True)  # a new repo is private unless asked
    assert api.calls[1][:3] == ("upload_folder", "me/saes", "blocks.3.hook_resid_post")
    out = capsys.readouterr().out
    assert "uploading blocks.3.hook_resid_post to https://huggingface.co/me/saes (private)" in out
    assert "hf_secret_value" not in out
    assert not any("hf_secret_value" in p.read_text() for p in folder.iterdir() if p.suffix in (".json", ".md"))
    with pytest.raises(FileNotFoundError, match="export_saelens"):
        export.push_to_hub(tmp_path, "me/saes")
    import inspect

    from huggingface_hub import HfApi

    calls = []

    class Recording:
        def __getattr__(self, name):
            return lambda *a, **kw: calls.append((name, a, kw))

    export.push_to_hub(folder, "me/saes", api=Recording())
    assert [c[0] for c in calls] == ["repo_info", "upload_folder"]  # an existing repo is not re-created
    for name, a, kw in calls:  # the calls bind to the real HfApi signatures
        inspect.signature(getattr(HfApi, name)).bind(None, *a, **kw)


# ---------------------------------------------------------------- the real sae_lens

_SAELENS_SCRIPT = textwrap.dedent("""
    import sys, warnings
    warnings.simplefilter("ignore")
    from safetensors.torch import load_file, save_file
    from sae_lens import SAE
    out = {}
    for i, (folder, xfile) in enumerate(zip(sys.argv[1::2], sys.argv[2::2])):
        sae = SAE.load_from_disk(folder)
        assert type(sae).__name__ == "TopKSAE", type(sae).__name__
        x = load_file(xfile)["x"]
        z = sae.encode(x)
        out[f"z{i}"] = z.contiguous()
        out[f"rec{i}"] = sae.decode(z).contiguous()
    save_file(out, sys.argv[1].rstrip("/") + ".saelens_out.safetensors")
    print("ok")
""")


def _saelens_python():
    env = os.environ.get("SAELENS_PYTHON")
    if env:
        return env
    local = ROOT / ".venv-saelens" / "bin" / "python"
    return str(local) if local.exists() else None


def _cases(tmp_path):
    cases = []
    for name, sae, x in (("plain", _sae(), _x()), ("normalized", _normalized_sae(), _x(scale=30.0))):
        folder = _export(sae, tmp_path / name, sparsity=torch.zeros(64))
        save_file({"x": x}, str(tmp_path / f"{name}.x.safetensors"))
        cases.append((folder, tmp_path / f"{name}.x.safetensors", sae, x))
    return cases


def _check(cases, results):
    for i, (_, _, sae, x) in enumerate(cases):
        z = sae.encode(x)
        torch.testing.assert_close(results[f"z{i}"], z, atol=1e-5, rtol=1e-5)
        assert torch.equal(results[f"z{i}"] != 0, z != 0)  # same active latents
        torch.testing.assert_close(results[f"rec{i}"], sae.decode(z), atol=1e-4, rtol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("sae_lens") is None and not os.environ.get("CI"),
                    reason="sae_lens not installed in this interpreter (pip install -e '.[dev]')")
def test_saelens_loads_export_in_process(tmp_path):
    """sae-lens is a dev dependency: in CI this runs (and fails loudly if sae_lens is missing)."""
    from sae_lens import SAE

    cases = _cases(tmp_path)
    results = {}
    for i, (folder, _, _, x) in enumerate(cases):
        s = SAE.load_from_disk(str(folder))
        results[f"z{i}"] = s.encode(x).detach()
        results[f"rec{i}"] = s.decode(results[f"z{i}"]).detach()
    _check(cases, results)


def test_saelens_loads_export_subprocess(tmp_path):
    """The same check with the sae_lens of another interpreter ($SAELENS_PYTHON or .venv-saelens)."""
    python = _saelens_python()
    if python is None:
        pytest.skip("no sae_lens interpreter: set SAELENS_PYTHON or create .venv-saelens "
                    "(python3 -m venv .venv-saelens && .venv-saelens/bin/pip install torch sae-lens)")
    cases = _cases(tmp_path)
    args = [str(a) for folder, xfile, _, _ in cases for a in (folder, xfile)]
    proc = subprocess.run([python, "-c", _SAELENS_SCRIPT, *args], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "No module named 'sae_lens'" in proc.stderr:
        pytest.skip(f"{python} has no sae_lens")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check(cases, load_file(str(cases[0][0]) + ".saelens_out.safetensors"))


# ---------------------------------------------------------------- the final upload, asked or not

@pytest.mark.parametrize("mode", ["refused", "401", "403", "500", "hang"])
def test_upload_export_records_a_hub_fault_and_keeps_the_export(mode, tmp_path, monkeypatch, capsys, hub_online):
    """The real client against a failing local Hub: no exception, one line on stderr, the export
    untouched, and a report entry that says why."""
    from huggingface_hub import HfApi

    from fake_hub import FakeHub, closed_port
    from shared import hub

    monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 1.0)
    token = "hf_fakeTokenThatMustNeverBePrinted"
    folder = _export(_sae(), tmp_path / "blocks.3.hook_resid_post")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    server = None if mode == "refused" else FakeHub(mode).__enter__()
    try:
        api = HfApi(endpoint=closed_port() if server is None else server.url, token=token)
        entries = export.upload_export({3: folder}, "someone/sae", token=token, api=api)
    finally:
        if server is not None:
            server.__exit__()
    (entry,) = entries.values()
    assert list(entries) == ["3"] and entry["ok"] is False and entry["repo"] == "someone/sae"
    assert {"refused": "no network", "hang": "no network", "401": "HF_TOKEN was rejected",
            "403": "no write access", "500": "the Hub answered 500"}[mode] in entry["error"]
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("upload to someone/sae failed: ")
    assert err.endswith(f"the files are kept at {folder}")
    assert token not in err and token not in json.dumps(entries)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_upload_export_uploads_nothing_unasked(tmp_path, monkeypatch, capsys, hub_online):
    """HF_TOKEN set (gated models need it) is no request to upload: an empty repo contacts nothing."""
    from huggingface_hub import HfApi

    from fake_hub import FakeHub

    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    folder = _export(_sae(), tmp_path / "blocks.3.hook_resid_post")
    assert hub.hub_repo_id("") is None and hub.hub_repo_id(None) is None
    assert hub.hub_repo_id("someone/sae") == "someone/sae"
    with FakeHub("500") as server:
        assert export.upload_export({3: folder}, hub.hub_repo_id(""), api=HfApi(endpoint=server.url)) == {}
    assert server.requests == []
    out = capsys.readouterr().out
    assert "HF_REPO is empty" in out and "set HF_TOKEN" not in out
    monkeypatch.delenv("HF_TOKEN")  # a repo named but no token: say that, upload nothing
    (entry,) = export.upload_export({3: folder}, "someone/sae").values()
    assert entry == {"ok": False, "repo": "someone/sae", "error": "HF_TOKEN not found"}
    assert "HF_REPO is set but HF_TOKEN" in capsys.readouterr().err
