"""Feature statistics over a token stream: density, activation histograms, top-activating contexts,
an interestingness ranking, logit effects, and the per-feature entries of `feature_catalog.json`.

`FeatureStats` is a streaming accumulator whose memory is O(d_sae * top_m * window), independent
of the number of tokens: per latent a fire count, a sum and max of the activation when fired, a
histogram over fixed log-spaced bins, and the top_m contexts (the 2*window+1 token ids around the
peak and that latent's activation at each of them), merged batch by batch with tensor top-k (no
Python heaps), on the SAE's device. A latent "fires" on a token when its activation is > 0. Each
top context comes from a different sequence of its batch (its peak there), so the list is not one
passage shifted by a token.

Logit effect convention (SAELens / Neuronpedia "logit weight distribution", read through
TransformerLens, whose W_U has the final norm's weight folded in): a latent's decoder row times the
final norm's per-dimension gain gamma (LayerNorm's or RMSNorm's weight; Gemma's 1 + w) times the
unembedding, (W_dec[j] * gamma) @ W_U^T, with no norm bias, centring or soft-cap: the direct effect on
the logits of adding the direction, up to the norm's one per-token scale 1 / rms (and, for a
LayerNorm, the direction's mean over d_model). TransformerLens also centres W_U over the vocabulary,
which shifts one latent's logits by one constant and leaves their order unchanged.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ..model.capture import capture_residuals, token_mask
from ..model.layout import check_layers, final_norm, model_device, unembed

PAD = -1  # token id of a window position outside its sequence


def _float_acc(device: torch.device) -> torch.dtype:
    """float64 sums where the device has it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


