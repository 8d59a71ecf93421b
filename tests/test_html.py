"""The notebooks' HTML views (html.view): self-contained fragments that carry their data and the viewers'
one script, escaped so no string of the data can end the script, drawn by a real headless browser."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from chromium import SKIP_REASON, Browser, executable
from shared.features.stats import FeatureStats, catalog_entries, rank_features
from shared.views.html import page, show, view
from shared.views.viewer import VIEWER_JS

EVIL = "<script>window.__pwned=1</script>"
WORDS = ["the", " cat", " sat", " on", " a", " mat", "\n", EVIL, " dog", " ran", " & ", ' "q"']


class WordTokenizer:
    """decode() for a 12-word vocabulary (one of them markup), standing in for a real tokenizer."""

    def decode(self, ids):
        return "".join(WORDS[int(i)] for i in ids)


def catalog() -> dict:
    """A feature catalog from a real FeatureStats pass: latent j fires on word j (EVIL is word 7)."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, len(WORDS), (30, 20), generator=gen)
    acts = torch.zeros(30, 20, 9)
    for j in range(9):
        acts[..., j] = (tokens == j) * (0.2 + 3 * torch.rand(tokens.shape, generator=gen))
    stats = FeatureStats(9, top_m=5, window=4)
    stats.update(tokens, acts)
    ranked = rank_features(stats, min_fires=1, max_fire_rate=1.0)
    effects = {j: {"promoted": [{"token_id": 7, "token": EVIL, "logit": 2.5}, {"token_id": 1, "token": " cat",
                                                                                "logit": 1.0}],
                   "suppressed": [{"token_id": 3, "token": " on", "logit": -1.5}]} for j, _ in ranked}
    labels = {7: {"name": "markup <b>tags</b>", "desc": "fires on the script token", "confidence": 0.9}}
    entries = catalog_entries(stats, ranked, WordTokenizer(), labels=labels, effects=effects)
    for e in entries:
        e["nearest"] = [{"id": 7 if e["id"] != 7 else 1, "cosine": 0.5}, {"id": 999, "cosine": 0.25}]
    return {"sae_repo": 'x"><img src=x onerror="window.__pwned=2">', "base_model": "tiny", "layer": 1,
            "features": entries}


TRACE = {"prompt": EVIL, "model": "tiny", "layer": "L1 residual", "sae_repo": "local",
         "tokens": ["The", " cat", EVIL, " sat"],
         "features": [{"id": "f3", "name": "cats", "desc": "", "auroc": None},
                      {"id": "f7", "name": "javascript:window.__pwned=3", "desc": EVIL, "auroc": 0.8}],
         "activations": [[0.1, 1.0, 0.0, 0.3], [0.0, 0.2, 1.0, 0.0]],
         "counterfactuals": {"f3": {"-3": "dog", "0": " sat", "3": EVIL}, "f7": {"0": "x"}}}
CIRCUIT = {"nodes": [{"id": "L1.f2", "layer": "L1", "score": 0.5, "kind": "feature", "name": EVIL},
                     {"id": "L1.error", "layer": "L1", "score": -0.2, "kind": "error"},
                     {"id": "L2.f9", "layer": "L2", "score": 0.9, "kind": "feature"}],
           "edges": [{"source": "L1.f2", "target": "L2.f9", "score": 0.4},
                     {"source": "L1.error", "target": "L2.f9", "score": -0.1}],
           "metric": "logit_diff", "prompts_n": 4, "tau_node": 0.1, "tau_edge": 0.01, "method": "sfc"}
SCORE = {"sae_repo": EVIL, "model": "tiny", "layer": 1, "d_sae": 9, "k": 2, "interp_score": 0.5,
         "components": {"loss_recovered": 0.5, "alive": 0.5, "l0_score": 0.5, "sparse_probing": 0.5, "tpp": 0.5},
         "weights": {"loss_recovered": 0.3, "alive": 0.15, "l0_score": 0.15, "sparse_probing": 0.25, "tpp": 0.15}}


def embedded(fragment: str) -> dict:
    (block,) = re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', fragment, re.S)
    return json.loads(block)


