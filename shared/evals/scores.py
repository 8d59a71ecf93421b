"""InterpScore v0.0.1: one number in [0, 1] for an SAE at a layer, and its five parts.

    InterpScore = 0.30 loss_recovered + 0.15 alive + 0.15 l0_score + 0.25 sparse_probing + 0.15 tpp

- loss_recovered: the CE loss score as SAELens' run_evals defines it (evaluate_saes' "saelens"
  ce_loss_score: the SAE spliced in, between the clean model and the residual zeroed at every position,
  BOS included) over the evaluation tokens, clipped to [0, 1]: InterpScore v0.0.1's definition, so scores
  compare with the published ones (our own ce_loss_recovered, which spares BOS, runs lower);
- alive: the share of latents that fire at least once on those tokens;
- l0_score: exp(-|ln(L0 / 80)|), 1 at L0 = 80 and falling either side (0 for L0 = 0);
- sparse_probing: mean over the probing tasks of the held-out AUROC of a class-balanced logistic
  regression on the SAE latents mean-pooled over each text's tokens;
- tpp: on the first task (the TPP concept), the share of the probe's AUROC above chance that goes
  when its top-20 latents by |weight| are zeroed: (AUROC - AUROC_ablated) / (AUROC - 0.5), in [0, 1].
The first three are measured on held-out text (`evaluation_text`: VAL_DATASET, or DATASET's held-out
split where it has one), which interpscore.json records under "eval_text".
DEFINITIONS holds these lines for interpscore.json. The saebench_* functions compute SAEBench's own
sparse-probing and TPP quantities on the same latents, for the comparison notebook 18 shows.
Any SAE that saes.load.load_sae reads works (ours or published): only encode, decode, W_dec and cfg are used.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..data.mixing import mix_streams
from ..data.sources import parse_source
from ..data.tasks import load_task_dataset
from ..model.capture import capture_residuals, content_mask, masked_mean
from ..model.layout import model_device
from ..readouts.probes import _auroc, linear_probe
from ..saes.formats import CFG_FILE
from ..saes.load import check_sae_fits
from .metrics import evaluate_saes

VERSION = "0.0.1"
WEIGHTS = {"loss_recovered": 0.30, "alive": 0.15, "l0_score": 0.15, "sparse_probing": 0.25, "tpp": 0.15}
L0_TARGET = 80.0
TPP_TOP_N = 20
PROBE_C = 1.0
DEFINITIONS = {
    "interp_score": "sum of weights[c] * components[c] over the five components, each in [0, 1]",
    "loss_recovered": "SAELens' ce_loss_score over eval_tokens: (CE ablated - CE spliced) / (CE ablated - CE "
                      "clean), the ablation zeroing the layer's residual at every position, BOS included "
                      "(evaluate.METRIC_DEFINITIONS saelens.ce_loss_score; InterpScore v0.0.1's definition), "
                      "clipped to [0, 1]: an SAE worse than ablation scores 0, one better than the clean model 1",
    "alive": "latents that fire (> 0) on at least one non-special evaluation token / d_sae (dead over these "
             "tokens, not over training)",
    "eval_tokens": "token positions read for the loss, alive and L0 parts, special tokens (BOS/EOS/pad) "
                   "included; validation.eval_tokens counts the non-special ones that alive, L0 and var_expl are "
                   "measured over",
    "l0_score": f"exp(-|ln(L0 / {L0_TARGET:g})|), L0 = mean active latents per evaluation token; 0 when L0 = 0",
    "sparse_probing": "mean over probing_tasks of the held-out (test split) AUROC of LogisticRegression(C=1, "
                      "class_weight='balanced', standardised inputs) on SAE latents mean-pooled over each "
                      "text's non-special tokens, trained on the train split",
    "tpp": f"on tpp_concept: the top-{TPP_TOP_N} latents by |standardised probe weight| are zeroed in the test "
           "latents and the same probe re-scored; tpp = (AUROC - AUROC_ablated) / (AUROC - 0.5) clipped to "
           "[0, 1] (the share of the probe's above-chance AUROC those latents carry; 0 if AUROC <= 0.5; a probe "
           "barely above chance makes it noisy: read it with tpp_auroc.clean)",
}


# --------------------------------------------------------------------------------------------
# the formula


def clip01(x: float) -> float:
    """x clipped to [0, 1]; NaN stays NaN (a caller decides what an undefined part means)."""
    return float(min(1.0, max(0.0, x))) if math.isfinite(x) else float(x)


def l0_score(l0: float) -> float:
    """exp(-|ln(L0 / 80)|) = min(L0/80, 80/L0): 1 at the sweet spot, 0.5 at 40 or 160, 0 at L0 = 0."""
    if not (l0 >= 0 and math.isfinite(l0)):
        raise ValueError(f"L0 must be a finite number >= 0, got {l0}")
    return 0.0 if l0 == 0 else math.exp(-abs(math.log(l0 / L0_TARGET)))


def tpp_component(auroc: float, auroc_ablated: float) -> float:
    """Relative AUROC drop mapped into [0, 1]: the share of the above-chance AUROC the ablation removes."""
    signal = auroc - 0.5
    if signal <= 1e-9:
        return 0.0
    return clip01((auroc - auroc_ablated) / signal)


def combine(components: dict, weights: dict = WEIGHTS) -> float:
    """InterpScore from its components: sum of weight x component; every component must be in [0, 1]."""
    missing = set(weights) - set(components)
    if missing:
        raise ValueError(f"components lack {sorted(missing)}: give all of {sorted(weights)}")
    for name in weights:
        v = components[name]
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise ValueError(f"component {name} = {v!r} must be a number in [0, 1]")
    return float(sum(weights[name] * components[name] for name in weights))


# --------------------------------------------------------------------------------------------
# input checks


EVAL_SEED_OFFSET = 1_000  # as training.stream.validation_batches: the evaluation stream's seed is the run's + this


def evaluation_text(val_dataset: str, dataset, seed: int = 0) -> tuple[Iterable[str], dict]:
    """(texts, record) for the loss, alive and L0 parts, held out from `dataset` (the text train-tiny and
    the tier notebooks train on) as the tier notebooks' validation is: `val_dataset` when given (another
    source), else `dataset` itself; the synthetic corpus is read from its test split either way. The
    record {dataset, sources, held_out, note} says which text was read and whether it is held out."""
    train_specs = [dataset] if isinstance(dataset, str) else list(dataset)
    specs = [val_dataset] if val_dataset else train_specs
    sources = [parse_source(spec, seed=seed + EVAL_SEED_OFFSET) for spec in specs]
    for src in sources:
        if src.kind == "synthetic":
            src.split = "test"
    trained = {parse_source(spec).describe() for spec in train_specs}
    held_out = all(src.kind == "synthetic" or src.describe() not in trained for src in sources)
    names = [src.describe() + (":test" if src.kind == "synthetic" else "") for src in sources]
    note = ("held-out text: " + ", ".join(names) + " (not the stream DATASET trains on)" if held_out else
            "NOT held out: " + ", ".join(names) + " is DATASET's own stream (another shuffle), so it may hold "
            "tokens the SAE trained on; set VAL_DATASET to another source")
    record = {"dataset": val_dataset or dataset, "sources": names, "held_out": held_out, "note": note}
    return mix_streams(sources, seed=seed + EVAL_SEED_OFFSET, cycle=False), record


def take_tokens(token_batches: Iterable[torch.Tensor], eval_tokens: int) -> list[torch.Tensor]:
    """The first batches holding eval_tokens token positions (the last one cut by rows); a one-line
    ValueError when the stream ends first."""
    if eval_tokens < 1:
        raise ValueError(f"eval_tokens must be >= 1, got {eval_tokens}")
    out, have = [], 0
    for batch in token_batches:
        per_row = batch.shape[1]
        rows = min(batch.shape[0], -(-(eval_tokens - have) // per_row))
        out.append(batch[:rows])
        have += rows * per_row
        if have >= eval_tokens:
            return out
    raise ValueError(f"the evaluation text gave {have} tokens, fewer than eval_tokens={eval_tokens}: "
                     "lower EVAL_TOKENS or use a larger DATASET")


def check_items(name: str, items: Sequence[dict], n: int, split: str) -> np.ndarray:
    """Labels of a probing task's split as 0/1; one-line errors for too few items or one class."""
    if len(items) < n:
        raise ValueError(f"probing task {name!r} has {len(items)} {split} items, fewer than the {n} requested: "
                         "lower N_TRAIN / N_TEST or pick another task")
    y = np.asarray([int(it["label"]) for it in items])
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise ValueError(f"probing task {name!r} has only class {classes} in its {split} split: a probe needs "
                         "both classes; use a labelled task with two")
    if classes != [0, 1]:
        raise ValueError(f"probing task {name!r} has labels {classes[:5]}: InterpScore probes binary 0/1 tasks "
                         "(amazon_sentiment, bias_in_bios_gender, imdb, sst2, truthful_qa, "
                         "synthetic:sentiment/truth/names)")
    return y


