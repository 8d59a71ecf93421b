"""SAELens-6 export: one folder per SAE that `sae_lens.SAE.load_from_disk` loads and Neuronpedia lists.

    info = ExportInfo(model_name="google/gemma-2-2b", layers_path="model.layers", context_size=1024,
                      dataset_path="HuggingFaceFW/fineweb-edu", tokens_trained=50_000_000)
    folder = export_saelens(sae, "out/blocks.12.hook_resid_post", info, layer=12, sparsity=log_sparsity,
                            val_metrics=report["12"])
    upload_export({12: folder}, "me/gemma-2-2b-saes")   # skipped (one line) without HF_TOKEN

The folder holds `cfg.json`, `sae_weights.safetensors` (W_enc [d_in, d_sae], b_enc, W_dec
[d_sae, d_in], b_dec), `sparsity.safetensors` (per-latent log10 firing frequency), a model-card
`README.md` and `neuronpedia.json`. Input normalisation is folded into the weights first, so the
export takes raw residual-stream activations ("normalize_activations": "none").
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .base import SAEConfig, SparseAutoencoder
from .formats import (CFG_FILE, NEURONPEDIA_FILE, SAELENS_ARCH, SAE_LENS_VERSION, SPARSITY_FILE,
                      WEIGHTS_FILE, WEIGHT_KEYS, hook_name as resid_hook_name)

@dataclass(frozen=True)
class ExportInfo:
    """What an export records about the run an SAE came from (SAELens cfg.json metadata, model card,
    neuronpedia.json): one per run, shared by every layer's folder."""

    model_name: str
    layers_path: str | None = None  # where the model keeps its decoder blocks (layout.layers_path): layer L's
    #                                 HF module is f"{layers_path}.{L}"
    context_size: int = 1024
    prepend_bos: bool = True
    dataset_path: str | None = None
    tokens_trained: int | None = None
    repo_id: str | None = None  # the Hub repo the folders go to, "<user>/<name>"; a bare name is no loadable repo
    sae_set: str | None = None  # Neuronpedia SAE set; default "ladder-res-<d_sae/1024>k"
    dtype: str = "float32"  # of the exported weights
    extra: Mapping[str, Any] = field(default_factory=dict)  # more cfg.json metadata entries

    def __post_init__(self):
        from .base import DTYPES

        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: use one of {tuple(DTYPES)}")
        if self.repo_id and "/" not in self.repo_id:
            object.__setattr__(self, "repo_id", None)

    def hf_hook_name(self, layer: int) -> str | None:
        """The Hugging Face module path of layer `layer` (None when layers_path is unknown)."""
        return f"{self.layers_path}.{layer}" if self.layers_path else None


def log_sparsity(fire_counts: torch.Tensor, n_tokens: int, eps: float = 1e-10) -> torch.Tensor:
    """Per-latent log10 firing frequency, the `sparsity` tensor SAELens and Neuronpedia read."""
    if n_tokens <= 0:
        raise ValueError("log_sparsity: n_tokens must be positive (count the tokens the counts came from).")
    return torch.log10(fire_counts.double() / n_tokens + eps).float()


def _exportable(sae: SparseAutoencoder) -> SparseAutoencoder:
    """A CPU copy of `sae` with input normalisation folded into its weights (the original is untouched)."""
    out = copy.deepcopy(sae).cpu()
    if out.cfg.normalize_activations != "none":
        if not hasattr(out, "fold_normalization"):
            raise ValueError(f"{type(sae).__name__} cannot fold normalize_activations="
                             f"{out.cfg.normalize_activations!r} into its weights; export needs raw-input weights.")
        out.fold_normalization()
    return out