class FeatureStats:
    """Streaming per-latent statistics; `update` with token ids [B, T] and their sparse latents.

    Bins: n_bins log-spaced bins between hist_min and hist_max (values outside fall in the end
    bins); `hist_edges` holds the n_bins+1 edges.
    """

    def __init__(self, d_sae: int, top_m: int = 20, window: int = 8, n_bins: int = 28,
                 hist_min: float = 1e-3, hist_max: float = 1e4, device="cpu"):
        if d_sae <= 0 or top_m <= 0 or window < 0 or n_bins <= 0:
            raise ValueError(f"d_sae, top_m and n_bins must be positive and window >= 0, got d_sae={d_sae}, "
                             f"top_m={top_m}, window={window}, n_bins={n_bins}.")
        if not 0 < hist_min < hist_max:
            raise ValueError(f"need 0 < hist_min < hist_max, got {hist_min}, {hist_max}.")
        dev = self.device = torch.device(device)
        self.d_sae, self.top_m, self.window, self.n_bins = d_sae, top_m, window, n_bins
        self.hist_min, self.hist_max = float(hist_min), float(hist_max)
        self.hist_edges = torch.logspace(math.log10(hist_min), math.log10(hist_max), n_bins + 1, dtype=torch.float64)
        acc = _float_acc(dev)
        self.n_tokens = 0
        self.fire_count = torch.zeros(d_sae, dtype=torch.long, device=dev)
        self.act_sum = torch.zeros(d_sae, dtype=acc, device=dev)
        self.act_max = torch.zeros(d_sae, dtype=torch.float32, device=dev)
        self.hist = torch.zeros(d_sae, n_bins, dtype=torch.long, device=dev)
        w = 2 * window + 1
        self.top_vals = torch.full((d_sae, top_m), -math.inf, dtype=torch.float32, device=dev)  # descending
        self.top_ids = torch.full((d_sae, top_m, w), PAD, dtype=torch.long, device=dev)
        self.top_acts = torch.zeros(d_sae, top_m, w, dtype=torch.float32, device=dev)

    # ------------------------------------------------------------------ derived statistics
    @property
    def fire_rate(self) -> Tensor:
        """Fraction of the analysed tokens on which each latent fired."""
        return self.fire_count.double().cpu() / max(self.n_tokens, 1)

    @property
    def mean_when_fired(self) -> Tensor:
        """Mean activation over the tokens where the latent fired (0 for a dead latent)."""
        return (self.act_sum.double().cpu() / self.fire_count.cpu().clamp_min(1)).float()

    def tensors(self) -> dict[str, Tensor]:
        """Every stored tensor by name (their sizes depend on d_sae, top_m, window, n_bins only)."""
        return {k: getattr(self, k) for k in ("fire_count", "act_sum", "act_max", "hist", "top_vals", "top_ids",
                                              "top_acts")}

    # ------------------------------------------------------------------ the streaming update
    @torch.no_grad()
    def update(self, token_ids: Tensor, vals: Tensor, idx: Tensor | None = None, mask: Tensor | None = None) -> None:
        """Add one batch: token_ids [B, T]; latents as sparse vals/idx [B, T, k] (or dense vals
        [B, T, d_sae] with idx None); mask [B, T] (True = count this token; default all)."""
        if token_ids.ndim != 2:
            raise ValueError(f"token_ids must be [batch, seq], got shape {tuple(token_ids.shape)}.")
        B, T = token_ids.shape
        dev = self.device
        vals, idx = self._sparse(vals.to(dev, torch.float32), idx, B, T)
        tokens = token_ids.to(dev, torch.long)
        keep = torch.ones(B, T, dtype=torch.bool, device=dev) if mask is None else mask.to(dev, torch.bool)
        vals = vals * keep[..., None]  # latents of masked tokens count as silent
        self.n_tokens += int(keep.sum())

        fired = vals > 0
        lat, v = idx[fired], vals[fired]
        if lat.numel() == 0:
            return
        self._count(lat, v)
        bi, ti, _ = fired.nonzero(as_tuple=True)
        lat, v, bi, ti, rank = self._candidates(lat, v, bi, ti, B)
        if lat.numel() == 0:
            return
        ids, acts = self._windows(tokens, vals, idx, lat, bi, ti)
        self._merge_top(lat, v, ids, acts, rank)

    def _sparse(self, vals: Tensor, idx: Tensor | None, B: int, T: int) -> tuple[Tensor, Tensor]:
        """The batch's latents as vals/idx [B, T, k] (dense vals [B, T, d_sae] cut to their largest k, the most
        any token fires), checked."""
        if idx is None:
            if vals.shape != (B, T, self.d_sae):
                raise ValueError(f"dense latents must be [B, T, d_sae]={B, T, self.d_sae}, got {tuple(vals.shape)}.")
            k = max(int((vals > 0).sum(-1).max()), 1) if vals.numel() else 1
            vals, idx = vals.topk(k, dim=-1)
        if vals.shape[:2] != (B, T) or idx.shape != vals.shape:
            raise ValueError(f"vals and idx must both be [B, T, k] with B, T = {B, T}, got {tuple(vals.shape)} "
                             f"and {tuple(idx.shape)}.")
        return vals, idx.to(self.device, torch.long)

    def _count(self, lat: Tensor, v: Tensor) -> None:
        """Add each firing (latent `lat`, activation `v`) to the counts, sums, maxima and histogram."""
        self.fire_count.index_add_(0, lat, torch.ones_like(lat))
        self.act_sum.index_add_(0, lat, v.to(self.act_sum.dtype))
        self.act_max.scatter_reduce_(0, lat, v, reduce="amax")
        lo, hi = math.log10(self.hist_min), math.log10(self.hist_max)
        b = ((v.log10() - lo) / (hi - lo) * self.n_bins).floor().clamp(0, self.n_bins - 1).long()
        self.hist.view(-1).index_add_(0, lat * self.n_bins + b, torch.ones_like(lat))

    def _candidates(self, lat: Tensor, v: Tensor, bi: Tensor, ti: Tensor, B: int):
        """The firings that may enter a latent's top contexts: each (latent, sequence)'s peak, then each
        latent's best top_m of those above its current m-th; with their rank among the latent's new ones."""
        order = v.argsort(descending=True, stable=True)
        lat, v, bi, ti = lat[order], v[order], bi[order], ti[order]
        order = (lat * B + bi).argsort(stable=True)  # groups by (latent, sequence), peaks first
        lat, v, bi, ti = lat[order], v[order], bi[order], ti[order]
        first = torch.ones_like(lat, dtype=torch.bool)
        first[1:] = (lat[1:] != lat[:-1]) | (bi[1:] != bi[:-1])
        lat, v, bi, ti = lat[first], v[first], bi[first], ti[first]
        order = v.argsort(descending=True, stable=True)
        lat, v, bi, ti = lat[order], v[order], bi[order], ti[order]
        order = lat.argsort(stable=True)
        lat, v, bi, ti = lat[order], v[order], bi[order], ti[order]
        start = torch.ones_like(lat, dtype=torch.bool)
        start[1:] = lat[1:] != lat[:-1]
        pos = torch.arange(lat.numel(), device=lat.device)
        rank = pos - torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), 0).values
        cand = (rank < self.top_m) & (v > self.top_vals[lat, -1])
        return lat[cand], v[cand], bi[cand], ti[cand], rank[cand]

    def _merge_top(self, lat: Tensor, v: Tensor, ids: Tensor, acts: Tensor, rank: Tensor) -> None:
        """Merge the candidates (their context windows `ids` / `acts`) into each latent's top_m, descending."""
        dev = self.device
        rows, slot = lat.unique(return_inverse=True)
        R, m, w = rows.numel(), self.top_m, 2 * self.window + 1
        new_vals = torch.full((R, m), -math.inf, device=dev)
        new_ids = torch.full((R, m, w), PAD, dtype=torch.long, device=dev)
        new_acts = torch.zeros(R, m, w, device=dev)
        new_vals[slot, rank], new_ids[slot, rank], new_acts[slot, rank] = v, ids, acts
        all_vals = torch.cat([self.top_vals[rows], new_vals], 1)
        best = all_vals.topk(m, dim=1).indices  # sorted, descending
        self.top_vals[rows] = all_vals.gather(1, best)
        gi = best[..., None].expand(R, m, w)
        self.top_ids[rows] = torch.cat([self.top_ids[rows], new_ids], 1).gather(1, gi)
        self.top_acts[rows] = torch.cat([self.top_acts[rows], new_acts], 1).gather(1, gi)

    def _windows(self, tokens: Tensor, vals: Tensor, idx: Tensor, lat: Tensor, bi: Tensor, ti: Tensor,
                 chunk: int = 4096) -> tuple[Tensor, Tensor]:
        """Token ids [C, 2w+1] around each candidate peak (PAD outside the sequence) and the
        candidate latent's activation at each of those tokens."""
        T = tokens.shape[1]
        offsets = torch.arange(-self.window, self.window + 1, device=tokens.device)
        ids_out, acts_out = [], []
        for s in range(0, lat.numel(), chunk):
            l, b, t = lat[s:s + chunk], bi[s:s + chunk], ti[s:s + chunk]
            pos = t[:, None] + offsets
            inside = (pos >= 0) & (pos < T)
            pos = pos.clamp(0, T - 1)
            ids_out.append(torch.where(inside, tokens[b[:, None], pos], PAD))
            hit = idx[b[:, None], pos] == l[:, None, None]  # [c, w, k]
            acts_out.append((vals[b[:, None], pos] * hit).sum(-1) * inside)
        return torch.cat(ids_out), torch.cat(acts_out)


