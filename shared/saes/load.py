"""Load any SAE into our SparseAutoencoder (encode, decode, decoder rows W_dec), from a local folder,
a Hugging Face repo + subfolder, or a SAELens release + sae_id.

    sae = load_sae("out/blocks.12.hook_resid_post", d_in=2304)                     # our export
    sae = load_sae(release="gemma-scope-2b-pt-res-canonical", sae_id="layer_12/width_16k/canonical")
    sae = load_sae("EleutherAI/sae-pythia-70m-32k", subfolder="layers.3")          # sparsify

The folder's files say its format:
- `cfg.json` + `sae_weights.safetensors`: our exports and SAELens 6 (standard -> relu, jumprelu,
  topk; batchtopk / matryoshka_batchtopk training saves -> jumprelu with their one global
  threshold, which is how SAELens runs them at inference; rescale_acts_by_decoder_norm folded in);
- `params.npz`: Gemma Scope (JumpReLU, no b_dec subtracted from the input);
- `cfg.json` + `sae.safetensors`: EleutherAI sparsify (TopK; relu then top-k of (x - b_dec) W + b).

Every format also says the hook the SAE was trained on (formats.SaeFacts: the cfg.json's hook_name,
the Gemma Scope repo, sparsify's folder name, a release's config_overrides); an SAE of anything but the
residual stream after a block (an MLP or attention output, resid_mid, a transcoder, the embeddings) is
refused, and the hook stays on the loaded SAE as `sae.hook_name` (None when the files do not say).
A release's config_overrides are applied as SAELens applies them; those ours cannot reproduce (an input
normalisation, a conversion we do not implement) are refused by name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .architectures import build_sae, config_from_dict, registered
from .base import DTYPES, SAEConfig, SparseAutoencoder
from .formats import (BATCHTOPK_ARCHS, CFG_FILE, FORMATS, GEMMA_SCOPE_FILE, HUB_FILES, QWEN_SCOPE_FILE,
                      QWEN_SCOPE_NOTE, SAELENS_ARCH, SPARSIFY_FILE, WEIGHTS_FILE, facts_from_cfg,
                      gemma_scope_facts, residual_layer)
from .releases import centres_input, releases, resolve_release

# --------------------------------------------------------------------------- finding the folder

def _download(repo_id: str, subfolder: str | None, token) -> Path:
    """The SAE files of repo_id/subfolder (only those) from the Hub, into the HF cache."""
    from huggingface_hub import snapshot_download

    from .. import runtime

    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    try:
        local = snapshot_download(repo_id, allow_patterns=[prefix + f for f in HUB_FILES],
                                  token=runtime.hf_token(token))
    except Exception as e:  # the client's errors carry URLs and multi-line detail: one line instead
        raise OSError(f"could not download the SAE {repo_id}/{prefix} from the Hugging Face Hub "
                      f"({type(e).__name__}): check the repo id and subfolder, the network, and HF_TOKEN "
                      "for a gated or private repo") from None
    return Path(local) / prefix


def _folder(source, subfolder, token) -> Path:
    path = Path(source) / (subfolder or "")
    if QWEN_SCOPE_FILE.fullmatch(path.name):
        raise ValueError(f"{path} is {QWEN_SCOPE_NOTE}")
    if path.exists():
        return path.parent if path.is_file() else path
    if subfolder is not None and re.fullmatch(r"[\w.\-]+/[\w.\-]+", str(source)) and not Path(source).exists():
        return _download(str(source), subfolder, token)
    raise FileNotFoundError(f"no SAE folder at {path}: give a local folder holding {FORMATS}, or a Hub repo id "
                            "with subfolder=, or release= and sae_id=")


# --------------------------------------------------------------------------- the formats

def _dtype_name(value, default="float32") -> str:
    name = str(value or default).removeprefix("torch.")
    return name if name in DTYPES else default


def _saelens(folder: Path, overrides: dict) -> tuple[SAEConfig, dict, str | None]:
    """Our config, SAELens-named weights and hook of a cfg.json + sae_weights.safetensors folder, with a
    release's config_overrides applied on top of its cfg.json (as SAELens' loader applies them)."""
    from safetensors.torch import load_file

    cfg = {**json.loads((folder / CFG_FILE).read_text()), **overrides}
    hook = facts_from_cfg(cfg, folder.name).hook
    weights = load_file(str(folder / WEIGHTS_FILE))
    ours = config_from_saelens(cfg)
    if cfg.get("architecture") in BATCHTOPK_ARCHS and "topk_threshold" in weights:
        weights["threshold"] = weights.pop("topk_threshold").reshape(()).expand(ours.d_sae).clone()
    scale = weights.pop("scaling_factor", weights.pop("finetuning_scaling_factor", None))
    if scale is not None and not torch.allclose(scale.float(), torch.ones_like(scale.float())):
        raise ValueError(f"{folder / WEIGHTS_FILE} has a finetuning scaling factor; fold it into W_dec first")
    if cfg.get("rescale_acts_by_decoder_norm") and "W_dec" in weights:
        _fold_decoder_norm(weights)
    # a release's centring override (all GPT-2, LayerNorm: TransformerLens centres only those); a cfg.json's
    # own model_from_pretrained_kwargs are not trusted to say it, as TransformerLens skips it for RMSNorm models
    if centres_input(overrides):
        _fold_centring(weights, ours.apply_b_dec_to_input)
    return ours, weights, hook


def _fold_decoder_norm(w: dict) -> None:
    """SAELens' rescale_acts_by_decoder_norm folded in (as its _fold_norm_topk): pre-activations
    times ||W_dec row|| and unit decoder rows give the same latents and reconstruction."""
    norm = w["W_dec"].float().norm(dim=1).clamp_min(1e-8)
    w["W_enc"] = (w["W_enc"].float() * norm).to(w["W_enc"].dtype)
    w["b_enc"] = (w["b_enc"].float() * norm).to(w["b_enc"].dtype)
    w["W_dec"] = (w["W_dec"].float() / norm[:, None]).to(w["W_dec"].dtype)


def _fold_centring(w: dict, apply_b_dec: bool) -> None:
    """TransformerLens' center_writing_weights folded into the encoder: an SAE trained on x - mean(x)
    (mean over d_model) then reads x itself. With C = I - 11^T/d: W_enc <- C W_enc, and
    b_enc <- b_enc - mean(b_dec) 1^T W_enc (when b_dec is subtracted first); exact for every input."""
    W = w["W_enc"].float()
    if apply_b_dec:
        w["b_enc"] = (w["b_enc"].float() - w["b_dec"].float().mean() * W.sum(0)).to(w["b_enc"].dtype)
    w["W_enc"] = (W - W.mean(0, keepdim=True)).to(w["W_enc"].dtype)


def config_from_saelens(cfg: dict) -> SAEConfig:
    """Our SAEConfig from a SAELens cfg.json (ours carry the full config in metadata) or our own cfg."""
    meta = cfg.get("metadata") or {}
    ours = meta.get("sae_ladder_cfg")
    if ours is None and "aux_coef" in cfg and "dead_tokens_threshold" in cfg:
        ours = cfg  # a plain SAEConfig.to_dict() written by our own code
    if ours is not None:  # the architecture's config class; older files' `extra` dict is unpacked
        return config_from_dict({**ours, "d_in": cfg.get("d_in", ours.get("d_in")),
                                 "d_sae": cfg.get("d_sae", ours.get("d_sae"))})
    # a third-party SAELens folder; pre-6 cfgs name the activation instead of the architecture
    act = cfg.get("activation_fn_str") or cfg.get("activation_fn")
    arch = cfg.get("architecture") or ("topk" if act == "topk" else "standard")
    if arch in BATCHTOPK_ARCHS:
        arch = "jumprelu"
    ours_arch = next((k for k, v in SAELENS_ARCH.items() if v == arch), arch)  # the first: jumprelu, not batchtopk
    if ours_arch not in registered():
        raise ValueError(f"cfg.json architecture {arch!r} is not supported by shared.sae "
                         f"(available: {sorted(registered())})")
    norm = cfg.get("normalize_activations") or "none"
    if norm != "none":
        raise ValueError(f"cfg.json normalize_activations={norm!r}: only 'none' (normalisation folded into "
                         "the weights) can be loaded")
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    kw = {"k": int(k)} if ours_arch == "topk" else {}
    return config_from_dict(dict(d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]), architecture=ours_arch,
                                 apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                                 dtype=_dtype_name(cfg.get("dtype")), **kw))


def _gemma_scope(folder: Path, origin: str) -> tuple[SAEConfig, dict, str | None]:
    """A Gemma Scope params.npz: JumpReLU; pre = x W_enc + b_enc (b_dec not subtracted). Its hook comes
    from the repo name (origin, or the folder's path: the HF cache keeps it) and the layer_L folder."""
    import numpy as np

    hook = gemma_scope_facts(f"{origin} {folder.as_posix()}", folder.as_posix()).hook
    with np.load(folder / GEMMA_SCOPE_FILE) as data:
        weights = {("W_" + k[2:] if k.startswith("w_") else k): torch.from_numpy(data[k].astype("float32"))
                   for k in data.files}
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold") if k not in weights]
    if missing:
        raise ValueError(f"{folder / GEMMA_SCOPE_FILE} has no {', '.join(missing)} (found {sorted(weights)})")
    weights.pop("scaling_factor", None)
    d_in, d_sae = weights["W_enc"].shape
    return config_from_dict(dict(architecture="jumprelu", d_in=d_in, d_sae=d_sae,
                                 apply_b_dec_to_input=False)), weights, hook


def _sparsify(folder: Path) -> tuple[SAEConfig, dict, str | None]:
    """An EleutherAI sparsify folder: TopK on relu((x - b_dec) encoder.weight^T + encoder.bias); its
    folder is its hook point (layers.N: block N's output; layers.N.mlp: that block's MLP output)."""
    from safetensors.torch import load_file

    cfg = json.loads((folder / CFG_FILE).read_text())
    act = cfg.get("activation", "topk")
    if act != "topk":
        raise ValueError(f"sparsify activation={act!r} in {folder / CFG_FILE} is not supported (only 'topk')")
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise ValueError(f"{folder} holds a sparsify transcoder / skip connection, not an SAE; load an SAE folder")
    hook = facts_from_cfg(cfg, folder.name).hook
    d_in = int(cfg["d_in"])
    d_sae = int(cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor", 32)))
    raw = load_file(str(folder / SPARSIFY_FILE))
    if "encoder.weight" not in raw or "W_dec" not in raw:
        raise ValueError(f"{folder / SPARSIFY_FILE} has no encoder.weight / W_dec (found {sorted(raw)})")
    W_dec = raw["W_dec"]
    if tuple(W_dec.shape) == (d_in, d_sae) and d_in != d_sae:
        W_dec = W_dec.T  # orientation by shape: sparsify stores [num_latents, d_in]
    weights = {"W_enc": raw["encoder.weight"].T, "b_enc": raw["encoder.bias"], "W_dec": W_dec,
               "b_dec": raw.get("b_dec", torch.zeros(d_in, dtype=W_dec.dtype))}
    dtype = _dtype_name(str(raw["encoder.weight"].dtype))
    return config_from_dict(dict(architecture="topk", d_in=d_in, d_sae=d_sae, k=int(cfg.get("k", 32)),
                                 apply_b_dec_to_input=True, dtype=dtype)), weights, hook


def _read(folder: Path, overrides: dict | None = None, origin: str = "") -> tuple[SAEConfig, dict, str | None]:
    """(config, weights, hook or None) of an SAE folder in any format it holds."""
    files = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if GEMMA_SCOPE_FILE in files:
        return _gemma_scope(folder, origin)
    if CFG_FILE in files and WEIGHTS_FILE in files:
        return _saelens(folder, dict(overrides or {}))
    if CFG_FILE in files and SPARSIFY_FILE in files:
        return _sparsify(folder)
    qwen = sorted(f for f in files if QWEN_SCOPE_FILE.fullmatch(f))
    if qwen:
        raise ValueError(f"SAE folder {folder} holds {qwen[0]}: {QWEN_SCOPE_NOTE}")
    have = CFG_FILE if CFG_FILE in files else "neither cfg.json nor params.npz"
    missing = WEIGHTS_FILE if CFG_FILE in files else f"{CFG_FILE} + {WEIGHTS_FILE}"
    raise FileNotFoundError(f"SAE folder {folder} lacks {missing} (has {have}); it needs {FORMATS}")


# --------------------------------------------------------------------------- the loader

def load_sae(source: str | Path | None = None, *, subfolder: str | None = None, release: str | None = None,
             sae_id: str | None = None, d_in: int | None = None, device: str | torch.device | None = None,
             token: str | None = None, dtype: str | None = None) -> SparseAutoencoder:
    """Load an SAE (eval mode) from a local folder (or a file in it), a Hub repo id + subfolder, or a
    SAELens release + sae_id (source then unused).

    d_in: the activation width you will feed it (your model's d_model); a mismatch raises a one-line
    ValueError. dtype: override the stored dtype ("float32", "bfloat16", ...). token: for a private
    or gated repo (default: the HF_TOKEN secret).
    """
    overrides = {}
    if release is not None or sae_id is not None:
        if release is None or sae_id is None:
            raise ValueError("give both release= and sae_id= (a SAELens release and an SAE in it)")
        source, subfolder, _ = resolve_release(release, sae_id)  # refuses a conversion we do not implement
        overrides = releases().get(release, {}).get("config_overrides") or {}
    if source is None:
        raise ValueError("load_sae needs a source (a folder or a Hub repo id) or release= and sae_id=")
    folder = _folder(source, subfolder, token)
    cfg, weights, hook = _read(folder, overrides, origin=str(source))
    if hook is not None:
        try:
            residual_layer(hook)
        except ValueError as e:
            where = f"{release}/{sae_id}" if release is not None else folder
            raise ValueError(f"the SAE at {where} {e}: load a residual-stream SAE") from None
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}: use one of {tuple(DTYPES)}")
        cfg.dtype = dtype
    if d_in is not None and int(d_in) != cfg.d_in:
        raise ValueError(f"SAE at {folder} expects d_in={cfg.d_in} activations but d_in={d_in} was given: "
                         "load the SAE trained for this model and layer (check model_name / hook_name in "
                         "its cfg.json)")
    sae = _build(cfg, weights, folder, device)
    sae.hook_name = hook  # what it was trained on (SAELens names, or the HF module); None: its files do not say
    return sae


def _build(cfg: SAEConfig, weights: dict, folder: Path, device) -> SparseAutoencoder:
    shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in),
              "b_dec": (cfg.d_in,)}
    if cfg.architecture == "jumprelu":
        shapes["threshold"] = (cfg.d_sae,)
    for name, shape in shapes.items():
        if name not in weights:
            raise ValueError(f"the weights in {folder} have no {name} tensor (found {sorted(weights)})")
        if tuple(weights[name].shape) != shape:
            raise ValueError(f"{name} in {folder} has shape {tuple(weights[name].shape)}, the config "
                             f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}) implies {shape}")
    sae = build_sae(cfg)
    state = sae.state_dict()
    for name, t in weights.items():
        if name in state:
            state[name] = t.to(DTYPES[cfg.dtype])
    sae.load_state_dict(state)
    sae.eval()
    return sae.to(device) if device is not None else sae



def check_sae_fits(sae, model, layer: int) -> None:
    """One-line ValueError when the SAE's d_in is not the width of the model's residual stream."""
    from ..model.layout import d_model

    width = d_model(model)
    if int(sae.cfg.d_in) != int(width):
        raise ValueError(f"the SAE reads d_in={sae.cfg.d_in} activations but layer {layer} of this model has "
                         f"d_model={width}: use the SAE trained for this model and layer")


