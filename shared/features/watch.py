"""A watch-list monitor: SAE features with thresholds from a baseline corpus, flagging the prompts and
tokens where a feature runs above its usual range, forward only.

A prompt is flagged when any of its (token, feature) pairs is over its feature's threshold, so the
thresholds are calibrated on what is flagged: each baseline document's per-feature maximum over its
kept tokens (capture.token_mask). `calibrate` sets every watched feature's threshold to the same
quantile level u of its per-document maxima, with u chosen so that a share 1 - percentile/100 of the
baseline documents is flagged (with one feature: the percentile of its per-document maximum). On
held-out documents of the same distribution and length about that share is flagged; shorter prompts
less often, longer ones more. A feature that never fires on the baseline gets threshold 0: any firing
is flagged. A token is flagged for a feature when its activation is strictly above the threshold.
`Watchtower.scan` streams prompts (a list, a file or a data source spec, data.text_stream) and
`Watchtower.during_generate` records the same flags token by token while `model.generate` runs
(hooks.read_residuals' on_read); `summary` gives per-prompt and per-token flag rates apart;
`write_report` writes JSON + CSV.
"""
from __future__ import annotations

import csv
import json
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from ..model.capture import capture_residuals, token_mask
from ..model.hooks import read_residuals
from ..model.layout import model_device


def _features(sae, features: Sequence[int]) -> list[int]:
    out = [int(f) for f in features]
    if not out or any(not 0 <= f < sae.cfg.d_sae for f in out) or len(set(out)) != len(out):
        raise ValueError(f"features={list(features)!r}: give distinct latent ids in 0..{sae.cfg.d_sae - 1}")
    return out


@torch.no_grad()
def _encode(sae, hidden: torch.Tensor, features: list[int]) -> torch.Tensor:
    """The watched latents' activations [..., F] (float32, CPU) for residuals [..., d_in]."""
    z = sae.encode(hidden.to(sae.device, sae.dtype))
    return z[..., features].float().cpu()