@torch.no_grad()
def collect(model, tokenizer, sae, layer, token_batches: Iterable, n_tokens: int, *, top_m: int = 20,
            window: int = 8, drop_first: bool = False, progress: bool = False, **hist) -> FeatureStats:
    """One streaming pass: the SAE's latents at `layer` on the kept tokens (BOS/pad/special
    dropped, `capture.token_mask`) of `token_batches`, until exactly `n_tokens` are analysed (or
    the batches run out). Statistics live on the SAE's device; **hist goes to FeatureStats."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be a positive number of tokens, got {n_tokens}.")
    (layer,) = check_layers(model, [layer])
    stats = FeatureStats(sae.cfg.d_sae, top_m=top_m, window=window, device=sae.device, **hist)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_tokens, desc="feature stats", unit="tok")
    for batch in token_batches:
        left = n_tokens - stats.n_tokens
        if left <= 0:
            break
        ids = batch["input_ids"] if isinstance(batch, Mapping) else batch
        attn = batch.get("attention_mask") if isinstance(batch, Mapping) else None
        keep = token_mask(ids.to(model_device(model)), tokenizer, attn, drop_first=drop_first)
        keep &= keep.reshape(-1).cumsum(0).reshape(keep.shape) <= left
        x = capture_residuals(model, ids, [layer], attention_mask=attn)[layer]
        rows = x[keep.to(x.device)].to(sae.device, sae.dtype)
        v, i = sae.encode_sparse(rows) if rows.shape[0] else (rows.new_zeros(0, 1), rows.new_zeros(0, 1).long())
        keep = keep.to(sae.device)
        vals = torch.zeros(*keep.shape, v.shape[1], device=sae.device)
        index = torch.zeros(*keep.shape, v.shape[1], dtype=torch.long, device=sae.device)
        vals[keep], index[keep] = v.float(), i
        before = stats.n_tokens
        stats.update(ids, vals, index, keep)
        if bar is not None:
            bar.update(stats.n_tokens - before)
    if bar is not None:
        bar.close()
    return stats


def interestingness(stats: FeatureStats) -> Tensor:
    """The originals' score: mean_when_fired * log1p(fire_count), per latent."""
    return stats.mean_when_fired.double() * torch.log1p(stats.fire_count.double().cpu())