# --------------------------------------------------------------------------------------------
# the reconstruction parts (one evaluate_saes pass)


def reconstruction_parts(model, tokenizer, sae, layer: int, batches: list[torch.Tensor],
                         forward_batch_size: int = 2, centre_input: bool = False) -> tuple[dict, dict]:
    """(loss_recovered, alive and l0_score components, evaluate_saes' report of the layer) on batches;
    centre_input: the SAE's release reads the centred residual (saes.releases.centred_input)."""
    check_sae_fits(sae, model, layer)
    report = evaluate_saes(model, tokenizer, {layer: sae}, batches, forward_batch_size=forward_batch_size,
                           centre_input=centre_input)[str(layer)]
    raw = report["saelens"]["ce_loss_score"]  # InterpScore v0.0.1's loss_recovered is this formula
    if not math.isfinite(raw):
        raise ValueError(f"CE loss recovered is undefined at layer {layer}: zero-ablating it does not change the "
                         "loss, so there is nothing to recover; pick another layer")
    parts = {"loss_recovered": clip01(raw), "alive": report["alive"] / report["d_sae"],
             "l0_score": l0_score(report["l0"])}
    return parts, report


# --------------------------------------------------------------------------------------------
# latents per text


@torch.no_grad()
def pool_latents(sae, acts: torch.Tensor, keep: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Mean over each row's kept positions of the SAE latents: acts [B, T, d_in], keep [B, T] -> [B, d_sae]
    (the latents of each token, then averaged: not the latents of the averaged residual)."""
    device = next(sae.parameters()).device
    B, T, D = acts.shape
    flat = acts.reshape(B * T, D)[keep.reshape(-1)]
    z = torch.cat([sae.encode(c.to(device, torch.float32)).float() for c in flat.split(chunk)]) if len(flat) \
        else torch.zeros(0, sae.cfg.d_sae, device=device)
    row = torch.arange(B, device=keep.device)[:, None].expand(B, T).reshape(-1)[keep.reshape(-1)].to(device)
    sums = torch.zeros(B, z.shape[1], device=device).index_add_(0, row, z)
    return sums / keep.sum(1).clamp(min=1).to(device)[:, None]


@torch.no_grad()
def pooled_latents(model, tokenizer, sae, layer: int, texts: Sequence[str], batch_size: int = 8,
                   max_length: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(latents [n, d_sae], residuals [n, d_model]) per text, each mean-pooled over its non-special tokens
    (texts cut to max_length tokens); the residuals feed SAEBench's TPP latent selection."""
    check_sae_fits(sae, model, layer)
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    if batch_size > 1 and len(texts) > 1 and tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token = tokenizer.eos_token "
                         "or pass batch_size=1")
    lat, res, device = [], [], model_device(model)
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                        truncation=True, max_length=max_length)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        h = capture_residuals(model, ids, [layer], attention_mask=mask)[layer].float()
        keep = content_mask(ids, tokenizer, mask)
        lat.append(pool_latents(sae, h, keep).cpu())
        res.append(masked_mean(h, keep).cpu())
    return torch.cat(lat).numpy(), torch.cat(res).numpy()


