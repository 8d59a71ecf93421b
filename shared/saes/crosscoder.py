"""Acausal crosscoder (Lindsey et al. 2024): one sparse dictionary that reads and writes the residual
stream at several layers at once, trained on activations of all of them from one forward pass.

f = act(sum_l x^l W_enc[l] + b_enc), x_hat^l = f W_dec[:, l] + b_dec[l]; W_enc [n_layers, d_in, d_sae],
W_dec [d_sae, n_layers, d_in]. Each layer's activations are first scaled to a common norm
(E||s_l x^l|| = sqrt(d_in); `scales`, saved with the weights and applied by encode/decode) so no layer
outweighs the others in the loss. Two sparsities (cfg.architecture):
- "l1": ReLU; loss = sum_l ||x^l - x_hat^l||^2 / sum_l Var(x^l) + l1_coefficient * mean over tokens of
  sum_i f_i sum_l ||W_dec[i, l]|| (Lindsey's L1 of per-layer decoder norms: a feature pays for every
  layer it writes to, so layer-local features stay local); decoder norms are left free.
- "topk": each token keeps its k largest pre-activations (ReLU), same reconstruction term plus AuxK
  on the dead latents (as topk.py); each feature's decoder over all layers together is held at unit
  norm, so its per-layer norms share that unit freely (never one unit per layer: that would make
  every feature look persistent).
`decoder_norms()` [d_sae, n_layers] says where each feature writes; `classify_features` names it. It trains
through the SAE trainer: training.trainer.train(TrainConfig(sae=CrosscoderConfig(...))).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal, Mapping, Sequence, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SAEOutput, SparseAutoencoder, geometric_median
from .kernels import all_finite, masked_dead_topk, topk_indices

Sparsity = Literal["topk", "l1"]
ARCHITECTURES: tuple[str, ...] = get_args(Sparsity)
CLASSES = ("persistent", "early-only", "middle-only", "late-only", "mixed", "dead")
MIN_LAYERS = 2
WEIGHTS_FILE = "crosscoder.safetensors"
CFG_FILE = "cfg.json"
WEIGHT_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec", "scales")


@dataclass
class CrosscoderConfig:
    """What a crosscoder is: its layers (block indices, increasing) and their hook names, widths and
    sparsity. d_in (the model's width) may stay None until the model is known."""

    layers: tuple[int, ...]
    """The block indices it reads and writes (>= 2, distinct, increasing)."""

    d_in: int | None = None
    """The model's residual width at every layer; None until the model is known."""

    d_sae: int = 8192
    """Number of features (shared by all layers)."""

    architecture: Sparsity = "topk"
    """The sparsity: "topk" (each token keeps its k largest) or "l1" (ReLU and Lindsey's decoder-norm L1)."""

    k: int = 64
    """topk: features each token keeps."""

    k_aux: int | None = None
    """topk: AuxK's dead features per token; None -> n_layers * d_in // 2."""

    aux_coef: float = 1 / 32
    """topk: weight of the AuxK loss (0: off)."""

    l1_coefficient: float = 1e-3
    """l1: weight of the L1 weighted by the sum of per-layer decoder norms, against the FVU."""

    dead_tokens_threshold: int = 10_000_000
    """Tokens a feature may go without firing before it counts as dead."""

    hook_names: tuple[str, ...] = ()
    """The hook each layer's activations are named by in its files; () -> blocks.<L>.hook_resid_post."""

    seed: int = 0
    """Seed of the initial weights."""

    def __post_init__(self):
        if isinstance(self.layers, (int, str)) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                           for x in self.layers):
            raise ValueError(f"layers={self.layers!r}: give a list of block indices, e.g. [6, 12, 18].")
        self.layers = tuple(int(x) for x in self.layers)
        if len(self.layers) < MIN_LAYERS:
            raise ValueError(f"layers={list(self.layers)}: a crosscoder reads at least {MIN_LAYERS} layers; "
                             "add layers (e.g. [6, 12, 18]) or train a per-layer SAE instead.")
        if list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 0:
            raise ValueError(f"layers={list(self.layers)}: give distinct non-negative block indices in increasing order.")
        self.hook_names = tuple(self.hook_names) or tuple(f"blocks.{x}.hook_resid_post" for x in self.layers)
        if len(self.hook_names) != len(self.layers):
            raise ValueError(f"hook_names has {len(self.hook_names)} names for {len(self.layers)} layers: one per layer.")
        for layer, hook in zip(self.layers, self.hook_names):  # e.g. names left over from dataclasses.replace(layers=...)
            named = re.fullmatch(r"blocks\.(\d+)\.hook_\w+", hook)
            if named and int(named.group(1)) != layer:
                raise ValueError(f"hook name {hook!r} names block {named.group(1)}, its layer is {layer}: "
                                 "pass hook_names=() to name them after the layers.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={self.architecture!r}: use one of {ARCHITECTURES}.")
        if (self.d_in is not None and self.d_in <= 0) or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}.")
        if self.architecture == "topk" and not 0 < self.k <= self.d_sae:
            raise ValueError(f"k={self.k} must be in 1..d_sae={self.d_sae}: lower k or raise d_sae.")
        if self.aux_coef < 0 or (self.k_aux is not None and self.k_aux <= 0):
            raise ValueError(f"aux_coef={self.aux_coef} must be >= 0 and k_aux={self.k_aux} positive (or None).")
        if self.l1_coefficient < 0:
            raise ValueError(f"l1_coefficient={self.l1_coefficient} must be >= 0.")
        if self.dead_tokens_threshold <= 0:
            raise ValueError("dead_tokens_threshold must be a positive number of tokens.")

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def to_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers), "hook_names": list(self.hook_names)}