def rank_features(stats: FeatureStats, top_n: int | None = None, min_fires: int = 5,
                  max_fire_rate: float = 0.1) -> list[tuple[int, float]]:
    """(latent id, score) by descending interestingness, leaving out dead / rare latents (fewer than
    min_fires firings) and near-always-on ones (fire rate above max_fire_rate)."""
    if min_fires < 1 or not 0 < max_fire_rate <= 1:
        raise ValueError(f"need min_fires >= 1 and 0 < max_fire_rate <= 1, got {min_fires}, {max_fire_rate}.")
    score = interestingness(stats)
    ok = (stats.fire_count.cpu() >= min_fires) & (stats.fire_rate <= max_fire_rate)
    ids = ok.nonzero().flatten()
    order = score[ids].argsort(descending=True, stable=True)
    ids = ids[order][:top_n] if top_n is not None else ids[order]
    return [(int(i), float(score[i])) for i in ids]


@torch.no_grad()
def final_norm_gain(model, chunk: int = 512) -> Tensor:
    """[d_model] float32 on the unembedding's device: the final norm's per-dimension gain (ones without a
    final norm), measured rather than read from its weight, so every parametrisation (LayerNorm,
    RMSNorm's w, Gemma's 1 + w) gives the same thing: for an input x of mean 0, any of these norms maps
    x to gain * x / rms(x) + bias, so norm(x) - norm(-x) = 2 * gain * x / rms(x)."""
    W_U = unembed(model).weight
    d = W_U.shape[1]
    norm = final_norm(model)
    if norm is None:
        return torch.ones(d, device=W_U.device)
    p = next(norm.parameters(), None)
    dev = p.device if p is not None else W_U.device
    norm = copy.deepcopy(norm).to(dev, torch.float32)  # a float32 copy: no bf16 rounding in the gain
    gain = []
    for start in range(0, d, chunk):
        i = torch.arange(start, min(start + chunk, d), device=dev)
        x = torch.zeros(len(i), d, device=dev)
        x[torch.arange(len(i)), i] = 100.0  # +c at i, -c at the next dimension: mean 0, rms c * sqrt(2 / d);
        x[torch.arange(len(i)), (i + 1) % d] = -100.0  # a large c leaves the norm's eps negligible
        out = norm(x) - norm(-x)
        gain.append(out[torch.arange(len(i)), i] * (100.0 * (2.0 / d) ** 0.5) / (2 * 100.0))
    return torch.cat(gain).to(W_U.device, torch.float32)


