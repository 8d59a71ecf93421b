"""Task metrics read at the last position: one value per prompt pair ([n]).

Each takes logits [n, T, V] (or [n, V], already the last position). Every entry of METRICS is
called the same way, m(logits, pairs, clean_logits=None), so patching and attribution code take a
metric by name; "kl" needs clean_logits (the unpatched clean run's logits). Gradient methods take only
GRADIENT_METRICS (`gradient_metric`): "kl" has zero gradient at the clean run.
"""
from __future__ import annotations

import math

from typing import Callable

import torch

from .tasks import PromptPairs


def last_position(logits: torch.Tensor) -> torch.Tensor:
    """[n, V] logits at the last position of [n, T, V] (or [n, V] unchanged)."""
    if logits.dim() == 3:
        return logits[:, -1]
    if logits.dim() == 2:
        return logits
    raise ValueError(f"logits must be [n, T, V] or [n, V], got shape {tuple(logits.shape)}")


def _rows(logits: torch.Tensor, pairs: PromptPairs) -> tuple[torch.Tensor, torch.Tensor]:
    last = last_position(logits)
    if last.shape[0] != len(pairs):
        raise ValueError(f"logits hold {last.shape[0]} prompts but pairs has {len(pairs)}; pass the same batch")
    return last, torch.arange(last.shape[0], device=last.device)


def logit_diff(logits: torch.Tensor, pairs: PromptPairs, clean_logits=None) -> torch.Tensor:
    """logit[answer] - logit[wrong] at the last position: [n]."""
    last, r = _rows(logits, pairs)
    return last[r, pairs.answer_ids.to(last.device)] - last[r, pairs.wrong_ids.to(last.device)]


def answer_prob(logits: torch.Tensor, pairs: PromptPairs, clean_logits=None) -> torch.Tensor:
    """The probability of the right answer at the last position: [n]."""
    last, r = _rows(logits, pairs)
    return last.float().softmax(-1)[r, pairs.answer_ids.to(last.device)]


def kl_to_clean(logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """KL(clean || this run) of the next-token distributions at the last position: [n] (0 on the clean run)."""
    if clean_logits is None:
        raise ValueError("the 'kl' metric needs clean_logits (the clean run's logits) to compare against")
    p = last_position(clean_logits).float().log_softmax(-1)
    q = last_position(logits).float().log_softmax(-1)
    if p.shape != q.shape:
        raise ValueError(f"logits {tuple(q.shape)} and clean_logits {tuple(p.shape)} differ in shape at the last position")
    return (p.exp() * (p - q)).sum(-1)


def _kl(logits: torch.Tensor, pairs: PromptPairs, clean_logits=None) -> torch.Tensor:
    return kl_to_clean(logits, clean_logits)


METRICS: dict[str, Callable] = {"logit_diff": logit_diff, "prob": answer_prob, "kl": _kl}
GRADIENT_METRICS = ("logit_diff", "prob")  # what gradient methods (AtP, AtP*, IG, EAP, SFC) can differentiate


def get_metric(name: str) -> Callable:
    """The metric called `name`, as m(logits, pairs, clean_logits=None) -> [n]."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    return METRICS[name]


def gradient_metric(name: str) -> Callable:
    """The metric called `name` for a gradient method (AtP, AtP*, IG, EAP, SFC's node and edge effects).
    "kl" is refused: KL(clean || run) is smallest (0) at the clean run, so its gradient there is 0 and every
    estimate would be 0 whatever the node's exact effect."""
    fn = get_metric(name)
    if name not in GRADIENT_METRICS:
        raise ValueError(f"metric {name!r} has zero gradient on the clean run (KL to the clean run is smallest "
                         f"there), so attribution would score every node 0; use "
                         f"{' or '.join(map(repr, GRADIENT_METRICS))} (ACDC's target can be 'kl')")
    return fn


def check_tau(name: str, value) -> float:
    """A threshold on |effect| in metric units (ACDC's tau, SFC's tau_node / tau_edge): a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (a threshold on |effect| in metric units, "
                         f"e.g. 0.01), got {value!r}")
    return float(value)


def task_metrics(model, pairs: PromptPairs, metric: str = "logit_diff") -> tuple[float, float, torch.Tensor]:
    """The task's baseline on `model` run as it is: (mean metric on the clean prompts, on the corrupt ones
    (for "kl": against the clean run), the clean logits [n, T, V])."""
    from ..model.layout import model_device

    fn, device = get_metric(metric), model_device(model)
    pairs = pairs.to(device)
    with torch.no_grad():
        clean = model(pairs.clean_ids).logits
        corrupt = model(pairs.corrupt_ids).logits
    return (float(fn(clean, pairs, clean_logits=clean).mean()), float(fn(corrupt, pairs, clean_logits=clean).mean()),
            clean)