@dataclass
class TaskLatents:
    """A probing task's train and test texts as pooled latents X, pooled residuals R and labels y."""

    X_train: np.ndarray
    R_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    R_test: np.ndarray
    y_test: np.ndarray


def task_latents(model, tokenizer, sae, layer: int, task: str, n_train: int, n_test: int, *, batch_size: int = 8,
                 max_length: int = 128, seed: int = 0) -> TaskLatents:
    """Load a labelled task (data.load_task_dataset: its disjoint train and test splits), check each split
    has the items asked for and both classes, and pool the SAE latents and residuals of every text."""
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        items = load_task_dataset(task, n, split=split, seed=seed)
        out["y_" + split] = check_items(task, items, n, split)
        out["X_" + split], out["R_" + split] = pooled_latents(model, tokenizer, sae, layer,
                                                              [it["text"] for it in items],
                                                              batch_size=batch_size, max_length=max_length)
    return TaskLatents(**out)


# --------------------------------------------------------------------------------------------
# sparse probing and TPP


@dataclass
class TaskProbe:
    """One probing task's result: held-out AUROC, and with the top latents zeroed."""

    name: str
    auroc: float
    accuracy: float
    top_features: list[int]
    auroc_ablated: float
    n_train: int
    n_test: int

    @property
    def tpp(self) -> float:
        return tpp_component(self.auroc, self.auroc_ablated)


