"""The notebooks' SAE source: the `SAE` / `SAE_ID` parameter pair (a SAELens release + its sae_id, a local
folder, a Hub repo + subfolder, or "train-tiny": a small SAE trained here first, for a quick try and the
offline smoke runs) opened at a layer of the notebook's model, with the first cell's checks made again
on the loaded SAE (its hook against LAYER, the latent ids against its width)."""
from __future__ import annotations

from pathlib import Path

from ..model.layout import d_model, model_device
from ..notebook.rules.saes import check_loaded_sae
from ..saes.base import SparseAutoencoder
from ..saes.load import load_sae
from ..saes.releases import TRAIN_TINY, TRAIN_TINY_EXPANSION, check_source, releases, resolve_release
from .tiny_sae import train_tiny_sae


def sae_for_notebook(P, model, tokenizer, layer: int, out_dir) -> tuple[SparseAutoencoder, str]:
    """(the SAE, where it came from) for a notebook's SAE / SAE_ID parameters at `layer` of `model`:
    with SAE = "train-tiny" a small TopK SAE is first trained here on DATASET (a quick try and the
    offline smoke runs) and exported like a tier notebook's, then read back like any other folder."""
    source, sae_id = P.SAE, P.SAE_ID
    if source == TRAIN_TINY:
        source = str(train_tiny_sae(model, tokenizer, P.MODEL_ID, layer, P.get("DATASET", "synthetic"),
                                    Path(out_dir) / "tiny_sae", d_sae=TRAIN_TINY_EXPANSION * d_model(model),
                                    seed=P.SEED))
        sae_id = ""
        print(f"trained a tiny SAE for this run: {source}")
    sae, where = open_sae(source, sae_id, d_in=d_model(model), device=model_device(model))
    k, hook = getattr(sae.cfg, "k", None), getattr(sae, "hook_name", None)
    print(f"SAE {where}: {sae.cfg.architecture}, d_in {sae.cfg.d_in}, d_sae {sae.cfg.d_sae}" + (f", k {k}" if k else "")
          + f", trained at {hook or 'a hook its files do not name'}, read after block {layer}")
    check_loaded_sae(P, hook, sae.cfg.d_sae, layer)  # its hook against LAYER, the latent ids against d_sae
    return sae, where


def open_sae(sae: str, sae_id: str = "", **kw) -> tuple[SparseAutoencoder, str]:
    """(the SAE, where it came from as "<repo>/<path>" or the folder) for a notebook's SAE / SAE_ID:
    a SAELens release + sae_id, else a local folder or Hub repo id with SAE_ID as its subfolder.
    **kw go to load_sae (d_in, device, dtype, token)."""
    check_source(sae, sae_id)
    if sae == TRAIN_TINY:
        raise ValueError(f"SAE = {TRAIN_TINY!r}: train it first (tiny_sae.train_tiny_sae) and open its export folder")
    if not Path(sae).is_dir() and sae in releases():
        repo, path, _ = resolve_release(sae, sae_id)
        return load_sae(release=sae, sae_id=sae_id, **kw), f"{repo}/{path}"
    where = str(Path(sae) / sae_id) if Path(sae).is_dir() else "/".join(p for p in (sae, sae_id.strip("/")) if p)
    return load_sae(sae, subfolder=sae_id, **kw), where
