"""Notebook 15's SAEs: the `SAE` / `SAE_IDS` parameters (one SAE id per LAYERS entry, each checked against its
layer before any download) opened at their layers and spliced in as a sparse feature circuit's nodes."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..circuits.nodes import Nodes, check_sae_layer
from ..circuits.sfc import check_saes
from ..saes.releases import centred_input
from .sae_source import sae_for_notebook


def load_saes(P, model, tokenizer, layers: Sequence[int], out_dir) -> tuple[Nodes, dict[int, str]]:
    """(the SAE node set, {layer: where its SAE came from}) for notebook parameters SAE and SAE_IDS (one id per
    LAYERS entry): sae_source.sae_for_notebook at each layer ("train-tiny" trains one per layer in out_dir/L<n>)."""
    ids = list(P["SAE_IDS"])
    if len(ids) != len(layers):
        raise ValueError(f"SAE_IDS has {len(ids)} entries but LAYERS {len(layers)}: give one SAE id per layer, "
                         "in the same order ('' for each with SAE = 'train-tiny' or a folder without subfolders)")
    if len(layers) < 2:
        raise ValueError(f"LAYERS = {list(layers)}: a sparse feature circuit needs >= 2 SAE layers")
    for layer, sae_id in zip(layers, ids):  # every id against its layer before any download
        check_sae_layer(sae_id, layer)
    saes, where = {}, {}
    for layer, sae_id in zip(layers, ids):
        params = type(P)({**P, "SAE_ID": sae_id}, given=getattr(P, "given", None))
        saes[layer], where[layer] = sae_for_notebook(params, model, tokenizer, layer, Path(out_dir) / f"L{layer}")
    nodes = check_saes(model, saes, dict(zip(layers, ids)), centre_sae_input=centred_input(P["SAE"]))
    return nodes, where