@torch.no_grad()
def logit_effects(model, sae, latent_ids: Sequence[int], k: int = 10, tokenizer=None,
                  vocab_chunk: int = 32768) -> dict[int, dict]:
    """Tokens each latent's decoder direction promotes and suppresses: the k largest and smallest
    entries of (W_dec[j] * gamma) @ W_U^T, gamma the final norm's gain (final_norm_gain; see the module
    docstring). Each list holds {"token_id", "logit"} (and "token" when a tokenizer is given).
    W_U is read in float32 `vocab_chunk` rows at a time: a whole float32 copy of a 256k-token
    unembedding would be 2.4 GB beside the model on a T4."""
    W_U = unembed(model).weight
    if W_U.shape[1] != sae.cfg.d_in:
        raise ValueError(f"the SAE's d_in={sae.cfg.d_in} differs from the model's d_model={W_U.shape[1]}: "
                         "pass the model the SAE was trained on.")
    ids = torch.as_tensor(list(latent_ids), dtype=torch.long)
    if ids.numel() and (ids.min() < 0 or ids.max() >= sae.cfg.d_sae):
        raise ValueError(f"latent_ids must lie in 0..{sae.cfg.d_sae - 1}.")
    dirs = sae.W_dec[ids.to(sae.device)].to(W_U.device, torch.float32) * final_norm_gain(model)
    logits = torch.cat([(dirs @ W_U[i:i + vocab_chunk].float().t()).cpu()
                        for i in range(0, W_U.shape[0], vocab_chunk)], dim=1)
    k = min(k, logits.shape[1])
    top, bottom = logits.topk(k, dim=1), logits.topk(k, dim=1, largest=False)

    def row(values, indices):
        out = []
        for val, tid in zip(values.tolist(), indices.tolist()):
            item = {"token_id": tid, "logit": val}
            if tokenizer is not None:
                item["token"] = tokenizer.decode([tid])
            out.append(item)
        return out

    return {int(j): {"promoted": row(top.values[n], top.indices[n]),
                     "suppressed": row(bottom.values[n], bottom.indices[n])} for n, j in enumerate(ids.tolist())}


def top_examples(stats: FeatureStats, latent: int, tokenizer, n: int | None = None) -> list[dict]:
    """A latent's stored top contexts, best first: {activation, text, tokens, token_activations,
    peak} (peak = index of the max token in tokens; PAD positions left out)."""
    out = []
    vals, ids, acts = stats.top_vals[latent].cpu(), stats.top_ids[latent].cpu(), stats.top_acts[latent].cpu()
    for e in range(stats.top_m if n is None else min(n, stats.top_m)):
        if not math.isfinite(float(vals[e])):
            break
        inside = ids[e] != PAD
        tok_ids = ids[e][inside].tolist()
        peak = stats.window - int((~inside[:stats.window]).sum())
        out.append({"activation": float(vals[e]), "text": tokenizer.decode(tok_ids),
                    "tokens": [tokenizer.decode([t]) for t in tok_ids],
                    "token_activations": [round(float(a), 6) for a in acts[e][inside]], "peak": peak})
    return out


def catalog_entries(stats: FeatureStats, ranked: Sequence[tuple[int, float]], tokenizer, *,
                    labels: Mapping[int, Mapping] | None = None, effects: Mapping[int, Mapping] | None = None,
                    n_examples: int = 5) -> list[dict]:
    """The `features` list of feature_catalog.json for ranked (id, score) pairs (rank_features):
    {id, rank, name, desc, confidence, fire_rate, mean_when_fired, score, top_activating_examples
    [{activation, text, ...}]} plus fire_count, max_activation, histogram and, when given,
    logit_effects. labels[id] may set name/desc/confidence (a judge's); else name "latent <id>",
    desc "" and confidence None."""
    labels, effects = labels or {}, effects or {}
    rate, mean = stats.fire_rate, stats.mean_when_fired
    counts, maxes, hist = stats.fire_count.cpu(), stats.act_max.cpu(), stats.hist.cpu()
    edges = [float(e) for e in stats.hist_edges]
    entries = []
    for rank, (j, score) in enumerate(ranked, start=1):
        lab = labels.get(j, {})
        entry = {"id": int(j), "rank": rank, "name": lab.get("name", f"latent {j}"), "desc": lab.get("desc", ""),
                 "confidence": lab.get("confidence"), "fire_rate": float(rate[j]),
                 "mean_when_fired": float(mean[j]), "score": float(score),
                 "top_activating_examples": top_examples(stats, j, tokenizer, n_examples),
                 "fire_count": int(counts[j]), "max_activation": float(maxes[j]),
                 "histogram": {"edges": edges, "counts": hist[j].tolist()}}
        if j in effects:
            entry["logit_effects"] = effects[j]
        entries.append(entry)
    return entries


@dataclass
class DetectionContexts:
    """Held-out contexts for the judge's detection test: `ids` [N, width], windows cut end to end from
    token batches (none holding a special token: BOS, EOS, pad), and `acts` [N, width, L], the
    activation of each of `latents` (L ids) at each of their tokens, read in the full sequence."""

    latents: list[int]
    ids: Tensor
    acts: Tensor