class Crosscoder(nn.Module):
    """The crosscoder's weights and passes; dense autograd (one [N, d_sae] latent matrix).

    Takes activations stacked as [..., n_layers, d_in] (layer order = cfg.layers). Its training
    forward returns an SAEOutput, so training.step.sae_step steps it like any SAE; under torchrun the
    trainer's `reducer` makes its loss terms each rank's share of the whole batch's, as an SAE's are."""

    reducer = None  # single process; the trainer sets it under torchrun (training.step.sae_step reads it)
    update_dead_tracking = SparseAutoencoder.update_dead_tracking  # needs cfg.d_sae, tokens_since_fired
    dead_mask = SparseAutoencoder.dead_mask
    batch_mean = SparseAutoencoder.batch_mean

    def _centered_sq_sum(self, x: Tensor) -> Tensor:
        """sum of (x - mean over rows)^2 of x [N, ...]: this process's rows, or every rank's under a reducer."""
        if self.reducer is None:
            return (x - x.mean(0)).pow(2).sum()
        return self.reducer.centered_sq_sum(x.flatten(1))

    def __init__(self, cfg: CrosscoderConfig, device=None):
        super().__init__()
        if cfg.d_in is None:
            raise ValueError("the crosscoder config's d_in is None: fill it with the model's width "
                             "(dataclasses.replace(cfg, d_in=layout.d_model(model))).")
        self.cfg = cfg
        n, d, m = cfg.n_layers, cfg.d_in, cfg.d_sae
        gen = torch.Generator().manual_seed(cfg.seed)
        W_dec = torch.randn(m, n, d, generator=gen)
        W_dec /= W_dec.flatten(1).norm(dim=1)[:, None, None]  # unit norm over all layers together
        self.W_enc = nn.Parameter(W_dec.permute(1, 2, 0).contiguous().to(device))  # the decoder's transpose
        self.W_dec = nn.Parameter(W_dec.to(device))
        self.b_enc = nn.Parameter(torch.zeros(m, device=device))
        self.b_dec = nn.Parameter(torch.zeros(n, d, device=device))
        self.register_buffer("scales", torch.ones(n, device=device))
        self.register_buffer("tokens_since_fired", torch.zeros(m, dtype=torch.long, device=device))

    # ---- passes
    def _check_input(self, x: Tensor, finite: bool = True) -> Tensor:
        shape = (self.cfg.n_layers, self.cfg.d_in)
        if x.ndim < 2 or tuple(x.shape[-2:]) != shape:
            raise ValueError(f"the crosscoder takes activations [..., n_layers={shape[0]}, d_in={shape[1]}] "
                             f"(layers {list(self.cfg.layers)} stacked on dim -2), got shape {tuple(x.shape)}.")
        if finite and not all_finite(x):
            raise ValueError("crosscoder input contains NaN or inf activations: load the model in bf16 or fp32.")
        return x.reshape(-1, *shape)

    def normalize(self, x: Tensor) -> Tensor:
        return x.to(self.W_enc.dtype) * self.scales[:, None]

    def encode_pre(self, xn: Tensor) -> Tensor:
        """Pre-activations [N, d_sae] of normalised activations [N, n_layers, d_in]."""
        return torch.addmm(self.b_enc, xn.flatten(1), self.W_enc.flatten(0, 1))

    def activation(self, pre: Tensor) -> Tensor:
        """Dense latents [N, d_sae]: ReLU ("l1") or each row's top k then ReLU ("topk")."""
        if self.cfg.architecture == "l1":
            return F.relu(pre)
        idx = topk_indices(pre.detach(), self.cfg.k)
        return torch.zeros_like(pre).scatter(1, idx, F.relu(pre.gather(1, idx)))

    def decode_normalized(self, z: Tensor) -> Tensor:
        return (z @ self.W_dec.flatten(1)).view(-1, self.cfg.n_layers, self.cfg.d_in) + self.b_dec

    def encode(self, x: Tensor) -> Tensor:
        """Raw activations [..., n_layers, d_in] -> latents [..., d_sae]."""
        lead = x.shape[:-2]
        z = self.activation(self.encode_pre(self.normalize(self._check_input(x))))
        return z.reshape(*lead, self.cfg.d_sae)

    def decode(self, z: Tensor) -> Tensor:
        """Latents [..., d_sae] -> reconstruction [..., n_layers, d_in] in the raw space of each layer."""
        lead = z.shape[:-1]
        x_hat = self.decode_normalized(z.reshape(-1, self.cfg.d_sae).to(self.W_dec.dtype)) / self.scales[:, None]
        return x_hat.reshape(*lead, self.cfg.n_layers, self.cfg.d_in)

    def forward(self, x: Tensor, dead_mask: Tensor | None = None, *, check_finite: bool = True) -> SAEOutput:
        """One training forward on x [N, n_layers, d_in] (TopK: AuxK on the latents dead_mask marks); see the
        module doc for the loss. check_finite=False: x was checked already (see SparseAutoencoder.forward)."""
        x = self._check_input(x, finite=check_finite)
        xn = self.normalize(x)
        pre = self.encode_pre(xn)
        z = self.activation(pre)
        x_hat = self.decode_normalized(z)
        sq = (x_hat - xn).pow(2).sum()
        with torch.no_grad():
            var = self._centered_sq_sum(xn).clamp_min(1e-12)
        fvu = sq / var
        losses = {"fvu": fvu}
        if self.cfg.architecture == "l1":
            # elementwise, not a matmul: under bf16 autocast the penalty stays in float32
            losses["l1"] = self.cfg.l1_coefficient * self.batch_mean((z * self.W_dec.norm(dim=2).sum(1)).sum(1))
        elif self.cfg.aux_coef > 0 and dead_mask is not None and (self.sync_free_aux or bool(dead_mask.any())):
            losses["aux"] = self.cfg.aux_coef * self._aux_loss(pre, dead_mask, (xn - x_hat).detach())
        loss = sum(losses.values())
        l0 = (z > 0).sum(1).float().mean()
        return SAEOutput(x_hat / self.scales[:, None], z, None, loss, (sq / x.shape[0]).detach(),
                         losses.get("aux", fvu.new_zeros(())), fvu, l0.detach(), losses)

    # AuxK without reading the dead count on the host (two GPU syncs a step): k_aux picks whatever the
    # count, the live ones among them weighted 0, the term 0 when none is dead. Same loss up to rounding
    # (tests/test_host_syncs.py); off until a GPU measures it, as TopKSAE.sync_free_aux.
    sync_free_aux = False

    def _aux_loss(self, pre: Tensor, dead_mask: Tensor, err: Tensor) -> Tensor:
        """AuxK (Gao et al. 2024): the dead latents' top k_aux per token reconstruct the error err
        [N, n_layers, d_in] (no b_dec); their squared error over err's variance."""
        k_aux = self.cfg.k_aux or self.cfg.n_layers * self.cfg.d_in // 2
        if not self.sync_free_aux:
            k_aux = min(k_aux, int(dead_mask.sum()))  # the host read: every pick is a dead latent
        idx, is_dead, any_dead = masked_dead_topk(pre.detach(), dead_mask, k_aux)
        picked = F.relu(pre.gather(1, idx)) * is_dead.to(pre.dtype)
        z = torch.zeros_like(pre).scatter(1, idx, picked)
        e_hat = (z @ self.W_dec.flatten(1)).view_as(err)
        return (e_hat - err).pow(2).sum() / self._centered_sq_sum(err).clamp_min(1e-12) * any_dead

    # ---- training constraints (training.step.sae_step calls these)
    def constrain_grads(self) -> None:
        """topk: drop the decoder gradient along each feature's (unit, all-layer) decoder."""
        g = self.W_dec.grad
        if self.cfg.architecture == "topk" and g is not None:
            with torch.no_grad():
                w = self.W_dec.flatten(1)
                g.flatten(1).sub_((g.flatten(1) * w).sum(1, keepdim=True) * w)

    def constrain_weights(self) -> None:
        """topk: each feature's decoder back to unit norm over all its layers together (per-layer norms stay free)."""
        if self.cfg.architecture == "topk":
            with torch.no_grad():
                self.W_dec.div_(self.W_dec.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None])

    @torch.no_grad()
    def initialise(self, sample: Tensor) -> None:
        """From a sample of raw activations [N, n_layers, d_in]: per-layer scales (E||s_l x^l|| =
        sqrt(d_in)) and b_dec[l] = geometric median of the scaled layer-l rows."""
        x = self._check_input(sample).float()
        mean_norm = x.norm(dim=2).mean(0)
        if (mean_norm == 0).any():
            raise ValueError("the sample has a layer of all-zero activations; pass real activations.")
        self.scales.copy_(math.sqrt(self.cfg.d_in) / mean_norm)
        xn = self.normalize(x)
        for layer in range(self.cfg.n_layers):
            self.b_dec[layer] = geometric_median(xn[:, layer])

    # ---- reading the dictionary
    @torch.no_grad()
    def decoder_norms(self) -> Tensor:
        """||W_dec[i, l]|| [d_sae, n_layers] (float32), in the scaled space where layers are comparable."""
        return self.W_dec.detach().float().norm(dim=2).cpu()


