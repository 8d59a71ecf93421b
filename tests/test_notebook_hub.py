"""Notebook 01 with the Hub failing (a local server answering 500 at HF_ENDPOINT, HF_TOKEN set):
the run ends with its export and run_report.json, which records the failed upload; with HF_REPO
empty nothing contacts the Hub at all."""
from __future__ import annotations

import json

import pytest

import build_notebooks as bn
from conftest import REPO
from fake_hub import FakeHub
from test_notebooks import assert_completed, output_dir, run_notebook

NOTEBOOK_ID = "01_hobbyist_gemma2_2b_colab"


@pytest.mark.notebook
@pytest.mark.parametrize("repo", ["someone/sae", ""], ids=["repo-named", "repo-empty"])
def test_hub_fault_keeps_the_run_and_empty_repo_uploads_nothing(repo, tmp_path, monkeypatch):
    entry = next(e for e in bn.load_catalog(REPO) if e.id == NOTEBOOK_ID)
    nb = tmp_path / f"{NOTEBOOK_ID}.ipynb"  # the rendered notebook, alone, outside the repository
    nb.write_text(bn.render_entry(REPO, entry, bn.load_settings(REPO)), encoding="utf-8")
    params = {**entry.smoke, "HF_REPO": repo}
    token = "hf_fakeTokenThatMustNeverBePrinted"
    with FakeHub("500") as server:
        run_dir, executed = run_notebook(nb, params, tmp_path, monkeypatch, env={
            "HF_TOKEN": token, "HF_ENDPOINT": server.url, "HF_USERNAME": None,
            "HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None})  # huggingface_hub reads either
    assert_completed(executed)
    out = output_dir(executed, params, run_dir)
    report = json.loads((out / "run_report.json").read_text())
    folder = out / "export" / f"blocks.{params['LAYER']}.hook_resid_post"
    assert (folder / "sae_weights.safetensors").is_file() and (folder / "cfg.json").is_file()
    text = json.dumps(executed)
    assert token not in text and token not in json.dumps(report)
    if not repo:
        assert server.requests == [], f"HF_REPO is empty but the Hub was contacted: {server.requests}"
        assert report["hub"] == {}
        assert "HF_REPO is empty" in text
        return
    (hub_entry,) = report["hub"].values()
    assert hub_entry["ok"] is False and hub_entry["repo"] == repo
    assert hub_entry["error"].startswith("the Hub answered 500")
    assert any(r.startswith("GET /api/models/someone/sae") for r in server.requests), server.requests
    assert f"upload to {repo} failed: the Hub answered 500" in text


@pytest.mark.notebook
def test_stage_gate_uploads_its_report_only_when_a_repo_is_named(tmp_path, monkeypatch):
    """11's upload option: HF_REPO named, the report and plot go to a private repo there (the Hub failing
    here: recorded in upload.json, the run still ends); the catalog smoke run covers HF_REPO empty."""
    entry = next(e for e in bn.load_catalog(REPO) if e.id == "11_stage_gate_g1")
    params = {**entry.smoke, "HF_REPO": "someone/g1"}
    token = "hf_fakeTokenThatMustNeverBePrinted"
    with FakeHub("500") as server:
        run_dir, executed = run_notebook(REPO / "notebooks" / "11_stage_gate_g1.ipynb", params, tmp_path, monkeypatch,
                                         env={"HF_TOKEN": token, "HF_ENDPOINT": server.url, "HF_USERNAME": None,
                                              "HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None})
    assert_completed(executed)
    out = output_dir(executed, params, run_dir)
    assert (out / "g1_report.json").is_file()
    upload = json.loads((out / "upload.json").read_text())["hub"]
    assert upload["ok"] is False and upload["repo"] == "someone/g1" and upload["error"].startswith("the Hub answered 500")
    assert any(r.startswith("GET /api/models/someone/g1") for r in server.requests), server.requests
    assert token not in json.dumps(executed)