@torch.no_grad()
def detection_contexts(model, tokenizer, sae, layer, token_batches: Iterable, latents: Sequence[int],
                       n_tokens: int, width: int = 17) -> DetectionContexts:
    """Windows of `width` tokens from position 1 of each row of `token_batches` (text the statistics did
    not see), windows with a special token dropped, until about n_tokens tokens; each of `latents`'
    activation at every token, from one forward of the whole row (so a window's left context counts)."""
    if n_tokens <= 0 or width <= 0:
        raise ValueError(f"n_tokens and width must be positive, got {n_tokens}, {width}.")
    (layer,) = check_layers(model, [layer])
    cols = torch.as_tensor([int(j) for j in latents], dtype=torch.long)
    if cols.numel() and (cols.min() < 0 or cols.max() >= sae.cfg.d_sae):
        raise ValueError(f"latents must lie in 0..{sae.cfg.d_sae - 1}.")
    ids_out, acts_out, have = [], [], 0
    for batch in token_batches:
        if have >= n_tokens:
            break
        ids = batch["input_ids"] if isinstance(batch, Mapping) else batch
        attn = batch.get("attention_mask") if isinstance(batch, Mapping) else None
        n_win = (ids.shape[1] - 1) // width
        if n_win < 1:
            raise ValueError(f"rows of {ids.shape[1]} tokens hold no window of width={width} after position 0")
        keep = token_mask(ids.to(model_device(model)), tokenizer, attn).cpu()
        x = capture_residuals(model, ids, [layer], attention_mask=attn)[layer]
        flat = x.reshape(-1, x.shape[-1])
        z = torch.cat([sae.encode(c.to(sae.device, sae.dtype))[:, cols.to(sae.device)].float().cpu()
                       for c in flat.split(1024)]).reshape(*ids.shape, cols.numel())
        span = slice(1, 1 + n_win * width)
        win_ids = ids[:, span].cpu().reshape(-1, width)
        win_acts = (z[:, span] * keep[:, span, None]).reshape(-1, width, cols.numel())
        ok = keep[:, span].reshape(-1, width).all(1)
        ids_out.append(win_ids[ok])
        acts_out.append(win_acts[ok])
        have += int(ok.sum()) * width
    if not ids_out or sum(len(i) for i in ids_out) == 0:
        raise ValueError("the token batches gave no window without special tokens: pass more held-out text")
    return DetectionContexts([int(j) for j in cols], torch.cat(ids_out), torch.cat(acts_out))


def _shown(tokenizer, ids: Sequence[int], acts: Sequence[float], drop: set[int]) -> dict:
    """A context as the judge reads it, {text, tokens, acts}, with PAD and special tokens left out."""
    pairs = [(int(t), float(a)) for t, a in zip(ids, acts) if int(t) != PAD and int(t) not in drop]
    toks = [t for t, _ in pairs]
    return {"text": tokenizer.decode(toks), "tokens": [tokenizer.decode([t]) for t in toks],
            "acts": [round(a, 6) for _, a in pairs]}


