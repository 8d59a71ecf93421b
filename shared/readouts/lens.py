"""Logit lens and tuned lens: read the residual stream after every block as a next-token distribution.

Logit lens (nostalgebraist 2020): decode the residual after block L with the model's own final norm,
unembedding and (Gemma-2) final-logit soft-cap. Tuned lens (Belrose et al. 2023): first pass the
residual through a learned affine translator per layer, h + A h + b, trained to match the final
distribution. Layer L is the OUTPUT of decoder block L (== output_hidden_states[L+1]); the last
layer's lens is the model's own logits, because we hook the raw block output instead of reading
hidden_states[-1], which transformers has already passed through the final norm.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model.capture import token_mask
from ..model.hooks import read_residuals
from ..model.layout import (d_model, final_logit_softcap, final_norm, model_device, n_layers, resolve_layers,
                            unembed)

PUBLIC_LENS_REPO = "AlignmentResearch/tuned-lens"  # a Hugging Face *space*; lenses under lens/<model_id>/


# ----------------------------------------------------------------------------- forward + decode


@torch.no_grad()
def run_with_residuals(model, input_ids, attention_mask=None, include_input=False):
    """One full forward; returns (raw residual after every block [n_layers(+1), B, T, D], logits [B, T, V]).

    With include_input the block-0 input (the scaled embeddings) comes first, as in the tuned-lens
    package. Residuals are the blocks' raw outputs (no final norm), so decode() of the last one
    reproduces the logits.
    """
    n = n_layers(model)
    with read_residuals(model, "all") as acts, \
            read_residuals(model, 0, at="input") if include_input else nullcontext({}) as inp:
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    if len(acts) < n:
        raise RuntimeError("Some decoder blocks did not run; the lens needs a full forward pass.")
    resid = torch.stack(([inp[0]] if include_input else []) + [acts[i] for i in range(n)])
    return resid, out.logits


def decode(model, h):
    """Residual -> logits exactly as the model does it: final norm, unembedding, soft-cap (float32)."""
    norm, head = final_norm(model), unembed(model)
    if norm is not None:
        w = next(norm.parameters(), head.weight)
        h = norm(h.to(device=w.device, dtype=w.dtype))
    logits = head(h.to(device=head.weight.device, dtype=head.weight.dtype))
    cap = final_logit_softcap(model)
    if cap:  # in the head's dtype, as the model does, so the last layer matches bit for bit in bf16 too
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


def kl_to_final(final_logits, lens_logits):
    """KL(final || lens) in nats over the last dim: how far the lens is from the model's answer."""
    p_log = final_logits.float().log_softmax(-1)
    q_log = lens_logits.float().log_softmax(-1)
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def layer_logits(model, input_ids, attention_mask=None, layers=None, lens=None):
    """Lens logits at the given blocks [len(layers), B, T, V] and the model's logits [B, T, V].

    lens=None is the logit lens; pass a TunedLens to decode through its translators instead.
    """
    input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    dev = model_device(model)
    input_ids = input_ids.to(dev)
    if attention_mask is not None:
        attention_mask = attention_mask.to(dev)
    resid, logits = run_with_residuals(model, input_ids, attention_mask)
    layers = resolve_layers("all" if layers is None else layers, resid.shape[0], dedupe=True)
    with torch.no_grad():
        out = torch.stack([
            decode(model, resid[L] if lens is None else lens.transform_hidden(resid[L], L)) for L in layers
        ])
    return out, logits.float()


def logit_lens(model, input_ids, layers=None):
    """Logit lens of one sequence: [n_layers, T, vocab] logits, block L's residual decoded by the model's head."""
    input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() == 2 and input_ids.shape[0] != 1:
        raise ValueError("logit_lens takes one sequence ([T] or [1, T]); use layer_logits for batches.")
    out, _ = layer_logits(model, input_ids.reshape(1, -1), layers=layers)
    return out[:, 0]


# ----------------------------------------------------------------------------- tables and plots