# --------------------------------------------------------------------------- classification

def classify_features(norms: Tensor, fired: Tensor | None = None, *, dominant: float = 0.7,
                      persistent: float = 0.2) -> list[str]:
    """One class per feature from its decoder norms per layer `norms` [d_sae, n_layers].

    Rule: share r_l = ||d_l|| / sum_l ||d_l||. "dead" if the feature never fired (`fired` [d_sae]
    False) or its decoder is zero; else "early-only" if r_first >= dominant, "late-only" if
    r_last >= dominant, "middle-only" if some other layer's r_l >= dominant; else "persistent" if
    every r_l >= persistent; else "mixed". dominant must be > 0.5 (one layer at most) and persistent
    <= 1 / n_layers (reachable).
    """
    if norms.ndim != 2 or norms.shape[1] < MIN_LAYERS:
        raise ValueError(f"norms must be [d_sae, n_layers >= {MIN_LAYERS}], got shape {tuple(norms.shape)}.")
    n = norms.shape[1]
    check_rule(n, dominant, persistent)
    if fired is not None and fired.shape != norms.shape[:1]:
        raise ValueError(f"fired has shape {tuple(fired.shape)}, norms has {norms.shape[0]} features.")
    norms = norms.float()
    total = norms.sum(1)
    share = norms / total.clamp_min(1e-12)[:, None]
    top_share, top = share.max(1)
    dead = (total <= 0) | (torch.zeros_like(total, dtype=torch.bool) if fired is None else ~fired.bool().cpu())
    place = {0: "early-only", n - 1: "late-only"}
    return ["dead" if d else place.get(t, "middle-only") if s >= dominant else "persistent" if m >= persistent
            else "mixed" for d, s, t, m in zip(dead.tolist(), top_share.tolist(), top.tolist(),
                                                share.min(1).values.tolist())]


