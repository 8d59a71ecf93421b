"""A shareable trace of one prompt through an SAE: which features fire on which tokens, and what the
model writes when each of them is pushed up or down.

`trace_prompt` returns a TraceData dict (the originals' `trace.json` shape):
    prompt, model, layer ("L12 residual"), sae_repo, tokens[],
    features[{id "f123", name, desc, auroc}], activations[feature][token] (each row scaled to [0, 1]
    by its own max), counterfactuals{"f123": {"-3": text, ..., "3": text}}
Features are the top_n by activation summed over the prompt's tokens (BOS and other special tokens
left out, and left out of `tokens`). Counterfactuals are greedy generations with alpha times the
feature's *max activation on the prompt* times its decoder row added to the residual at the layer
(steer.generate_steered): alpha = 1 adds what the feature itself wrote at its peak, alpha = -1 takes
about that away, alpha = 0 is the unsteered model. Names, descriptions, `auroc` and
`detection_balanced_accuracy` come from notebook 04's feature_catalog.json when one is given:
`auroc` is its `detection_auroc` (AUROC_SOURCE), `detection_balanced_accuracy` its `detection_score`;
else the name is "latent <id>", desc "" and both null (a catalog without `detection_auroc` leaves
auroc null).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..model.capture import capture_residuals, token_mask
from ..model.layout import check_layers, model_device
from ..model.steer import alpha_key, generate_steered  # alpha_key: how TraceData writes an alpha

ALPHA_UNIT = "alpha x the feature's max activation on the prompt x its decoder row, added at the layer"
AUROC_SOURCE = ("the catalog's detection_auroc: AUROC of the feature's peak activation in each held-out context of "
                "the judge's detection test, separating the contexts the judge called activating from the others "
                "(1 = its calls follow the activation, 0.5 = unrelated); null without a catalog")


def _catalog_index(catalog: Mapping | None) -> dict[int, Mapping]:
    if catalog is None:
        return {}
    if not isinstance(catalog, Mapping) or not isinstance(catalog.get("features"), list):
        raise ValueError("catalog must be a feature_catalog.json dict with a 'features' list (notebook 04's output)")
    return {int(f["id"]): f for f in catalog["features"] if "id" in f}


@torch.no_grad()
def token_latents(model, tokenizer, sae, layer: int, ids: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept token ids [n], latents [n, d_sae] float32 on the CPU) of the tokens ids[0, start:] of one
    sequence [1, T], read at `layer` in one forward of the whole sequence; special tokens (BOS, EOS,
    pad) left out. start > 0 reads a continuation in its context (the prompt is seen, not scored)."""
    (layer,) = check_layers(model, [layer])
    ids = ids.to(model_device(model))
    keep = token_mask(ids, tokenizer)[0, start:]
    if not bool(keep.any()):
        return ids[0, :0].cpu(), torch.zeros(0, sae.cfg.d_sae)
    x = capture_residuals(model, ids, [layer])[layer][0, start:]
    z = sae.encode(x[keep.to(x.device)].to(sae.device, sae.dtype)).float().cpu()
    return ids[0, start:][keep].cpu(), z


def prompt_activations(model, tokenizer, sae, layer: int, prompt: str) -> tuple[list[str], torch.Tensor]:
    """(tokens, latents [n_tokens, d_sae]) of the prompt at `layer`, special tokens (BOS) left out."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    kept, z = token_latents(model, tokenizer, sae, layer, tokenizer(prompt, return_tensors="pt").input_ids)
    if not kept.numel():
        raise ValueError(f"prompt {prompt!r} has no ordinary tokens to trace")
    return [tokenizer.decode([int(t)]) for t in kept.tolist()], z


def trace_prompt(model, tokenizer, sae, layer: int, prompt: str, top_n: int = 10, catalog: Mapping | None = None,
                 alphas: Sequence[float] = (-3, -1, 0, 1, 3), max_new_tokens: int = 20, *, model_id: str = "",
                 sae_repo: str = "", seed: int = 0) -> dict:
    """The TraceData dict of `prompt` (see the module docstring); top_n features at most (fewer when
    fewer fire), strongest summed activation first."""
    if int(top_n) < 1:
        raise ValueError(f"top_n={top_n}: must be >= 1")
    index = _catalog_index(catalog)
    tokens, z = prompt_activations(model, tokenizer, sae, layer, prompt)
    total = z.sum(0)
    order = total.argsort(descending=True, stable=True)[:int(top_n)]
    ids = [int(j) for j in order if total[j] > 0]
    features, rows, counterfactuals = [], [], {}
    for j in ids:
        row = z[:, j]
        peak = float(row.max())
        entry = index.get(j, {})
        fid = f"f{j}"
        features.append({"id": fid, "name": entry.get("name") or f"latent {j}", "desc": entry.get("desc", ""),
                         "auroc": entry.get("detection_auroc"),
                         "detection_balanced_accuracy": entry.get("detection_score"), "latent": j, "max_activation": peak,
                         "summed_activation": float(total[j])})
        rows.append([round(float(v) / peak, 6) for v in row])
        direction = sae.W_dec[j].detach().float().cpu()
        scale = peak * float(direction.norm())  # generate_steered adds alpha * scale * unit(direction)
        texts = generate_steered(model, tokenizer, prompt, layer, direction, alphas,
                                 max_new_tokens=max_new_tokens, seed=seed, scale=scale)
        counterfactuals[fid] = {alpha_key(a): t for a, t in texts.items()}
    return {"prompt": prompt, "model": model_id, "layer": f"L{int(layer)} residual", "sae_repo": sae_repo,
            "tokens": tokens, "features": features, "activations": rows, "counterfactuals": counterfactuals,
            "alpha_unit": ALPHA_UNIT, "auroc_source": AUROC_SOURCE}