def saelens_cfg(sae: SparseAutoencoder, info: ExportInfo, layer: int, *, hook_name: str | None = None,
                neuronpedia_id: str | None = None) -> dict:
    """The cfg.json dict sae_lens 6 expects for this SAE (after normalisation folding)."""
    cfg: SAEConfig = sae.cfg
    arch = SAELENS_ARCH.get(cfg.architecture)
    if arch is None:
        raise ValueError(f"architecture {cfg.architecture!r} has no SAELens equivalent; known: {sorted(SAELENS_ARCH)}")
    if cfg.normalize_activations != "none":
        raise ValueError("fold the input normalisation into the weights before export (sae.fold_normalization()).")
    out = {
        "architecture": arch,
        "d_in": int(cfg.d_in),
        "d_sae": int(cfg.d_sae),
        "dtype": info.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": bool(cfg.apply_b_dec_to_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if arch == "topk":
        out["k"] = int(cfg.k)
        out["rescale_acts_by_decoder_norm"] = False
    ours = cfg.to_dict()
    trained = {} if info.tokens_trained is None else {"tokens_trained": info.tokens_trained}
    out["metadata"] = {
        "sae_lens_version": SAE_LENS_VERSION,
        "sae_lens_training_version": None,
        "model_name": info.model_name,
        "hook_name": hook_name or resid_hook_name(layer),
        "hook_head_index": None,
        "hf_hook_name": info.hf_hook_name(layer),
        "layer": int(layer),
        "context_size": int(info.context_size),
        "prepend_bos": bool(info.prepend_bos),
        "dataset_path": info.dataset_path,
        "neuronpedia_id": neuronpedia_id,
        "model_from_pretrained_kwargs": {},
        "exclude_special_tokens": True,
        "trained_with": "sae-notebook-ladder",
        "sae_ladder_cfg": {**ours, "normalize_activations": "none"},
        **trained,
        **info.extra,
    }
    return out


def neuronpedia_metadata(info: ExportInfo, layer: int, d_sae: int, *, hook_name: str | None = None,
                         hf_folder: str | None = None, neuronpedia_id: str | None = None) -> dict:
    """What a Neuronpedia upload asks for: model id, layer, SAE set and id, hook, where the weights live.

    Neuronpedia ids read "<model>/<layer>-<set>", e.g. "gemma-2-2b/12-ladder-res-16k".
    """
    model_id = info.model_name.rstrip("/").split("/")[-1].lower()
    size = f"{d_sae // 1024}k" if d_sae % 1024 == 0 else str(d_sae)
    sae_set = info.sae_set or f"ladder-res-{size}"
    sae_id = f"{layer}-{sae_set}"
    return {
        "modelId": model_id,
        "layer": int(layer),
        "saeSetName": sae_set,
        "saeId": sae_id,
        "neuronpediaId": neuronpedia_id or f"{model_id}/{sae_id}",
        "hookName": hook_name or resid_hook_name(layer),
        "hfHookName": info.hf_hook_name(layer),
        "dSae": int(d_sae),
        "hfRepoId": info.repo_id,
        "hfFolder": hf_folder,
        "library": "saelens",
    }


_ARCH_TITLE = {"topk": "TopK", "jumprelu": "JumpReLU", "standard": "ReLU", "gated": "Gated"}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def model_card(cfg: dict, val_metrics: dict | None = None, info: ExportInfo | None = None,
               folder_name: str | None = None, definitions: Mapping[str, str] | None = None) -> str:
    """README.md text: YAML front matter (library_name: saelens, tags), config and validation tables.

    cfg: the cfg.json dict (saelens_cfg); info: the run's ExportInfo, for the Hub repo to load from;
    definitions: what each validation metric means (evals.metrics.METRIC_DEFINITIONS), listed under the
    table for the metrics it shows."""
    md = cfg["metadata"]
    repo_id = info.repo_id if info is not None else None
    base = md.get("model_name") or ""
    front = ["---", "library_name: saelens", "tags:", "- sparse-autoencoder", "- saelens",
             "- mechanistic-interpretability", "- sae-notebook-ladder"]
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", base):
        front.append(f"base_model: {base}")
    front.append("---")
    folder = folder_name or md["hook_name"]
    lines = front + [
        "",
        f"# {_ARCH_TITLE.get(cfg['architecture'], cfg['architecture'])} SAE on {base or 'a language model'}, {md['hook_name']}",
        "",
        f"A {cfg['architecture']} sparse autoencoder (d_in {cfg['d_in']}, d_sae {cfg['d_sae']}"
        + (f", k {cfg['k']}" if "k" in cfg else "")
        + f") on the residual stream output of layer {md.get('layer')} "
        f"(`{md['hook_name']}`, Hugging Face module `{md.get('hf_hook_name')}`), "
        "trained with the SAE notebook ladder. The weights take raw activations.",
        "",
        "| setting | value |", "|---|---|",
    ]
    for key in ("model_name", "hook_name", "hf_hook_name", "context_size", "prepend_bos",
                "dataset_path", "neuronpedia_id"):
        lines.append(f"| {key} | {_fmt(md.get(key))} |")
    for key in ("d_in", "d_sae", "k", "dtype", "apply_b_dec_to_input"):
        if key in cfg:
            lines.append(f"| {key} | {_fmt(cfg[key])} |")
    if md.get("tokens_trained") is not None:
        lines.append(f"| tokens_trained | {_fmt(md['tokens_trained'])} |")
    lines += ["", "## Validation (held-out tokens)", ""]
    if val_metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in val_metrics.items()
                  if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
        lines += _metric_definitions(val_metrics, definitions or {})
    else:
        lines.append("No validation numbers were recorded for this export.")
    src = f'SAE.from_pretrained("{repo_id}", "{folder}")' if repo_id else 'SAE.load_from_disk("<this folder>")'
    lines += ["", "## Load it", "", "```python", "from sae_lens import SAE", "",
              f"sae = {src}", "latents = sae.encode(resid)  # resid: [..., d_in] from the hook above",
              "```", ""]
    return "\n".join(lines)


def _metric_definitions(val_metrics: dict, definitions: Mapping[str, str]) -> list[str]:
    """Model-card lines: the SAELens-style numbers under SAELens' names, then what each metric means."""
    lines = []
    saelens = val_metrics.get("saelens")
    if isinstance(saelens, dict) and saelens:
        lines += ["", "The same SAE scored as `sae_lens.evals.run_evals` scores it (compare these with SAELens, "
                  "SAEBench or Neuronpedia numbers):", "", "| SAELens metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in saelens.items() if isinstance(v, (int, float))]
    defined = [k for k in definitions if k in val_metrics]
    if defined:
        lines += ["", "How these are computed:", ""]
        lines += [f"- `{k}`{' (the SAELens table)' if k == 'saelens' else ''}: {definitions[k]}."
                  for k in defined]
    return lines


def export_saelens(sae: SparseAutoencoder, folder: str | Path, info: ExportInfo, *, layer: int,
                   hook_name: str | None = None, neuronpedia_id: str | None = None,
                   sparsity: torch.Tensor | None = None, val_metrics: dict | None = None,
                   definitions: Mapping[str, str] | None = None) -> Path:
    """Write `sae` as a SAELens-6 folder (cfg.json, weights, sparsity, README.md, neuronpedia.json);
    val_metrics and their definitions go into the model card (model_card)."""
    from safetensors.torch import save_file

    from .base import DTYPES

    folder = Path(folder)
    sae = _exportable(sae)
    cfg = saelens_cfg(sae, info, layer, hook_name=hook_name, neuronpedia_id=neuronpedia_id)
    state = sae.state_dict()
    weights = {k: state[k].detach().to(DTYPES[info.dtype]).contiguous() for k in WEIGHT_KEYS if k in state}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / WEIGHTS_FILE))
    if sparsity is not None:
        sparsity = torch.as_tensor(sparsity).detach().float().cpu().reshape(-1).contiguous()
        if sparsity.numel() != sae.cfg.d_sae:
            raise ValueError(f"sparsity has {sparsity.numel()} entries; it must hold one log10 firing "
                             f"frequency per latent (d_sae={sae.cfg.d_sae})")
        save_file({"sparsity": sparsity}, str(folder / SPARSITY_FILE))
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=2))
    hook = cfg["metadata"]["hook_name"]
    np_meta = neuronpedia_metadata(info, layer, sae.cfg.d_sae, hook_name=hook, hf_folder=folder.name,
                                   neuronpedia_id=neuronpedia_id)
    (folder / NEURONPEDIA_FILE).write_text(json.dumps(np_meta, indent=2))
    (folder / "README.md").write_text(model_card(cfg, val_metrics, info, folder.name, definitions))
    return folder