def check_rule(n_layers: int, dominant: float, persistent: float) -> None:
    """One-line ValueError unless dominant is in (0.5, 1] (one layer at most dominates) and persistent
    in (0, 1/n_layers] (every layer can reach it)."""
    if not 0.5 < dominant <= 1:
        raise ValueError(f"dominant share {dominant}: must be in (0.5, 1] so that one layer at most dominates.")
    if not 0 < persistent <= 1 / n_layers:
        raise ValueError(f"persistent share {persistent}: must be in (0, 1/n_layers = {1 / n_layers:.3g}] "
                         f"to be reachable with {n_layers} layers.")


def classification_rule(dominant: float = 0.7, persistent: float = 0.2) -> str:
    """The rule of classify_features in words, for reports."""
    return (f"share r_l = ||W_dec[i,l]|| / sum_l ||W_dec[i,l]|| (layers scaled to a common norm); dead: never fired "
            f"on the evaluation tokens; early-only / middle-only / late-only: the first / a middle / the last "
            f"layer's r_l >= {dominant}; persistent: every r_l >= {persistent}; mixed: the rest")


def count_classes(classes: Sequence[str]) -> dict[str, int]:
    """{class: count} for every class in CLASSES (zeros included), in that order."""
    return {c: sum(1 for x in classes if x == c) for c in CLASSES}


