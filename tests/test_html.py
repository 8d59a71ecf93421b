"""HTML feature views: self-contained, escaped, and rendered by a real headless browser."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.features import FeatureStats, catalog_entries, rank_features
from shared.html import feature_card, page, show, trace_heatmap

EVIL = "<script>alert(1)</script>"
WORDS = ["the", " cat", " sat", " on", " a", " mat", "\n", EVIL, " dog", " ran", " & ", ' "q"']


class WordTokenizer:
    """decode() for a 12-word vocabulary (one of them markup), standing in for a real tokenizer."""

    def decode(self, ids):
        return "".join(WORDS[int(i)] for i in ids)


def entries():
    """Catalog entries from a real FeatureStats pass: latent j fires on word j (EVIL is word 7)."""
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
    return catalog_entries(stats, ranked, WordTokenizer(), labels=labels, effects=effects)


def heatmap():
    toks = ["The", " cat", EVIL, " sat"]
    feats = [{"id": "f3", "name": "cats"}, {"id": "f7", "name": "markup"}]
    return trace_heatmap(toks, feats, np.array([[0.1, 1.0, 0.0, 0.3], [0.0, -0.2, 1.0, 0.0]]))


def full_page() -> str:
    cards = entries()
    card7 = next(e for e in cards if e["id"] == 7)
    return page(feature_card(card7), feature_card(cards[0]), heatmap())


def test_views_are_self_contained_and_escaped():
    html = full_page()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html, re.I)
    assert "http" not in html and "<link" not in html and "@import" not in html
    assert "<script" not in html.lower()  # the markup token and label appear only escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "markup &lt;b&gt;tags&lt;/b&gt;" in html
    card = feature_card(next(e for e in entries() if e["id"] == 7))
    assert card.count('class="sl-tok sl-peak"') == 5  # one highlighted peak per top context
    assert "<svg" in card and "promoted" in card


def test_card_without_tokens_falls_back_to_text():
    card = feature_card({"id": 4, "rank": 1, "name": "", "desc": "", "confidence": None, "fire_rate": 0.01,
                         "mean_when_fired": 1.2, "score": 3.0,
                         "top_activating_examples": [{"activation": 2.0, "text": "a <b> c"}]})
    assert "latent 4" in card and "a &lt;b&gt; c" in card


def test_heatmap_checks_shape_and_show_returns_string_outside_jupyter():
    with pytest.raises(ValueError, match="n_tokens=2"):
        trace_heatmap(["a", "b"], ["f1"], [[1.0, 2.0, 3.0]])
    assert show("<b>x</b>") == "<b>x</b>"


def _browser():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(path: Path, png: Path, tmp: Path) -> list[str]:
    """Screenshot `path` in headless chromium; the page's console messages (errors included)."""
    cmd = [_browser(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--window-size=1100,1400",
           f"--screenshot={png}", path.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.exists(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(_browser() is None, reason="no chromium on PATH: install it with `apt-get install chromium` "
                                               "(.ci/run does so before the tests)")
def test_page_renders_in_headless_chromium(tmp_path):
    bad = tmp_path / "bad.html"  # the console check must catch a broken page
    bad.write_text("<html><body>x<script>notDefined();</script></body></html>")
    assert any("Uncaught" in line for line in render(bad, tmp_path / "bad.png", tmp_path))

    good = tmp_path / "features.html"
    good.write_text(full_page(), encoding="utf-8")
    png = tmp_path / "features.png"
    console = render(good, png, tmp_path)
    assert console == []
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=float)
    assert pixels.shape[0] > 100 and pixels.std() > 1.0  # not blank