def push_to_hub(folder: str | Path, repo_id: str, token: str | None = None, private: bool = True,
                path_in_repo: str | None = None, api: Any = None) -> str:
    """Upload an export folder to `repo_id/<path_in_repo or folder name>`; its URL.

    A missing repo is created private unless private=False; an existing one keeps its visibility.
    The target and its visibility are printed before anything is uploaded. No token (argument or
    HF_TOKEN secret) and Hub failures raise: upload_export is the guarded call (hub.guarded_upload) that
    turns them into one line and a report entry. The token is never printed or written.
    """
    from .. import hub, runtime

    folder = Path(folder)
    if not (folder / CFG_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not an export folder (no {CFG_FILE}); run export_saelens first")
    token = runtime.hf_token(token, required=True, why=f"Uploading {folder.name} to {repo_id} needs HF_TOKEN.")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    dest = (path_in_repo if path_in_repo is not None else folder.name).strip("/")
    is_private, created = hub.ensure_repo(api, repo_id, private=private, token=token)
    url = hub.repo_url(api, repo_id) + (f"/tree/main/{dest}" if dest else "")
    print(f"uploading {folder.name} to {hub.repo_url(api, repo_id)} {hub.visibility(is_private, private, created)}")
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), path_in_repo=dest or None,
                      repo_type="model", token=token, commit_message=f"Upload SAE {dest or folder.name}")
    print(f"uploaded {folder.name} to {url}")
    return url


