"""The SAE file formats, without torch: the SAELens 6 folder (cfg.json, sae_weights.safetensors, sparsity,
neuronpedia.json) our exports write and every loader reads, its architecture names, the other formats
we read (Gemma Scope params.npz, EleutherAI sparsify), and the hook names they use: which hook an
SAE's files say it reads (`SaeFacts`, from a cfg.json, a Gemma Scope path or a folder) and whether that
is the residual stream after a block (`residual_layer`, `layer_mismatch`). What the writer (`export`),
the reader (`load`) and the notebooks' first-cell checks (`releases`) share.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
NEURONPEDIA_FILE = "neuronpedia.json"
# The sae_lens release whose cfg.json layout this writes (fields checked against its source).
SAE_LENS_VERSION = "6.54.12"
# our architecture name -> sae_lens 6 architecture name
SAELENS_ARCH = {"topk": "topk", "jumprelu": "jumprelu", "relu": "standard", "gated": "gated",
                # SAELens saves a trained BatchTopK / Matryoshka for inference as JumpReLU (one global threshold)
                "batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}
WEIGHT_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
GEMMA_SCOPE_FILE = "params.npz"
SPARSIFY_FILE = "sae.safetensors"
HUB_FILES = (CFG_FILE, WEIGHTS_FILE, GEMMA_SCOPE_FILE, SPARSIFY_FILE)  # all a load downloads
FORMATS = f"{CFG_FILE} + {WEIGHTS_FILE} (SAELens / our export), {GEMMA_SCOPE_FILE} (Gemma Scope) or " \
          f"{CFG_FILE} + {SPARSIFY_FILE} (sparsify)"
# SAELens training architectures that SAELens saves for inference as JumpReLU
BATCHTOPK_ARCHS = ("batchtopk", "matryoshka_batchtopk")
QWEN_SCOPE_FILE = re.compile(r"layer\d+\.sae\.pt")
QWEN_SCOPE_NOTE = "a Qwen Scope file (layerN.sae.pt), a format we do not read yet"


def hook_name(layer: int) -> str:
    """The SAELens hook of the residual stream after block `layer`: what our exports write (and name
    their folders by) and `residual_layer` reads back as `layer`."""
    return f"blocks.{layer}.hook_resid_post"


# --------------------------------------------------------------------------- the hook an SAE reads

@dataclass(frozen=True)
class SaeFacts:
    """What an SAE's files (or its release entry) say without its weights: the hook it was trained on,
    in SAELens' names or the Hugging Face module's (None: they do not say), and its widths (None: unknown)."""

    hook: str | None = None
    d_in: int | None = None
    d_sae: int | None = None


_RESID = re.compile(r"blocks\.(\d+)\.hook_resid_(pre|post)(?![a-z])")
_TL_SITE = re.compile(r"blocks\.(\d+)\.(.+)")
_HF_BLOCK = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)(?:\.(.+))?$")  # model.layers.12, sparsify's layers.3(.mlp)
_SITE_WORDS = (("hook_resid_mid", "the residual stream between attention and MLP (resid_mid)"),
               ("ln2", "the MLP input (a transcoder)"), ("mlp_in", "the MLP input (a transcoder)"),
               ("mlp.hook_in", "the MLP input (a transcoder)"), ("mlp", "the MLP output"),
               ("hook_z", "the attention heads' outputs (hook_z)"), ("attn", "the attention output"),
               ("att", "the attention output"), ("embed", "the embeddings"))


def _site_words(part: str) -> str:
    return next((words for key, words in _SITE_WORDS if key in part), "a hook this loader does not know")


def residual_layer(hook: str) -> int:
    """The block whose output a residual-stream hook reads, i.e. the notebooks' LAYER for it:
    blocks.L.hook_resid_post and block L's own module (model.layers.L, sparsify's layers.L) -> L;
    blocks.L.hook_resid_pre, the input of block L, is block L-1's output -> L - 1. Anything else (an
    MLP or attention output, resid_mid, a transcoder's input, the embeddings) is a one-line ValueError."""
    m = _RESID.match(hook)
    if m:
        block = int(m.group(1))
        if m.group(2) == "post":
            return block
        if block == 0:
            raise ValueError(f"reads the embeddings ({hook}, the input of block 0), not the residual stream after "
                             "a block")
        return block - 1
    m = _HF_BLOCK.search(hook)
    if m and not m.group(2):
        return int(m.group(1))
    site = _TL_SITE.fullmatch(hook)
    if m or site:
        block, part = (m.group(1), m.group(2)) if m else (site.group(1), site.group(2))
        raise ValueError(f"reads {_site_words(part)} of block {block} ({hook}), not the residual stream")
    raise ValueError(f"reads {_site_words(hook)} ({hook}), not the residual stream after a block")


def layer_mismatch(hook: str | None, layer: int, name: str = "LAYER") -> str | None:
    """Why an SAE trained at `hook` does not fit a notebook reading the residual stream after block
    `layer`, the value of parameter `name` (the words after "SAE_ID = ...: "); None when it fits or
    the hook is unknown."""
    if hook is None:
        return None
    try:
        read = residual_layer(hook)
    except ValueError as e:
        return f"this SAE {e}: use a residual-stream SAE (hook_resid_post of block {name}, or hook_resid_pre of " \
               f"block {name} + 1)"
    if read != layer:
        return (f"this SAE reads the residual stream after block {read} ({hook}), but {name} is {layer}: make "
                f"{name} {read}, or pick the SAE for layer {layer}")
    return None