def _token_str(tokenizer, i):
    return tokenizer.decode([int(i)])


def lens_table(model, tokenizer, prompt, topk=1, lens=None, layers=None):
    """Per-layer top-k predictions, probabilities and KL(final || layer) for every prompt position.

    Returns a JSON-ready dict: tokens[T], layers[L], top_tokens[L][T][k], top_ids, top_probs,
    kl[L][T] (every position), kl_mean[L] (over the positions holding no special token: the BOS's
    prediction is no reading of the prompt; all positions if every one is special), kl_mean_positions
    (how many), final_top[T][k] (the model's own top-k), lens ("logit" | "tuned").
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string.")
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    all_layers = resolve_layers("all" if layers is None else layers, model, dedupe=True)
    logits, final = layer_logits(model, ids, layers=all_layers, lens=lens)
    logits, final = logits[:, 0], final[0]  # [L, T, V], [T, V]
    k = max(1, min(int(topk), logits.shape[-1]))
    probs = logits.softmax(-1)
    top_p, top_i = probs.topk(k, dim=-1)
    kl = kl_to_final(final[None], logits)  # [L, T]
    keep = token_mask(ids, tokenizer)[0].to(kl.device)
    keep = keep if keep.any() else torch.ones_like(keep)
    final_top = final.topk(k, dim=-1).indices
    return {
        "prompt": prompt,
        "lens": "logit" if lens is None else "tuned",
        "tokens": [_token_str(tokenizer, i) for i in ids[0]],
        "layers": all_layers,
        "top_ids": top_i.tolist(),
        "top_tokens": [[[_token_str(tokenizer, i) for i in pos] for pos in row] for row in top_i.tolist()],
        "top_probs": [[[round(p, 6) for p in pos] for pos in row] for row in top_p.tolist()],
        "kl": [[round(x, 6) for x in row] for row in kl.tolist()],
        "kl_mean": [round(x, 6) for x in kl[:, keep].mean(-1).tolist()],
        "kl_mean_positions": int(keep.sum()),
        "final_top": [[_token_str(tokenizer, i) for i in pos] for pos in final_top.tolist()],
    }


# ----------------------------------------------------------------------------- tuned lens


def unembed_hash(model):
    """The tuned-lens package's fingerprint of a model's unembedding, for config["unembed_hash"].

    The package (tuned_lens.nn.unembed.Unembed.unembedding_hash -> tuned_lens.utils.tensor_hash)
    takes the SHA-256 of `np.array_str(W, precision=1)`, W = get_output_embeddings().weight as a
    float32 CPU array. A matrix over numpy's print threshold prints only its `edgeitems` first and
    last rows and columns, so we copy only those into a lazily zero-filled array of W's shape: the
    same text, without a float32 copy of a 256k-token unembedding.
    """
    w = unembed(model).weight.detach()
    opts = np.get_printoptions()
    e = opts["edgeitems"]

    def kept(n):  # the indices array_str prints along a dimension of size n
        return torch.cat([torch.arange(e), torch.arange(n - e, n)]) if n > 2 * e else torch.arange(n)

    if w.numel() > opts["threshold"]:
        rows, cols = kept(w.shape[0]), kept(w.shape[1])
        a = np.zeros(tuple(w.shape), dtype=np.float32)  # calloc'd: untouched pages take no memory
        a[np.ix_(rows.numpy(), cols.numpy())] = w[rows.to(w.device)][:, cols.to(w.device)].float().cpu().numpy()
    else:
        a = w.float().cpu().numpy()
    return hashlib.sha256(np.array_str(a, precision=1).encode()).hexdigest()


class TunedLens(nn.Module):
    """One affine translator per residual (h + A h + b, zero-init) in the public tuned-lens layout.

    layer_translators[i] acts on output_hidden_states[i]: index 0 is the embeddings ("input"),
    index L+1 is block L's output; the last block needs none (it is the model's own output).
    So a lens for an n-block model has n translators, as in the tuned-lens package.
    """

    def __init__(self, d_model, num_hidden_layers, bias=True, base_model_name_or_path="", dtype=torch.float32):
        super().__init__()
        self.config = {
            "base_model_name_or_path": base_model_name_or_path,
            "d_model": int(d_model),
            "num_hidden_layers": int(num_hidden_layers),
            "bias": bool(bias),
            "base_model_revision": None,
            "unembed_hash": None,
            "lens_type": "linear_tuned_lens",
        }
        self.layer_translators = nn.ModuleList(nn.Linear(d_model, d_model, bias=bias, dtype=dtype) for _ in range(num_hidden_layers))
        for t in self.layer_translators:
            nn.init.zeros_(t.weight)
            if t.bias is not None:
                nn.init.zeros_(t.bias)

    @classmethod
    def for_model(cls, model, name=None, bias=True):
        """A zero (== logit lens) lens shaped for `model`, on the device of its unembedding."""
        name = name or getattr(getattr(model, "config", None), "name_or_path", "") or ""
        lens = cls(d_model(model), n_layers(model), bias=bias, base_model_name_or_path=name)
        lens.config["unembed_hash"] = unembed_hash(model)
        return lens.to(unembed(model).weight.device)

    def transform_hidden(self, h, layer):
        """Translate block `layer`'s residual (layer=-1: the embeddings); identity at the last block."""
        n = len(self.layer_translators)
        if not -1 <= layer < n:
            raise ValueError(f"Layer {layer} is outside this lens (blocks 0..{n - 1}, -1 for the embeddings).")
        if layer == n - 1:
            return h
        t = self.layer_translators[layer + 1]
        h = h.to(device=t.weight.device, dtype=t.weight.dtype)
        return h + t(h)

    def logits(self, model, h, layer):
        """Tuned-lens logits of residual h from block `layer`."""
        return decode(model, self.transform_hidden(h, layer))

    def check_model(self, model):
        """ValueError unless this lens has one translator per block of `model` and its width; a warning
        when its unembed_hash (as the tuned-lens package fills it) names another unembedding."""
        n, d = n_layers(model), d_model(model)
        if (n, d) != (self.config["num_hidden_layers"], self.config["d_model"]):
            raise ValueError(
                f"This lens was made for {self.config['num_hidden_layers']} blocks of width {self.config['d_model']} "
                f"({self.config['base_model_name_or_path'] or 'unknown model'}), the model has {n} blocks of width {d}: "
                "load the lens that matches the model, or fit a fresh one."
            )
        if self.config.get("unembed_hash") and self.config["unembed_hash"] != unembed_hash(model):
            warnings.warn(f"This lens was fitted on another unembedding than this model's "
                          f"({self.config['base_model_name_or_path'] or 'unknown model'}); its readings may be off.",
                          stacklevel=2)

    def save(self, path):
        """Write the public tuned-lens folder: config.json + params.pt (layer_translators state dict)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.layer_translators.state_dict().items()}
        torch.save(state, path / "params.pt")
        (path / "config.json").write_text(json.dumps(self.config, indent=2))
        return path

    @classmethod
    def load(cls, path, map_location="cpu", dtype=torch.float32):
        """Read a folder written by save() or by the tuned-lens package (config.json + params.pt); .to() the model's device."""
        path = Path(path)
        cfg_file, params_file = path / "config.json", path / "params.pt"
        if not (cfg_file.exists() and params_file.exists()):
            raise FileNotFoundError(f"{path} is not a tuned-lens folder: it needs config.json and params.pt.")
        cfg = json.loads(cfg_file.read_text())
        state = torch.load(params_file, map_location=map_location, weights_only=True)
        # keep only translator weights: "{i}.weight" (package format) or "layer_translators.{i}.weight";
        # older lens files also carried the unembedding, which we take from the model instead
        state = {k.removeprefix("layer_translators."): v for k, v in state.items()
                 if re.fullmatch(r"(layer_translators\.)?\d+\.(weight|bias)", k)}
        if not state:
            raise ValueError(f"{params_file} holds no layer translators ('<i>.weight' keys); is it a tuned lens?")
        n = cfg.get("num_hidden_layers") or cfg.get("num_layers") or len({k.split(".")[0] for k in state})
        d = cfg.get("d_model") or next(iter(state.values())).shape[-1]
        bias = cfg.get("bias", any(k.endswith(".bias") for k in state))
        lens = cls(d, n, bias=bias, base_model_name_or_path=cfg.get("base_model_name_or_path", ""), dtype=dtype)
        lens.config.update({k: v for k, v in cfg.items() if k in lens.config})
        lens.layer_translators.load_state_dict({k: v.to(dtype) for k, v in state.items()})
        return lens