def _std(X: np.ndarray) -> np.ndarray:
    sd = X.std(0)
    return np.where(sd > 1e-8, sd, 1.0)


def probe_task(name: str, X_train, y_train, X_test, y_test, top_n: int = TPP_TOP_N, seed: int = 0) -> TaskProbe:
    """The task's class-balanced LR probe on latents, its held-out AUROC, and the AUROC once its top_n
    latents by |standardised weight| are zeroed in the test latents (the same probe, not retrained)."""
    X_train, X_test = np.asarray(X_train, np.float64), np.asarray(X_test, np.float64)
    try:
        probe = linear_probe(X_train, y_train, X_test, y_test, C=PROBE_C, seed=seed, class_weight="balanced")
    except ValueError as e:
        raise ValueError(f"probing task {name!r}: {e}") from None
    importance = np.abs(probe.direction * _std(X_train))  # the weights the standardised fit learned (up to scale)
    n = min(top_n, int((importance > 0).sum()))
    top = [int(i) for i in np.argsort(-importance, kind="stable")[:n]]
    ablated = X_test.copy()
    ablated[:, top] = 0.0
    auroc_ablated = _auroc(np.asarray(y_test), ablated @ probe.direction + probe.bias)
    return TaskProbe(name, float(probe.auroc), float(probe.accuracy), top, auroc_ablated,
                     int(len(X_train)), int(len(X_test)))


def sparse_probing(results: Sequence[TaskProbe]) -> float:
    """The sparse_probing component: mean held-out AUROC over the tasks."""
    if not results:
        raise ValueError("no probing tasks: give at least one labelled task (e.g. synthetic:sentiment)")
    return float(np.mean([r.auroc for r in results]))


# --------------------------------------------------------------------------------------------
# SAEBench's definitions, on the same latents (for the comparison; not part of InterpScore)


def saebench_top_k_accuracies(X_train, y_train, X_test, y_test, ks: Sequence[int] = (1, 2, 5)) -> dict:
    """SAEBench sparse_probing on one binary task: keep the k latents with the largest |mean_pos - mean_neg|
    on train, fit sklearn LogisticRegression(C=1, max_iter=1000) on raw latents, test accuracy;
    {"sae_top_{k}_test_accuracy": ...}."""
    from sklearn.linear_model import LogisticRegression

    Xtr, Xte = np.asarray(X_train, np.float32), np.asarray(X_test, np.float32)
    ytr, yte = np.asarray(y_train), np.asarray(y_test)
    diff = np.abs(Xtr[ytr == 1].mean(0) - Xtr[ytr == 0].mean(0))
    order = torch.argsort(torch.from_numpy(diff), descending=True).numpy()  # as SAEBench ranks them
    out = {}
    for k in ks:
        cols = np.sort(order[:k])  # SAEBench keeps the selected columns in their original order
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(Xtr[:, cols], ytr)  # L2: SAEBench's penalty="l2"
        out[f"sae_top_{k}_test_accuracy"] = float((clf.predict(Xte[:, cols]) == yte).mean())
    return out