def facts_from_cfg(cfg: Mapping[str, Any], folder_name: str = "") -> SaeFacts:
    """An SAE's facts from its cfg.json (release config_overrides already applied on top, as SAELens
    applies them): SAELens 6 (hook in metadata), pre-6 (hook_name / hook_point), ours, or sparsify
    (no d_sae; the folder is the hook: layers.N = block N's output)."""
    if "d_sae" not in cfg and ("num_latents" in cfg or "expansion_factor" in cfg):  # sparsify
        if cfg.get("transcode") or cfg.get("skip_connection"):
            raise ValueError(f"{folder_name or 'the folder'} holds a sparsify transcoder / skip connection, "
                             "not an SAE")
        d_in = int(cfg["d_in"])
        hook = folder_name if _HF_BLOCK.search(folder_name) or "embed" in folder_name else None
        return SaeFacts(hook=hook, d_in=d_in,
                        d_sae=int(cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor", 32))))
    meta = cfg.get("metadata") or {}
    hook = next((c.get(k) for c in (cfg, meta) for k in ("hook_name", "hook_point") if c.get(k)), None)
    if hook is None:  # ours before hook metadata; a folder named by its hook; the HF module
        hook = next((c.get("hf_hook_name") for c in (cfg, meta) if c.get("hf_hook_name")), None)
        if hook is None and _RESID.search(folder_name or ""):
            hook = _RESID.search(folder_name).group(0)
    if (cfg.get("reshape_activations") or "none") != "none":  # "hook_z": flattened attention-head outputs
        hook = hook if hook and "hook_z" in hook else "hook_z"
    head = next((c.get("hook_head_index") for c in (cfg, meta) if c.get("hook_head_index") is not None), None)
    if head is not None:
        raise ValueError(f"{folder_name or 'the SAE'} reads attention head {head} only (hook_head_index), not the "
                         "residual stream")
    ints = {k: int(cfg[k]) if cfg.get(k) is not None else None for k in ("d_in", "d_sae")}
    return SaeFacts(hook=hook, **ints)


_GEMMA_SCOPE = re.compile(r"gemma-scope-(\d+b)-(?:pt|it)-(res|mlp|att|transcoders)")
_GEMMA_D_IN = {"2b": 2304, "9b": 3584, "27b": 4608}
_WIDTH = re.compile(r"width_(\d+)([km])")


def gemma_scope_facts(where: str, path: str) -> SaeFacts:
    """A Gemma Scope SAE's facts as SAELens' gemma_2 conversion derives them: the repo name (in `where`,
    a repo id or a local path such as the HF cache's models--google--gemma-scope-2b-pt-res) says the
    site, layer_L in `path` the block, width_Nk the width; the hook is None when neither says."""
    repo = _GEMMA_SCOPE.search(where)
    layer = re.search(r"layer_(\d+)", path)
    width = _WIDTH.search(path)
    d_sae = int(width.group(1)) * (1024 if width.group(2) == "k" else 1024 * 1024) if width else None
    hook = None
    if "embedding" in path:
        hook = "hook_embed"
    elif repo and layer:
        L = layer.group(1)
        hook = {"res": f"blocks.{L}.hook_resid_post", "mlp": f"blocks.{L}.hook_mlp_out",
                "att": f"blocks.{L}.attn.hook_z", "transcoders": f"blocks.{L}.ln2.hook_normalized"}[repo.group(2)]
    d_in = _GEMMA_D_IN.get(repo.group(1)) if repo and repo.group(2) != "att" else None
    return SaeFacts(hook=hook, d_in=d_in, d_sae=d_sae)


def _npz_shape(path: Path, name: str) -> tuple[int, ...] | None:
    """The shape of array `name` in an .npz, from its header only (no array is read)."""
    import zipfile

    import numpy as np

    fmt = np.lib.format
    with zipfile.ZipFile(path) as z:
        member = next((n for n in z.namelist() if n.lower() == f"{name.lower()}.npy"), None)
        if member is None:
            return None
        with z.open(member) as f:
            read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(fmt.read_magic(f))
            return tuple(read(f)[0]) if read else None


def folder_facts(folder: Path, origin: str = "") -> SaeFacts | None:
    """The facts of a local SAE folder from its cfg.json or its Gemma Scope params.npz header (origin:
    the repo id it came from, when the path does not hold it); None for a folder of neither."""
    folder = Path(folder)
    if (folder / GEMMA_SCOPE_FILE).is_file():
        facts = gemma_scope_facts(f"{origin} {folder.as_posix()}", folder.as_posix())
        shape = _npz_shape(folder / GEMMA_SCOPE_FILE, "W_enc")
        return SaeFacts(facts.hook, *shape) if shape and len(shape) == 2 else facts
    if (folder / CFG_FILE).is_file():
        return facts_from_cfg(json.loads((folder / CFG_FILE).read_text()), folder.name)
    return None