@torch.no_grad()
def ids_activations(model, tokenizer, sae, layer: int, ids: torch.Tensor,
                    features: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """For one token sequence ids [T]: (keep mask [T], activations [T, F] of the watched features), one forward."""
    features = _features(sae, features)
    ids = ids.reshape(1, -1).to(model_device(model))
    x = capture_residuals(model, ids, [layer])[layer][0]
    return token_mask(ids, tokenizer)[0].cpu(), _encode(sae, x, features)


@torch.no_grad()
def feature_activations(model, tokenizer, sae, layer: int, texts: Iterable[str], features: Sequence[int],
                        max_length: int = 256) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per text: (text, token ids [T], keep mask [T], activations [T, F] of the watched features), one forward each."""
    features = _features(sae, features)
    for text in texts:
        enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)
        ids = enc["input_ids"][0]
        yield (text, ids, *ids_activations(model, tokenizer, sae, layer, ids, features))


def document_maxima(model, tokenizer, sae, layer: int, texts: Iterable[str], features: Sequence[int],
                    max_length: int = 256) -> torch.Tensor:
    """[documents, F]: each document's maximum activation of each watched feature over its kept tokens
    (documents with no kept token are left out)."""
    features = _features(sae, features)
    rows = [a[keep].max(0).values for _, _, keep, a in feature_activations(model, tokenizer, sae, layer, texts,
                                                                           features, max_length) if keep.any()]
    return torch.stack(rows) if rows else torch.zeros(0, len(features))


def thresholds_for_share(maxima, share: float) -> np.ndarray:
    """Per-feature thresholds at one common quantile level u of each column of maxima [documents, F],
    u the lowest level (to 1e-9) at which at most `share` of the rows hold a value strictly above
    their column's threshold: the rows a watch-list with these thresholds flags."""
    m = np.asarray(maxima, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError("need at least one baseline document's maxima to calibrate on")

    def flagged(u: float) -> float:
        return float((m > np.quantile(m, u, axis=0)).any(axis=1).mean())

    lo, hi = 0.0, 1.0  # flagged(1.0) == 0: nothing is above a column's maximum
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if flagged(mid) > share else (lo, mid)
    return np.quantile(m, hi, axis=0)


def calibrate(model, tokenizer, sae, layer: int, baseline_texts: Iterable[str], features: Sequence[int],
              percentile: float = 99.5, max_length: int = 256) -> dict[int, float]:
    """{feature: threshold} such that a share 1 - percentile/100 of the baseline documents (truncated to
    max_length tokens) is flagged: thresholds_for_share on their per-feature maxima (document_maxima)."""
    if not 0 < percentile < 100:
        raise ValueError(f"percentile={percentile!r}: must be in (0, 100), e.g. 99.5")
    features = _features(sae, features)
    maxima = document_maxima(model, tokenizer, sae, layer, baseline_texts, features, max_length)
    if maxima.shape[0] == 0:
        raise ValueError("baseline_texts gave no tokens to calibrate on: pass some baseline text")
    values = thresholds_for_share(maxima.numpy(), 1 - percentile / 100)
    return {f: float(v) for f, v in zip(features, values)}


def _flags(ids: torch.Tensor, keep: torch.Tensor, acts: torch.Tensor, features: list[int], limits: torch.Tensor,
           tokenizer) -> list[dict]:
    """One flag per (kept position, feature) whose activation is over its threshold."""
    over = (acts > limits) & keep[:, None]
    return [{"position": int(t), "token": tokenizer.decode([int(ids[t])]), "feature": features[f],
             "activation": round(float(acts[t, f]), 6), "threshold": round(float(limits[f]), 6)}
            for t, f in over.nonzero().tolist()]


class Watchtower:
    """Flags prompts and tokens where a watched feature exceeds its threshold (`calibrate`)."""

    def __init__(self, model, tokenizer, sae, layer: int, thresholds: dict[int, float], max_length: int = 256):
        self.model, self.tokenizer, self.sae, self.layer = model, tokenizer, sae, int(layer)
        self.features = _features(sae, list(thresholds))
        self.thresholds = {f: float(thresholds[f]) for f in self.features}
        self._limits = torch.tensor([self.thresholds[f] for f in self.features])
        self.max_length = max_length
        self.results: list[dict] = []

    def flags_for(self, ids: torch.Tensor, keep: torch.Tensor, acts: torch.Tensor) -> list[dict]:
        """The flags of one token sequence, given its ids [T], keep mask [T] and watched activations [T, F]."""
        return _flags(ids, keep, acts, self.features, self._limits, self.tokenizer)

    def scan(self, prompts, limit: int | None = None) -> list[dict]:
        """Stream prompts (a list of strings, or a file / data source spec for data.text_stream), forward
        only; append to and return `results`: per prompt {index, prompt, flagged, n_tokens, max_activation, flags}."""
        if isinstance(prompts, str):
            from ..data.sources import text_stream

            prompts = text_stream(prompts)
        start = len(self.results)
        for i, (text, ids, keep, acts) in enumerate(feature_activations(
                self.model, self.tokenizer, self.sae, self.layer, islice(prompts, limit), self.features,
                self.max_length)):
            flags = self.flags_for(ids, keep, acts)
            peak = acts[keep].max(0).values if keep.any() else torch.zeros(len(self.features))
            self.results.append({"index": start + i, "prompt": text, "flagged": bool(flags),
                                 "n_tokens": int(keep.sum()),
                                 "max_activation": {str(f): round(float(v), 6) for f, v in zip(self.features, peak)},
                                 "flags": flags})
        return self.results[start:]

    @contextmanager
    def during_generate(self) -> Iterator["LiveWatch"]:
        """Within the block, every forward of the model (each `generate` step) is encoded and flagged as it
        runs; the yielded LiveWatch holds the flags token by token (batch row 0)."""
        live = LiveWatch(self)
        with read_residuals(self.model, [self.layer], on_read=lambda _layer, h: live.record(h)):
            yield live

    def summary(self) -> dict:
        """Counts over `results`, per prompt and per token apart: prompts scanned and flagged (any token x
        feature over threshold) and their share; kept tokens scanned, tokens flagged (for any feature) and
        their share; flags per feature."""
        per_feature = {str(f): 0 for f in self.features}
        n_tokens = n_flagged_tokens = 0
        for r in self.results:
            for fl in r["flags"]:
                per_feature[str(fl["feature"])] += 1
            n_tokens += r["n_tokens"]
            n_flagged_tokens += len({fl["position"] for fl in r["flags"]})
        n_prompts, n_flagged = len(self.results), sum(r["flagged"] for r in self.results)
        return {"n_prompts": n_prompts, "n_flagged": n_flagged,
                "prompt_flag_rate": n_flagged / n_prompts if n_prompts else None,
                "n_tokens": n_tokens, "n_flagged_tokens": n_flagged_tokens,
                "token_flag_rate": n_flagged_tokens / n_tokens if n_tokens else None,
                "flags_per_feature": per_feature}

    def write_report(self, json_path, csv_path, extra: dict | None = None) -> dict:
        """Write `results` as JSON (thresholds, summary, per-prompt flags, plus extra; skipped when
        json_path is None, e.g. when a notebook stamps its own) and one CSV row per flag; returns the payload."""
        payload = {"layer": self.layer, "thresholds": {str(f): v for f, v in self.thresholds.items()},
                   "summary": self.summary(), "prompts": self.results, **(extra or {})}
        if json_path is not None:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(payload, indent=1))
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["prompt_index", "position", "token", "feature", "activation", "threshold", "prompt"])
            for r in self.results:
                for fl in r["flags"]:
                    w.writerow([r["index"], fl["position"], fl["token"], fl["feature"], fl["activation"],
                                fl["threshold"], r["prompt"]])
        return payload