def stacked(rows: Iterable[Mapping[int, Tensor]], layers: Sequence[int]) -> Iterator[Tensor]:
    """{layer: [n, d]} dicts (capture.residual_rows, a Block's batches) -> [n, n_layers, d] in `layers` order."""
    for part in rows:
        yield torch.stack([part[layer] for layer in layers], dim=1)


# --------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(xc: Crosscoder, batches: Iterable[Tensor]) -> dict:
    """Held-out reconstruction per layer over batches [N, n_layers, d_in], in each layer's raw space:
    fvu_l = sum ||x^l - x_hat^l||^2 / sum ||x^l - mean x^l||^2, var_expl = 1 - fvu; also overall (scaled
    space, as the loss), L0 and which features fired (`fired` [d_sae] bool, for classify_features)."""
    n_l, d = xc.cfg.n_layers, xc.cfg.d_in
    sq = torch.zeros(n_l, dtype=torch.float64)
    sum_x = torch.zeros(n_l, d, dtype=torch.float64)
    sum_sq = torch.zeros(n_l, dtype=torch.float64)
    fired = torch.zeros(xc.cfg.d_sae, dtype=torch.bool)
    tokens, l0 = 0, 0.0
    for x in batches:
        z = xc.encode(x.to(xc.W_enc.device))  # checks the shape and finiteness
        x = x.to(z.device).float().reshape(-1, n_l, d)
        x_hat = xc.decode(z)
        sq += (x_hat - x).double().pow(2).sum((0, 2)).cpu()
        sum_x += x.double().sum(0).cpu()
        sum_sq += x.double().pow(2).sum((0, 2)).cpu()
        fired |= (z > 0).any(0).cpu()
        l0 += float((z > 0).sum())
        tokens += x.shape[0]
    if tokens == 0:
        raise ValueError("evaluate got no activations: give it at least one batch of held-out tokens.")
    var = (sum_sq - sum_x.pow(2).sum(1) / tokens).clamp_min(1e-12)
    fvu = sq / var
    w = xc.scales.double().cpu() ** 2  # the overall figure in the scaled space, where layers weigh alike
    overall = float((sq * w).sum() / (var * w).sum())
    per_layer = [{"layer": layer, "hook_name": hook, "fvu": float(f), "var_expl": float(1 - f)}
                 for layer, hook, f in zip(xc.cfg.layers, xc.cfg.hook_names, fvu)]
    return {"per_layer": per_layer, "fvu": overall, "var_expl": 1 - overall, "l0": l0 / tokens,
            "tokens": tokens, "alive": int(fired.sum()), "fired": fired}