def saebench_tpp_effects(latents_train, y_train, resid_direction, W_dec) -> np.ndarray:
    """SAEBench TPP's per-latent effect for a class: clamp(mean_pos - mean_neg, min 0) x (W_dec[f] . w),
    w the probe's direction on (mean-pooled) residuals; [d_sae]."""
    X = np.asarray(latents_train, np.float32)
    y = np.asarray(y_train)
    diff = np.clip(X[y == 1].mean(0) - X[y == 0].mean(0), 0.0, None)
    W = W_dec.detach().float().cpu().numpy() if isinstance(W_dec, torch.Tensor) else np.asarray(W_dec, np.float32)
    return (diff * (W @ np.asarray(resid_direction, np.float32))).astype(np.float32)


def saebench_top_n(effects: np.ndarray, n: int = TPP_TOP_N) -> list[int]:
    """SAEBench's select_top_n_features: the n largest effects among the non-zero ones (sorted ids)."""
    nonzero = np.flatnonzero(effects != 0)
    k = min(n, len(nonzero))
    if k == 0:
        return []
    return sorted(int(i) for i in torch.topk(torch.from_numpy(np.asarray(effects, np.float32)), k).indices)


# --------------------------------------------------------------------------------------------
# the report


def tokens_trained_in(folder) -> int | None:
    """metadata.tokens_trained of a local SAE folder's cfg.json (our exports write it), else None."""
    path = Path(str(folder)) / CFG_FILE
    try:
        value = json.loads(path.read_text()).get("metadata", {}).get("tokens_trained")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, (int, float)) and value > 0 else None



def interpscore_report(*, parts: dict, task_results: Sequence[TaskProbe], sae_repo: str, model: str, layer: int,
                       d_model: int, d_sae: int, k, tokens_trained, eval_tokens: int,
                       extra: dict | None = None) -> dict:
    """interpscore.json (v0.0.1): version, sae_repo, model, layer, d_model, d_sae, k, tokens_trained,
    eval_tokens, probing_tasks, probing_per_task_auc, tpp_concept, tpp_top_features, components{the five
    parts}, weights, interp_score, timestamp; plus tpp_auroc, the definitions and `extra`."""
    if not task_results:
        raise ValueError("no probing tasks: give at least one labelled task")
    concept = task_results[0]
    components = {**{c: float(parts[c]) for c in ("loss_recovered", "alive", "l0_score")},
                  "sparse_probing": sparse_probing(task_results), "tpp": concept.tpp}
    report = {
        "version": VERSION, "sae_repo": sae_repo, "model": model, "layer": int(layer), "d_model": int(d_model),
        "d_sae": int(d_sae), "k": (int(k) if k else None), "tokens_trained": tokens_trained,
        "eval_tokens": int(eval_tokens), "probing_tasks": [r.name for r in task_results],
        "probing_per_task_auc": {r.name: round(r.auroc, 6) for r in task_results},
        "tpp_concept": concept.name, "tpp_top_features": concept.top_features,
        "components": {c: round(v, 6) for c, v in components.items()},
        "weights": dict(WEIGHTS),
    }
    report["interp_score"] = round(combine(report["components"]), 6)
    report["timestamp"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    report["tpp_auroc"] = {"clean": round(concept.auroc, 6), "ablated": round(concept.auroc_ablated, 6)}
    report["definitions"] = DEFINITIONS
    report.update(extra or {})
    return report


def leaderboard_entry(report: dict) -> dict:
    """The one row a leaderboard keeps of an interpscore.json."""
    keys = ("version", "sae_repo", "model", "layer", "d_sae", "k", "interp_score", "timestamp")
    return {**{k: report[k] for k in keys}, **report["components"]}


def weighted_parts(report: dict) -> dict:
    """{component: weight x value}: the bars of the chart, summing to interp_score."""
    return {c: report["weights"][c] * report["components"][c] for c in report["weights"]}
