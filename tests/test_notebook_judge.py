"""Notebook 04 with a judge that fails on every feature (a local API answering 500, the real anthropic SDK):
the run still ends with its catalog and cards, the catalog records the failure, and the last line says so."""
from __future__ import annotations

import json

import pytest

import build_notebooks as bn
from conftest import REPO
from fake_llm import FakeLLM
from test_notebooks import assert_completed, output_dir, run_notebook

NOTEBOOK_ID = "04_discover_features"
KEY = "sk-ant-fakeKeyThatMustNeverBePrinted"


@pytest.mark.notebook
def test_judge_failing_on_every_feature_is_said_in_one_line_and_recorded(tmp_path, monkeypatch):
    entry = next(e for e in bn.load_catalog(REPO) if e.id == NOTEBOOK_ID)
    params = {**entry.smoke, "JUDGE": "anthropic", "N_FEATURES": 4}
    # every request fails; the server asks for an immediate retry, so the judge's back-off costs no time
    with FakeLLM(lambda prompt: "", script=["500-retry-now"] * 1000) as api:
        run_dir, nb = run_notebook(REPO / "notebooks" / f"{NOTEBOOK_ID}.ipynb", params, tmp_path, monkeypatch, env={
            "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": api.url, "OPENAI_API_KEY": None})
        assert api.requests, "the judge never called the API"
    assert_completed(nb)
    catalog = json.loads((output_dir(nb, params, run_dir) / "feature_catalog.json").read_text())
    n = len(catalog["features"])
    assert n and catalog["judge_failed"] == n and all(f["name"] == "" for f in catalog["features"])
    assert catalog["judge_backend"] == "anthropic" and catalog["judge_error"].startswith("InternalServerError")
    last = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    printed = "".join("".join(o["text"]) for o in last["outputs"] if o.get("output_type") == "stream").strip()
    assert printed.count("\n") == 0 and f"FAILED on every feature ({n} of {n}" in printed
    assert KEY not in json.dumps(nb) and KEY not in json.dumps(catalog)