def _lr_lambda(steps, warmup):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))  # linear decay, as in the tuned-lens recipe

    return f


@dataclass(frozen=True)
class TunedLensFitConfig:
    """How fit_tuned_lens trains a lens. optimizer="sgd" is the paper's recipe (Nesterov, momentum 0.9,
    lr 1.0, linear warm-up/decay); "adam" (lr 1e-3) converges in fewer steps, which is what short
    notebook runs need. lr None or 0: the optimizer's default."""

    steps: int = 250
    context_len: int = 256
    batch_size: int = 4
    optimizer: str = "adam"
    lr: float | None = None
    weight_decay: float = 1e-3
    warmup_frac: float = 0.1
    skip_bos: bool = True
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError("steps must be >= 1.")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError('optimizer must be "adam" or "sgd".')


def fit_tuned_lens(model, tokenizer, texts, cfg: TunedLensFitConfig = TunedLensFitConfig(), *, lens=None,
                   progress=True):
    """Train a TunedLens to minimise KL(final || lens) at every layer over packed contexts of `texts`.

    texts may be a list or a (possibly endless) stream: only cfg.steps x cfg.batch_size contexts are read.
    Returns (lens, history) with history[step] = mean KL over layers on that step's batch.
    """
    from ..data.packing import token_batches

    steps, skip_bos = cfg.steps, cfg.skip_bos
    torch.manual_seed(cfg.seed)
    lens = lens if lens is not None else TunedLens.for_model(model)
    lens.check_model(model)
    batches = list(token_batches(texts, tokenizer, cfg.context_len, cfg.batch_size, max_batches=steps))  # cycled if fewer
    params = [p for p in lens.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr or 1.0, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr or 1e-3, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, max(1, int(cfg.warmup_frac * steps))))
    dev = model_device(model)
    n = len(lens.layer_translators)
    history = []
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc="tuned lens")
    for step in bar:
        ids = batches[step % len(batches)].to(dev)
        resid, final = run_with_residuals(model, ids, include_input=True)  # resid[i] = hidden_states[i]
        start = 1 if skip_bos else 0
        target = final[:, start:].float().log_softmax(-1)
        total = 0.0
        for i in range(n):  # translator i reads hidden_states[i]: the embeddings, then blocks 0..n-2
            logq = lens.logits(model, resid[i][:, start:], i - 1).log_softmax(-1)
            loss = (target.exp() * (target - logq)).sum(-1).mean()
            (loss / n).backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        history.append(total / n)
        if progress:
            bar.set_postfix(kl=f"{history[-1]:.3f}")
        if not math.isfinite(history[-1]):
            raise RuntimeError("Tuned-lens loss became NaN/inf: lower lr or use optimizer='adam'.")
    return lens.eval(), history