def model_batches(model, tokenizer, token_batches: Iterable, layers: Sequence[int], device=None) -> Iterator[Tensor]:
    """Stacked activations [n, n_layers, d] of each token batch (one forward per batch, special tokens dropped)."""
    from ..model.capture import residual_rows
    from ..model.layout import model_device

    device = device if device is not None else model_device(model)
    return stacked(residual_rows(model, tokenizer, token_batches, layers, device=device), layers)


# --------------------------------------------------------------------------- save / load

def save(xc: Crosscoder, folder: str | Path, **metadata) -> Path:
    """Write folder/crosscoder.safetensors (W_enc [n_layers, d_in, d_sae], b_enc, W_dec [d_sae, n_layers,
    d_in], b_dec [n_layers, d_in], scales [n_layers]) and folder/cfg.json (the config: layers, hook names,
    d_in, d_sae, architecture, plus the scales and any `metadata` such as model_name)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in xc.state_dict().items() if k in WEIGHT_KEYS}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    cfg = {**metadata, **xc.cfg.to_dict(), "scales": [float(s) for s in xc.scales],
           "weights": WEIGHTS_FILE, "format": "acausal-crosscoder"}
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=1))
    return folder


def load(folder: str | Path, *, layers: Sequence[int] | None = None, device=None) -> Crosscoder:
    """The crosscoder saved in `folder`; with `layers`, refuse one trained on another layer set."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CFG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ValueError(f"{folder} holds no crosscoder: expected {CFG_FILE} and {WEIGHTS_FILE} (written by crosscoder.save).")
    saved = json.loads((folder / CFG_FILE).read_text())
    if layers is not None and [int(x) for x in layers] != list(saved.get("layers", [])):
        raise ValueError(f"{folder} holds a crosscoder over layers {saved.get('layers')}, not {list(layers)}: "
                         "load it with its own layers or train one for these.")
    names = set(CrosscoderConfig.__dataclass_fields__)
    cfg = CrosscoderConfig(**{k: v for k, v in saved.items() if k in names})
    xc = Crosscoder(cfg, device=device)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    for key in WEIGHT_KEYS:
        want = tuple(getattr(xc, key).shape)
        if key not in tensors or tuple(tensors[key].shape) != want:
            got = tuple(tensors[key].shape) if key in tensors else "missing"
            raise ValueError(f"{folder / WEIGHTS_FILE}: {key} is {got}, its cfg.json says {want}; the folder is damaged.")
    with torch.no_grad():
        for key in WEIGHT_KEYS:
            getattr(xc, key).copy_(tensors[key])
    return xc