class LiveWatch:
    """What `Watchtower.during_generate` records: each forward's watched activations, position by position.

    The positions are those the model ran on: the prompt, then each generated token but the last
    (which no forward reads). `flags(ids)` flags them against the sequence's ids, masking special
    tokens like the offline pass; `events` lists every reading over its threshold in the order it arose,
    special-token positions (the BOS) included, since the hook sees no ids: count flags with `flags(ids)`.
    """

    def __init__(self, tower: Watchtower):
        self.tower = tower
        self.chunks: list[torch.Tensor] = []
        self.events: list[dict] = []

    def record(self, hidden: torch.Tensor) -> None:
        acts = _encode(self.tower.sae, hidden[0], self.tower.features)  # [t, F], batch row 0
        start = sum(c.shape[0] for c in self.chunks)
        self.chunks.append(acts)
        for t, f in (acts > self.tower._limits).nonzero().tolist():
            self.events.append({"position": start + t, "feature": self.tower.features[f],
                                "activation": round(float(acts[t, f]), 6)})

    @property
    def activations(self) -> torch.Tensor:
        """[positions run, F] watched activations."""
        return torch.cat(self.chunks) if self.chunks else torch.zeros(0, len(self.tower.features))

    def flags(self, ids: torch.Tensor) -> list[dict]:
        """Flags over the positions run, for the generated sequence's ids ([T] or [1, T])."""
        ids = ids.reshape(-1).cpu()
        acts = self.activations
        n = acts.shape[0]
        if n > ids.shape[0]:
            raise ValueError(f"recorded {n} positions but ids has {ids.shape[0]}: pass the full generated sequence")
        keep = token_mask(ids[None, :n], self.tower.tokenizer)[0]
        return self.tower.flags_for(ids[:n], keep, acts)