# ----------------------------------------------------------------------------- pretrained lenses


def load_pretrained_lens(model_id, repo_id=PUBLIC_LENS_REPO, repo_type="space", revision="main", cache_dir=None):
    """Download lens/<model_id>/{config.json,params.pt} from the public tuned-lens space; RuntimeError if unavailable."""
    from huggingface_hub import hf_hub_download

    folder = f"lens/{model_id}"
    try:
        files = [hf_hub_download(repo_id=repo_id, repo_type=repo_type, revision=revision, subfolder=folder,
                                 filename=f, cache_dir=cache_dir) for f in ("config.json", "params.pt")]
    except Exception as e:  # offline, no such lens, gated: all mean "fit one instead"
        raise RuntimeError(f"No pretrained tuned lens for {model_id!r} at {repo_type} {repo_id}/{folder} "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from e
    return TunedLens.load(Path(files[0]).parent)


def load_pretrained_or_fit(model_id, model, tokenizer=None, texts=None, fit: TunedLensFitConfig | None = None,
                           try_pretrained=True, progress=True):
    """The public lens for model_id when it exists and fits the model, else one fitted as `fit` says.

    Returns (lens, info) with info = {"source": "pretrained" | "fitted", "message": ..., "history": [...]}.
    """
    info = {"source": None, "message": "", "history": []}
    if try_pretrained:
        if str(model_id).startswith(("tiny:", "tiny-trained:")):
            info["message"] = f"{model_id} is a local tiny model; the public tuned-lens space has no lens for it."
        else:
            try:
                lens = load_pretrained_lens(model_id)
                lens.check_model(model)
                info.update(source="pretrained", message=f"loaded the public lens {PUBLIC_LENS_REPO}/lens/{model_id}")
                return lens.to(unembed(model).weight.device).eval(), info
            except (RuntimeError, ValueError) as e:
                info["message"] = str(e)
        print(f"[lens] {info['message']} -> fitting a fresh tuned lens.")
    if tokenizer is None or texts is None:
        raise ValueError("No pretrained lens was used, so fitting needs tokenizer= and texts=.")
    lens, history = fit_tuned_lens(model, tokenizer, texts, fit or TunedLensFitConfig(), progress=progress)
    lens.config["base_model_name_or_path"] = str(model_id)
    info.update(source="fitted", history=history)
    return lens, info


# ----------------------------------------------------------------------------- comparison


def compare_lenses(model, tokenizer, texts, tuned, context_len=256, batch_size=4, max_batches=8, skip_bos=True):
    """Per-layer KL(final || lens) and top-1 agreement with the final prediction, tuned vs logit lens, on held-out
    texts: means over the packed contexts' kept positions (capture.token_mask: the context's start token and the
    documents' separators left out; skip_bos also drops position 0 whatever it holds); n_tokens counts them."""
    from ..data.packing import token_batches

    n = n_layers(model)
    sums = {name: {"kl": torch.zeros(n), "top1": torch.zeros(n)} for name in ("logit_lens", "tuned_lens")}
    tokens = 0
    dev = model_device(model)
    for ids in token_batches(texts, tokenizer, context_len, batch_size, max_batches=max_batches):
        ids = ids.to(dev)
        resid, final = run_with_residuals(model, ids)
        keep = token_mask(ids, tokenizer, drop_first=skip_bos).to(final.device)
        final = final[keep].float()  # [kept positions, V]
        top_final = final.argmax(-1)
        with torch.no_grad():
            for L in range(n):
                h = resid[L][keep.to(resid.device)]
                for name, logits in (("logit_lens", decode(model, h)), ("tuned_lens", tuned.logits(model, h, L))):
                    logits = logits.to(final.device)
                    sums[name]["kl"][L] += kl_to_final(final, logits).sum().cpu()
                    sums[name]["top1"][L] += (logits.argmax(-1) == top_final).sum().cpu()
        tokens += top_final.numel()
    if tokens == 0:
        raise ValueError(f"No full {context_len}-token context in the held-out texts: pass more text or lower context_len.")
    report = {"layers": list(range(n)), "n_tokens": tokens}
    for name, s in sums.items():
        report[name] = {"kl": [round(x, 6) for x in (s["kl"] / tokens).tolist()],
                        "top1_agreement": [round(x, 6) for x in (s["top1"] / tokens).tolist()]}
    return report