def upload_export(folders: dict[int, Path], repo_id: str | None, *, private: bool = True,
                  token: str | None = None, api: Any = None) -> dict[str, dict]:
    """Upload each layer's export folder to `repo_id` behind the upload guard (hub.guarded_upload: never
    raises, the local export is kept): the report entry per layer, {"ok": True, "repo", "url"} or
    {"ok": False, "repo", "error"}; {} when repo_id is empty (uploads happen only when asked)."""
    from .. import hub

    def pusher(folder: Path):
        return lambda token: {"url": push_to_hub(folder, repo_id, token=token, private=private, api=api)}

    return hub.guarded_upload(repo_id, {str(layer): (folder, pusher(folder)) for layer, folder in folders.items()},
                              token=token)


def export_run(saes: dict, out_dir: str | Path, info: ExportInfo, *, report: dict | None = None,
               sparsity: dict | None = None, layer_of: dict | None = None,
               definitions: Mapping[str, str] | None = None) -> dict:
    """Export every SAE of a training run to `out_dir/blocks.<L>.hook_resid_post/` (one SAELens folder each).

    report/sparsity: evaluate_saes' outputs, keyed like saes; definitions: what the report's metrics mean
    (evals.metrics.METRIC_DEFINITIONS), for the model cards. Several SAEs per layer (train's variants,
    keys "L<layer>/<name>", layer_of = TrainResult.layer_of) go to `out_dir/<name>/blocks.<L>.hook_resid_post/`.
    """
    folders = {}
    for key, sae in saes.items():
        layer = int((layer_of or {}).get(key, key))
        hook_name = resid_hook_name(layer)
        where = Path(out_dir) if isinstance(key, int) else Path(out_dir) / str(key).split("/", 1)[-1]  # its variant
        folders[key] = export_saelens(
            sae, where / hook_name, info, layer=layer, hook_name=hook_name,
            sparsity=(sparsity or {}).get(key), val_metrics=(report or {}).get(str(key)), definitions=definitions)
    return folders
