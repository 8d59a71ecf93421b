"""What the notebooks add to their outputs for the viewers: each latent's nearest latents by decoder
cosine (notebook 04's catalog), and the shareable viewer address of an upload (04, 05, 14, 15)."""
from __future__ import annotations

import pytest
import torch

from shared import hub
from shared.features.stats import decoder_neighbours
from shared.views import viewer


def test_decoder_neighbours_find_planted_near_duplicates_in_any_chunking():
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(300, 32, generator=gen)
    W[17] = 3.0 * W[5] + 0.05 * torch.randn(32, generator=gen)  # near duplicate of 5 (other norm)
    W[200] = -W[5]  # opposite: the least similar, never a neighbour
    W[9] = 0.0  # a dead latent's zero row
    found = decoder_neighbours(W, [5, 17, 9, 299], n=3)
    assert found[5][0]["id"] == 17 and found[17][0]["id"] == 5 and found[5][0]["cosine"] > 0.99
    assert all(n["id"] != j for j, ns in found.items() for n in ns)  # never itself
    assert all(n["id"] != 200 for n in found[5]) and all(n["cosine"] == 0.0 for n in found[9])
    cos = [n["cosine"] for n in found[299]]
    assert cos == sorted(cos, reverse=True) and len(cos) == 3
    unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sims = unit[299] @ unit.T
    sims[299] = -2
    assert [n["id"] for n in found[299]] == sims.topk(3).indices.tolist()  # the brute-force answer
    assert decoder_neighbours(W, [5, 17, 9, 299], n=3, chunk=1) == found
    with pytest.raises(ValueError, match="latent_ids must lie in 0..299"):
        decoder_neighbours(W, [300])


def test_an_upload_gives_the_viewer_url_of_its_hub_copy(tmp_path, hub_online, capsys):
    from huggingface_hub import HfApi

    from hub_store import StoreHub

    out = tmp_path / "circuit.json"
    out.write_text('{"nodes": [], "edges": []}')
    with StoreHub() as store:
        api = HfApi(endpoint=store.url, token="hf_test")
        upload = hub.upload_files([out], "someone/circuits", private=False, token="hf_test", api=api,
                                  path_in_repo="circuits/sfc")
        assert upload["private"] is False
        assert store.files["someone/circuits", "circuits/sfc/circuit.json"] == out.read_bytes()
    src = f"{store.url}/someone/circuits/resolve/main/circuits/sfc/circuit.json"
    assert upload["file_urls"] == [src]
    url = viewer.share(upload, "circuit", out)
    assert url == f"https://openinterp.github.io/sae-notebook-ladder/circuit.html?src={src}"
    assert capsys.readouterr().out.splitlines()[-1] == f"share circuit.json: {url}"
    assert viewer.share({**upload, "private": True}, "circuit", out) == url
    assert "the repo is private" in capsys.readouterr().out
    failed = {"ok": False, "repo": "someone/circuits", "error": "HF_TOKEN not found"}
    assert viewer.share(failed, "circuit", out) is None and viewer.share({}, "circuit", out) is None
    site = "https://openinterp.github.io/sae-notebook-ladder/"
    drop = f"view circuit.json: open {site}circuit.html and drop {out} on the page"
    assert capsys.readouterr().out.splitlines() == [drop, drop]
    with pytest.raises(ValueError, match="kind must be one of"):
        viewer.viewer_url("graph")