def test_views_carry_their_data_and_nothing_can_close_the_script():
    data = catalog()
    fragment = view("catalog", data)
    assert embedded(fragment) == data  # the JSON round-trips, markup and all
    assert fragment.lower().count("</script") == 2  # the data block's and the script's own: no string adds one
    assert "<img" not in fragment and "<b>tags" not in fragment
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", fragment, re.I)  # nothing fetched
    assert "<link" not in fragment and "@import" not in fragment
    assert fragment.count(VIEWER_JS.strip()[:200]) == 1
    assert view("catalog", data) == fragment  # deterministic: a re-run writes the same file
    trace_fragment = view("trace", TRACE, title="</script><script>window.__pwned=9</script>")
    assert trace_fragment.lower().count("</script") == 2 and embedded(trace_fragment) == TRACE


def test_view_refuses_unknown_kinds_and_non_json_numbers():
    with pytest.raises(ValueError, match="kind must be one of trace, circuit, catalog, leaderboard"):
        view("graph", CIRCUIT)
    with pytest.raises(ValueError):
        view("trace", {**TRACE, "activations": [[float("nan")] * 4] * 2})
    assert show("<b>x</b>") == "<b>x</b>"  # outside Jupyter, show returns the string


def render(tmp_path, html: str, name: str):
    """(the page in headless chromium, opened from a file:// URL, as a saved notebook output is)."""
    path = tmp_path / f"{name}.html"
    path.write_text(html, encoding="utf-8")
    browser = Browser(tmp_path / "profile", width=1100, height=900)
    return browser, browser.open(path.as_uri())


@pytest.mark.skipif(executable() is None, reason=SKIP_REASON)
def test_console_errors_are_seen(tmp_path):
    browser, tab = render(tmp_path, "<html><body>x<script>notDefined();</script></body></html>", "bad")
    with browser:
        assert any("notDefined" in p for p in tab.problems)  # so the empty lists below can fail


@pytest.mark.skipif(executable() is None, reason=SKIP_REASON)
def test_a_saved_output_draws_itself_and_runs_nothing_from_its_data(tmp_path):
    data = catalog()
    html = page(view("catalog", data), view("trace", TRACE), view("circuit", CIRCUIT, title=EVIL),
                view("leaderboard", [SCORE, {**SCORE, "sae_repo": "b", "interp_score": 0.7}]),
                view("trace", CIRCUIT), title="outputs")
    browser, tab = render(tmp_path, html, "outputs")
    with browser:
        assert tab.count(".slv-nojs") == 0  # every fragment drew itself
        card7 = "#slv-f-7"
        assert tab.texts(f"{card7} h3")[0].endswith("markup <b>tags</b>")
        assert tab.count(f"{card7} .slv-peak") == 5  # one peak per top context
        assert tab.texts(f"{card7} .slv-pos") == [EVIL, " cat"]
        chips = tab.eval(f"Array.from(document.querySelectorAll('{card7} .slv-nearest .slv-chip')).map(c => c.tagName)")
        assert chips == ["A", "SPAN"]  # latent 1 is in the catalog, 999 is not
        assert tab.texts(".slv-strip .slv-tok") == ["The", " cat", EVIL, " sat"]
        assert tab.count("svg circle.slv-feature") == 2 and tab.count("svg polygon.slv-error-node") == 1
        assert tab.texts(".slv-board tbody tr td:nth-child(2)") == ["b", EVIL]
        assert tab.texts(".slv-error") == [
            "not a trace.json: missing field 'tokens' (it looks like a circuit.json: open it in circuit.html)"]
        assert tab.eval("window.__pwned === undefined && !document.querySelector('body img, body iframe') && "
                        "document.querySelectorAll('script').length === 10")  # 5 fragments x (data + script)
        assert tab.eval(f"document.body.textContent.includes({json.dumps(data['sae_repo'])})")
        assert tab.problems == []
        png = tab.screenshot(tmp_path / "outputs.png")
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=float)
    assert pixels.shape[0] > 900 and pixels.std() > 5.0  # drawn, not blank