def quantile_sample(n_items: int, n: int, n_quantiles: int, rng) -> list[tuple[int, int]]:
    """(index, quantile) of n items drawn from n_items ranked strongest first: the ranking cut into
    n_quantiles equal slices (quantile 0 the strongest), n // n_quantiles drawn at random from each and
    one more from each of the first n % n_quantiles (Delphi's detection sampling); all when n_items <= n."""
    if n_items <= n:
        return [(i, min(n_quantiles - 1, i * n_quantiles // max(n_items, 1))) for i in range(n_items)]
    out = []
    for q in range(n_quantiles):
        lo, hi = q * n_items // n_quantiles, (q + 1) * n_items // n_quantiles
        take = min(hi - lo, n // n_quantiles + (q < n % n_quantiles))
        out += [(i, q) for i in sorted(rng.sample(range(lo, hi), take))]
    return out


DETECTION_PROTOCOL = {
    "explain": "the latent's strongest contexts from the analysed stream (one per sequence, 17 tokens around "
               "the peak), deduplicated by text",
    "activating": "held-out windows (text after the analysed stream) where the latent fires, sampled across "
                  "10 quantiles of their peak activation (Delphi's detection sampling)",
    "non_activating": "held-out windows where the latent's activation is measured 0 on every token",
    "special_tokens": "none shown in any context (BOS, EOS, pad left out)",
    "dedupe": "by text: no text twice, none shared between the explained and the scored contexts",
}


def judge_evidence(stats: FeatureStats, ranked: Sequence[tuple[int, float]], tokenizer,
                   contexts: DetectionContexts, n_score: int = 10, n_quantiles: int = 10,
                   seed: int = 0) -> list[dict]:
    """What judge.label_features reads for each ranked latent (DETECTION_PROTOCOL): its stored top
    contexts to explain, and from `contexts` (detection_contexts on held-out text) n_score activating
    windows across n_quantiles activation quantiles and n_score windows where it is measured silent."""
    import random

    if n_score < 1 or n_quantiles < 1:
        raise ValueError(f"n_score and n_quantiles must be >= 1, got {n_score}, {n_quantiles}.")
    column = {j: c for c, j in enumerate(contexts.latents)}
    missing = [int(j) for j, _ in ranked if int(j) not in column]
    if missing:
        raise ValueError(f"latents {missing} are not in the detection contexts: measure them (detection_contexts)")
    drop = {int(t) for t in getattr(tokenizer, "all_special_ids", [])}
    texts = tokenizer.batch_decode(contexts.ids.tolist())
    rate, mean = stats.fire_rate, stats.mean_when_fired
    out = []
    for j, _ in ranked:
        j = int(j)
        top, seen = [], set()
        for e in range(stats.top_m):
            if not math.isfinite(float(stats.top_vals[j, e])):
                break
            ex = _shown(tokenizer, stats.top_ids[j, e].tolist(), stats.top_acts[j, e].tolist(), drop)
            if ex["text"] not in seen and any(a > 0 for a in ex["acts"]):
                seen.add(ex["text"])
                top.append(ex)
        acts = contexts.acts[:, :, column[j]]
        peak = acts.amax(1)
        fired = [i for i in peak.argsort(descending=True, stable=True).tolist() if peak[i] > 0]
        fired = [i for i in fired if texts[i] not in seen and not seen.add(texts[i])]
        silent = [i for i in (acts == 0).all(1).nonzero().flatten().tolist()
                  if texts[i] not in seen and not seen.add(texts[i])]
        rng = random.Random(f"{seed}:{j}")
        pos = []
        for i, q in quantile_sample(len(fired), n_score, n_quantiles, rng):
            pos.append({**_shown(tokenizer, contexts.ids[fired[i]].tolist(), acts[fired[i]].tolist(), drop),
                        "quantile": q})
        neg = [_shown(tokenizer, contexts.ids[i].tolist(), acts[i].tolist(), drop)
               for i in sorted(rng.sample(silent, min(n_score, len(silent))))]
        out.append({"id": j, "top_examples": top, "activating_examples": pos, "non_activating_examples": neg,
                    "fire_rate": float(rate[j]), "mean_when_fired": float(mean[j])})
    return out


@torch.no_grad()
def decoder_neighbours(W_dec: Tensor, latent_ids: Sequence[int], n: int = 5, chunk: int = 256) -> dict[int, list[dict]]:
    """Each latent's n nearest other latents by cosine similarity of decoder rows (W_dec [d_sae, d_in]),
    highest first: {id: [{"id", "cosine"}]}. Compares against every latent, `chunk` query rows at a time,
    so memory is chunk x d_sae whatever the dictionary size. A zero row has cosine 0 with everything."""
    ids = [int(j) for j in latent_ids]
    d_sae = W_dec.shape[0]
    if any(not 0 <= j < d_sae for j in ids):
        raise ValueError(f"latent_ids must lie in 0..{d_sae - 1}.")
    if n < 1 or d_sae < 2:
        return {j: [] for j in ids}
    unit = W_dec.detach().float()
    unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = min(n, d_sae - 1)
    out = {}
    for start in range(0, len(ids), chunk):
        rows = torch.as_tensor(ids[start:start + chunk], device=unit.device)
        sims = unit[rows] @ unit.T
        sims[torch.arange(len(rows), device=unit.device), rows] = -math.inf  # not its own neighbour
        top = sims.topk(n, dim=1)
        for j, vals, nbrs in zip(rows.tolist(), top.values.cpu().tolist(), top.indices.cpu().tolist()):
            out[j] = [{"id": int(k), "cosine": round(float(v), 6)} for k, v in zip(nbrs, vals)]
    return out
