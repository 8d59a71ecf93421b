"""Supervised and unsupervised probes on residual activations, each next to its honest baselines.

Three families, all on plain arrays so a test can plant the truth and check it is found:
- linear probe (logistic regression) per layer, beside the diff-of-means direction;
- CCS (Burns et al. 2022) on contrast pairs, beside diff-of-means, the top principal component of
  the contrast differences, a random-direction floor and the supervised ceiling, with a verdict;
- RepE / LAT (Zou et al. 2023): a reading vector from prompt-pair differences, per-layer reading
  accuracy and monitoring of new prompts.
Arrays may be numpy or torch; results are numpy / floats so notebooks can plot and write JSON.
The states come from capture.sequence_states, steering along a vector is steer.steering_hook,
the figures are in views/plots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..data.templates import ccs_template
from ..model.steer import as_float64, unit_direction
from ..runtime import single_thread

# ----------------------------------------------------------------------------------------------
# input checks


def _check_acts(x, name: str) -> np.ndarray:
    """[n, d] finite float activations, or a clear error."""
    arr = as_float64(x, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D [n_examples, d_model], got shape {arr.shape}; "
            "pool each example to one vector first (e.g. last_token_states)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); give it at least one example and feature")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; check the model dtype (try float32) or the capture")
    return arr


def _check_labels(y, n: int, name: str, need_both: bool = True) -> np.ndarray:
    """Binary labels in {0, 1} (bools allowed) of length n, both classes present when asked."""
    arr = as_float64(y, name).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} labels but the activations have {n} rows; they must match")
    values = set(np.unique(arr).tolist())
    if not values <= {0.0, 1.0}:
        raise ValueError(f"{name} must hold binary labels 0/1, got values {sorted(values)[:5]}")
    if need_both and len(values) < 2:
        raise ValueError(
            f"{name} holds only class {int(next(iter(values)))}; a probe needs both classes -- "
            "use more examples or a stratified split (train_test_indices)"
        )
    return arr.astype(np.int64)


def _check_same_width(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} has {a.shape[1]} features but {name_b} has {b.shape[1]}; use the same layer for both")


def _auroc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


def train_test_indices(y, test_frac: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random split of example indices, so both sides hold both classes."""
    y = _check_labels(y, len(as_float64(y, "y").reshape(-1)), "y")
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        if len(idx) < 2:
            raise ValueError(f"class {cls} has {len(idx)} example(s); need at least 2 to split train/test")
        n_test = min(max(1, int(round(test_frac * len(idx)))), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# ----------------------------------------------------------------------------------------------
# linear probe and diff-of-means


@dataclass
class ProbeResult:
    """One probe evaluated on held-out data.

    direction is in the input's coordinates (unit norm); score = X @ direction + bias.
    sign_free=True: the method itself gives no sign (CCS, a principal component, a random direction), so
    its orientation is the one that scores better on the TRAINING split (one bit of the training labels;
    extra["orientation"] is +1 or -1) and is applied unchanged to the test split: a test accuracy below
    0.5 stays below 0.5 (never max(acc, 1 - acc) on test, which credits a direction unrelated to the
    labels with more than chance).
    """

    method: str
    auroc: float
    accuracy: float
    direction: np.ndarray
    bias: float = 0.0
    test_scores: np.ndarray | None = None
    sign_free: bool = False
    note: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (no arrays)."""
        out = {
            "method": self.method,
            "auroc": round(float(self.auroc), 4),
            "accuracy": round(float(self.accuracy), 4),
            "sign_free": bool(self.sign_free),
        }
        if self.note:
            out["note"] = self.note
        out.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.extra.items()})
        return out


def _check_split(X_train, y_train, X_test, y_test):
    Xtr = _check_acts(X_train, "X_train")
    Xte = _check_acts(X_test, "X_test")
    _check_same_width(Xtr, Xte, "X_train", "X_test")
    ytr = _check_labels(y_train, Xtr.shape[0], "y_train")
    yte = _check_labels(y_test, Xte.shape[0], "y_test")
    return Xtr, ytr, Xte, yte


def linear_probe(X_train, y_train, X_test, y_test, C: float = 1.0, seed: int = 0,
                 class_weight: str | None = None) -> ProbeResult:
    """Logistic regression on standardised features; AUROC and accuracy on the held-out split.
    class_weight="balanced" weighs each class by the inverse of its share (sklearn's option)."""
    from sklearn.linear_model import LogisticRegression

    Xtr, ytr, Xte, yte = _check_split(X_train, y_train, X_test, y_test)
    mu = Xtr.mean(0)
    sd = Xtr.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed, class_weight=class_weight)
    clf.fit((Xtr - mu) / sd, ytr)
    w_raw = clf.coef_[0] / sd  # the same classifier written on raw activations
    b_raw = float(clf.intercept_[0] - (w_raw * mu).sum())
    norm = np.linalg.norm(w_raw)
    if norm == 0:  # a fully regularised probe: no direction, chance performance
        direction, bias = np.zeros_like(w_raw), 0.0
    else:
        direction, bias = w_raw / norm, b_raw / norm
    scores = Xte @ direction + bias
    acc = float((clf.predict((Xte - mu) / sd) == yte).mean())
    return ProbeResult("logistic_regression", _auroc(yte, scores), acc, direction, bias, scores,
                       extra={"C": float(C)})


def diff_of_means(X_train, y_train, X_test, y_test) -> ProbeResult:
    """Baseline: direction = mean(positives) - mean(negatives); score = projection, threshold = midpoint."""
    Xtr, ytr, Xte, yte = _check_split(X_train, y_train, X_test, y_test)
    mu_pos, mu_neg = Xtr[ytr == 1].mean(0), Xtr[ytr == 0].mean(0)
    direction = unit_direction(mu_pos - mu_neg)
    bias = -float(0.5 * (mu_pos + mu_neg) @ direction)
    scores = Xte @ direction + bias
    acc = float(((scores > 0).astype(int) == yte).mean())
    return ProbeResult("diff_of_means", _auroc(yte, scores), acc, direction, bias, scores)


def probe_layers(acts_by_layer: dict, y_train, y_test, C: float = 1.0, seed: int = 0) -> list[dict]:
    """Per-layer table: LR probe AUROC/accuracy next to diff-of-means, one dict per layer (sorted)."""
    if not acts_by_layer:
        raise ValueError("acts_by_layer is empty; pass {layer: (X_train, X_test)} for at least one layer")
    rows = []
    for layer in sorted(acts_by_layer):
        pair = acts_by_layer[layer]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"acts_by_layer[{layer}] must be a pair (X_train, X_test)")
        X_train, X_test = pair
        try:
            lr = linear_probe(X_train, y_train, X_test, y_test, C=C, seed=seed)
            dom = diff_of_means(X_train, y_train, X_test, y_test)
        except ValueError as e:
            raise ValueError(f"layer {layer}: {e}") from e
        rows.append({
            "layer": int(layer),
            "lr_auroc": round(lr.auroc, 4),
            "lr_accuracy": round(lr.accuracy, 4),
            "dom_auroc": round(dom.auroc, 4),
            "dom_accuracy": round(dom.accuracy, 4),
            "n_train": int(as_float64(X_train, "X_train").shape[0]),
            "n_test": int(as_float64(X_test, "X_test").shape[0]),
            "d": int(lr.direction.shape[0]),
        })
    return rows


# ----------------------------------------------------------------------------------------------
# CCS


@dataclass
class PairNorm:
    """Per-side normalisation fitted on training pairs: subtract each side's mean, divide by its std."""

    mean_pos: np.ndarray
    mean_neg: np.ndarray
    std_pos: np.ndarray
    std_neg: np.ndarray

    @classmethod
    def fit(cls, x_pos: np.ndarray, x_neg: np.ndarray, scale: bool = True) -> "PairNorm":
        def sd(x):
            s = x.std(0)
            return np.where(s > 1e-8, s, 1.0) if scale else np.ones(x.shape[1])

        return cls(x_pos.mean(0), x_neg.mean(0), sd(x_pos), sd(x_neg))

    def __call__(self, x_pos: np.ndarray, x_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x_pos - self.mean_pos) / self.std_pos, (x_neg - self.mean_neg) / self.std_neg

    def to_input(self, w: np.ndarray) -> np.ndarray:
        """Map a direction in normalised coordinates back to the activations' coordinates (unit norm)."""
        return unit_direction(w / (0.5 * (self.std_pos + self.std_neg)))


def _check_pairs(x_pos, x_neg, y, prefix: str):
    xp = _check_acts(x_pos, f"x_pos_{prefix}")
    xn = _check_acts(x_neg, f"x_neg_{prefix}")
    if xp.shape != xn.shape:
        raise ValueError(
            f"x_pos_{prefix} {xp.shape} and x_neg_{prefix} {xn.shape} must have the same shape: one row per pair"
        )
    yy = _check_labels(y, xp.shape[0], f"y_{prefix}")
    return xp, xn, yy


def ccs_loss(p_pos: torch.Tensor, p_neg: torch.Tensor) -> torch.Tensor:
    """Consistency (p+ - (1 - p-))^2 plus confidence min(p+, p-)^2, averaged over pairs (last dim)."""
    consistency = (p_pos - (1 - p_neg)) ** 2
    confidence = torch.minimum(p_pos, p_neg) ** 2
    return (consistency + confidence).mean(-1)


def _ccs_logit_grads(p_pos: torch.Tensor, p_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d ccs_loss / d logit for both sides, [R, n] each (the closed form of autograd's answer)."""
    n = p_pos.shape[-1]
    gap = 2 * (p_pos + p_neg - 1)
    pos_smaller = (p_pos < p_neg).to(p_pos.dtype)
    g_pos = (gap + 2 * p_pos * pos_smaller) * p_pos * (1 - p_pos) / n
    g_neg = (gap + 2 * p_neg * (1 - pos_smaller)) * p_neg * (1 - p_neg) / n
    return g_pos, g_neg


def fit_ccs(xn_pos: np.ndarray, xn_neg: np.ndarray, n_restarts: int = 10, n_epochs: int = 1000,
            lr: float = 1e-3, weight_decay: float = 0.01, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """Train linear+sigmoid CCS probes on normalised pairs; keep the restart with the lowest loss.

    All restarts train together as one batch of independent probes (full-batch AdamW, torch on CPU,
    closed-form gradients so tiny steps stay cheap); AdamW and the loss act elementwise per probe,
    so this equals n_restarts separate runs. Returns (weights [d], bias, final loss) of the best restart.
    """
    if n_restarts < 1 or n_epochs < 1:
        raise ValueError("n_restarts and n_epochs must be at least 1")
    xp = torch.as_tensor(xn_pos, dtype=torch.float32)
    xn = torch.as_tensor(xn_neg, dtype=torch.float32)
    d = xp.shape[1]
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / d ** 0.5  # nn.Linear's default init range, as in the paper's code
    W = (torch.rand(n_restarts, d, generator=gen) * 2 - 1) * bound
    b = (torch.rand(n_restarts, generator=gen) * 2 - 1) * bound
    with single_thread(n_restarts * xp.shape[0] * d < 10_000_000):  # tiny ops: threads only add overhead
        losses = _run_ccs(W, b, xp, xn, n_epochs, lr, weight_decay)
    best = int(torch.argmin(losses))
    return W[best].double().numpy().copy(), float(b[best]), float(losses[best])


@torch.no_grad()
def _run_ccs(W, b, xp, xn, n_epochs: int, lr: float, weight_decay: float,
             betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.Tensor:
    """Full-batch AdamW (as torch.optim.AdamW, written out so no optimiser machinery is imported)
    on all restarts at once, in place; returns each restart's final loss [R]."""
    params = [W, b]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for step in range(1, n_epochs + 1):
        p_pos = torch.sigmoid(W @ xp.T + b[:, None])  # [R, n]
        p_neg = torch.sigmoid(W @ xn.T + b[:, None])
        g_pos, g_neg = _ccs_logit_grads(p_pos, p_neg)
        grads = [g_pos @ xp + g_neg @ xn, (g_pos + g_neg).sum(-1)]
        c1, c2 = 1 - betas[0] ** step, 1 - betas[1] ** step
        for p, g, m_, v_ in zip(params, grads, m, v):
            p.mul_(1 - lr * weight_decay)
            m_.mul_(betas[0]).add_(g, alpha=1 - betas[0])
            v_.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
            p.addcdiv_(m_ / c1, (v_ / c2).sqrt_().add_(eps), value=-lr)
    return ccs_loss(torch.sigmoid(W @ xp.T + b[:, None]), torch.sigmoid(W @ xn.T + b[:, None]))


def train_orientation(train_scores: np.ndarray, y_train: np.ndarray, threshold: float = 0.0) -> int:
    """+1 or -1: the orientation of a sign-free score (predict 1 where score > threshold) that is right on
    more TRAINING examples (ties: the one with the training AUROC >= 0.5; then +1). Chosen on training
    data only, so the held-out accuracy of a direction unrelated to the labels is centred on chance."""
    acc = float(((train_scores > threshold).astype(int) == y_train).mean())
    if acc != 0.5:
        return 1 if acc > 0.5 else -1
    return 1 if len(np.unique(y_train)) < 2 or _auroc(y_train, train_scores - threshold) >= 0.5 else -1


def _projection_probe(method: str, direction_norm: np.ndarray, d_train: np.ndarray, y_train: np.ndarray,
                      d_test: np.ndarray, y_test: np.ndarray, norm: PairNorm) -> ProbeResult:
    """Unsupervised probe on contrast differences: threshold at the training mean, oriented on the training
    pairs (train_orientation), scored on the test pairs."""
    u = unit_direction(direction_norm)
    center = float(d_train.mean(0) @ u)
    sign = train_orientation(d_train @ u - center, y_train)
    u, center = sign * u, sign * center
    scores = d_test @ u - center
    acc = float(((scores > 0).astype(int) == y_test).mean())
    return ProbeResult(method, _auroc(y_test, scores), acc, norm.to_input(u), -center, scores, sign_free=True,
                       extra={"orientation": sign})


@dataclass
class CCSReport:
    """CCS beside its baselines; results keyed by method name, and a plain-words verdict."""

    results: dict[str, ProbeResult]
    verdict: str
    ccs_loss: float

    def to_dict(self) -> dict:
        return {
            "results": {k: v.to_dict() for k, v in self.results.items()},
            "verdict": self.verdict,
            "ccs_loss": round(self.ccs_loss, 6),
            "accuracy_note": "CCS, PCA and random directions have no sign of their own: each is oriented to "
                             "score better on the training pairs (one bit of the training labels), then "
                             "scored unchanged on the test pairs (not max(acc, 1-acc) on test)",
        }

    def table(self) -> list[dict]:
        """One row per method, for plotting and JSON."""
        return [r.to_dict() for r in self.results.values()]


def ccs_verdict(ccs_acc: float, dom_acc: float, pca_acc: float, random_acc: float, ceiling_acc: float,
                margin: float = 0.02, n_test: int | None = None) -> str:
    """Plain words: does CCS add anything over the cheap baselines?

    "Clearly better" means ahead by more than margin and, given n_test, by more than two standard
    errors of a difference of two accuracies measured on n_test pairs (small test sets are noisy).
    """
    def gap(a: float, b: float) -> float:
        if not n_test:
            return margin
        return max(margin, 2 * np.sqrt((a * (1 - a) + b * (1 - b)) / n_test))

    if ccs_acc <= random_acc + gap(ccs_acc, random_acc):
        head = f"CCS is no better than random directions here ({ccs_acc:.2f} vs a floor of {random_acc:.2f})"
    elif ccs_acc > dom_acc + gap(ccs_acc, dom_acc):
        head = f"CCS beats diff-of-means here ({ccs_acc:.2f} vs {dom_acc:.2f})"
    else:
        head = f"CCS adds nothing over diff-of-means here ({ccs_acc:.2f} vs {dom_acc:.2f})"
    pca = f"the top principal component of the contrast differences alone reaches {pca_acc:.2f}"
    if random_acc + gap(ccs_acc, random_acc) < ccs_acc <= pca_acc + gap(ccs_acc, pca_acc):
        pca += " (so CCS is not beating plain PCA either)"
    tail = [pca, f"random directions {random_acc:.2f}", f"the supervised logistic-regression ceiling {ceiling_acc:.2f}"]
    text = head + "; " + ", ".join(tail) + "."
    if n_test:
        text += f" Measured on {n_test} held-out pairs"
        text += f" (differences under about {gap(0.75, 0.75):.2f} are noise)." if n_test < 400 else "."
    return text


@dataclass(frozen=True)
class CCSConfig:
    """How ccs_with_baselines fits CCS and its baselines: CCS restarts/epochs/optimiser, per-side std
    normalisation, how many random directions make the floor, the LR ceiling's C, and the accuracy
    margin the verdict calls a real difference."""

    n_restarts: int = 10
    n_epochs: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.01
    normalize_std: bool = True
    n_random: int = 20
    C: float = 1.0
    margin: float = 0.02
    seed: int = 0


def ccs_with_baselines(x_pos_train, x_neg_train, y_train, x_pos_test, x_neg_test, y_test,
                       cfg: CCSConfig = CCSConfig()) -> CCSReport:
    """CCS (best of cfg.n_restarts by lowest loss) and its honest baselines on held-out pairs.

    x_pos[i] / x_neg[i]: activations of example i completed as "true"/"false" (e.g. Yes / No);
    y[i] = 1 when the x_pos side is the true one. Training labels are used by the supervised baselines
    (diff-of-means, LR ceiling) and, one bit of them, to orient the sign-free directions (CCS, the top PC,
    random directions: train_orientation); test labels only to score. Normalisation statistics come from
    the training pairs.
    """
    n_restarts, n_random, seed = cfg.n_restarts, cfg.n_random, cfg.seed
    xp_tr, xn_tr, ytr = _check_pairs(x_pos_train, x_neg_train, y_train, "train")
    xp_te, xn_te, yte = _check_pairs(x_pos_test, x_neg_test, y_test, "test")
    _check_same_width(xp_tr, xp_te, "x_pos_train", "x_pos_test")
    norm = PairNorm.fit(xp_tr, xn_tr, scale=cfg.normalize_std)
    np_tr, nn_tr = norm(xp_tr, xn_tr)
    np_te, nn_te = norm(xp_te, xn_te)
    results: dict[str, ProbeResult] = {}

    # CCS
    w, b, loss = fit_ccs(np_tr, nn_tr, n_restarts, cfg.n_epochs, cfg.lr, cfg.weight_decay, seed)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    credence = lambda a, c: 0.5 * (sig(a @ w + b) + 1 - sig(c @ w + b))  # noqa: E731
    sign = train_orientation(credence(np_tr, nn_tr), ytr, threshold=0.5)
    p = credence(np_te, nn_te)
    p = p if sign > 0 else 1 - p
    acc = float(((p > 0.5).astype(int) == yte).mean())
    results["ccs"] = ProbeResult("ccs", _auroc(yte, p), acc, norm.to_input(sign * w), 0.0, p, sign_free=True,
                                 note=f"best of {n_restarts} restarts by lowest loss, oriented on the training pairs",
                                 extra={"loss": loss, "orientation": sign})

    # baselines on the normalised contrast differences
    d_tr, d_te = np_tr - nn_tr, np_te - nn_te
    dom = diff_of_means(d_tr, ytr, d_te, yte)
    results["diff_of_means"] = ProbeResult("diff_of_means", dom.auroc, dom.accuracy, norm.to_input(dom.direction),
                                           dom.bias, dom.test_scores, note="supervised, on normalised differences")
    centred = d_tr - d_tr.mean(0)
    pc1 = np.linalg.svd(centred, full_matrices=False)[2][0]
    results["pca_top_pc"] = _projection_probe("pca_top_pc", pc1, d_tr, ytr, d_te, yte, norm)
    results["pca_top_pc"].note = "unsupervised top principal component of differences"
    rng = np.random.default_rng(seed + 1)
    rand = [_projection_probe("random", rng.standard_normal(d_tr.shape[1]), d_tr, ytr, d_te, yte, norm)
            for _ in range(max(1, n_random))]
    results["random_floor"] = ProbeResult(
        "random_floor", float(np.mean([r.auroc for r in rand])), float(np.mean([r.accuracy for r in rand])),
        rand[0].direction, sign_free=True, note=f"mean over {len(rand)} random directions",
        extra={"max_accuracy": float(max(r.accuracy for r in rand))})
    ceiling = linear_probe(d_tr, ytr, d_te, yte, C=cfg.C, seed=seed)
    ceiling.method = "lr_ceiling"
    ceiling.note = "supervised logistic regression on normalised differences"
    ceiling.direction = norm.to_input(ceiling.direction) if np.any(ceiling.direction) else ceiling.direction
    results["lr_ceiling"] = ceiling

    verdict = ccs_verdict(results["ccs"].accuracy, results["diff_of_means"].accuracy,
                          results["pca_top_pc"].accuracy, results["random_floor"].accuracy,
                          ceiling.accuracy, cfg.margin, n_test=len(yte))
    return CCSReport(results, verdict, loss)


# ----------------------------------------------------------------------------------------------
# RepE / LAT


def reading_vector(diffs, flip: bool = True, seed: int = 0) -> np.ndarray:
    """LAT reading vector: first principal component of pair differences h(pos) - h(neg), unit norm.

    As in the paper, each pair's order is flipped at random before PCA (otherwise centring would
    remove the shared concept offset); the sign is then set so most unflipped pairs project positive.
    """
    D = _check_acts(diffs, "diffs")
    if D.shape[0] < 2:
        raise ValueError(f"need at least 2 pair differences for PCA, got {D.shape[0]}")
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=D.shape[0]) if flip else np.ones(D.shape[0])
    M = D * signs[:, None]
    M = M - M.mean(0)
    _, sing, vt = np.linalg.svd(M, full_matrices=False)
    v = vt[0]
    if sing[0] <= 1e-12 * max(1.0, np.abs(D).max()):
        raise ValueError("the pair differences have no variance; are the positive and negative prompts identical?")
    proj = D @ v
    if (proj > 0).sum() < (proj < 0).sum() or ((proj > 0).sum() == (proj < 0).sum() and proj.sum() < 0):
        v = -v
    return unit_direction(v)


def reading_accuracy(pos_acts, neg_acts, direction) -> float:
    """Fraction of pairs where the positive prompt projects higher on the direction than the negative."""
    P = _check_acts(pos_acts, "pos_acts")
    N = _check_acts(neg_acts, "neg_acts")
    if P.shape != N.shape:
        raise ValueError(f"pos_acts {P.shape} and neg_acts {N.shape} must have the same shape: one row per pair")
    u = unit_direction(direction)
    if u.shape[0] != P.shape[1]:
        raise ValueError(f"direction has {u.shape[0]} dims but activations have {P.shape[1]}; use the same layer")
    return float(((P - N) @ u > 0).mean())


def monitor_scores(acts, direction, center: float | None = None) -> np.ndarray:
    """Projection of each row of acts [n, d] on the unit direction (minus center if given)."""
    A = _check_acts(acts, "acts")
    u = unit_direction(direction)
    if u.shape[0] != A.shape[1]:
        raise ValueError(f"direction has {u.shape[0]} dims but acts have {A.shape[1]}; use the same layer")
    scores = A @ u
    return scores - center if center is not None else scores


def typical_norm(acts) -> float:
    """Mean L2 norm of activation rows: the scale that makes steering alphas comparable across layers."""
    return float(np.linalg.norm(_check_acts(acts, "acts"), axis=1).mean())


@dataclass
class LATResult:
    """Per-layer LAT: reading vectors fitted on training pairs, the best layer chosen by accuracy on
    validation pairs, and its accuracy on test pairs neither the fit nor the choice saw (`test_accuracy`).
    `split` holds the pair indices of "train", "val" and "test"."""

    table: list[dict]
    directions: dict[int, np.ndarray]
    norms: dict[int, float]
    best_layer: int
    split: dict[str, np.ndarray]

    @property
    def test_accuracy(self) -> float:
        """The held-out test accuracy of the best layer's vector: the number to report."""
        return next(r["test_accuracy"] for r in self.table if r["layer"] == self.best_layer)


def pair_split(n: int, test_frac: float = 0.25, val_frac: float = 0.25, seed: int = 0) -> dict[str, np.ndarray]:
    """Disjoint pair indices {"train", "val", "test"}: round(frac * n) pairs each for test and validation
    (at least 1 each), the rest (at least 2) to fit on; a seeded permutation."""
    if not (0 < test_frac < 1 and 0 < val_frac < 1 and test_frac + val_frac < 1):
        raise ValueError(f"test_frac={test_frac} and val_frac={val_frac} must be in (0, 1) with a sum below 1: "
                         "the rest of the pairs fits the vectors")
    n_test, n_val = max(1, int(round(test_frac * n))), max(1, int(round(val_frac * n)))
    if n - n_test - n_val < 2:
        raise ValueError(f"{n} pairs leave {n - n_test - n_val} to fit on after {n_test} test and {n_val} validation "
                         "pairs: add pairs or lower TEST_FRAC / VAL_FRAC")
    perm = np.random.default_rng(seed).permutation(n)
    return {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}


def lat_layers(pos_by_layer: dict, neg_by_layer: dict, test_frac: float = 0.25, val_frac: float = 0.25,
               seed: int = 0) -> LATResult:
    """Reading vector per layer from the training pairs (pair_split); the best layer is the one with the
    highest validation accuracy (ties: training accuracy, then the lower layer), and its accuracy on the
    test pairs is the held-out number (LATResult.test_accuracy)."""
    if not pos_by_layer or set(pos_by_layer) != set(neg_by_layer):
        raise ValueError("pos_by_layer and neg_by_layer must be non-empty dicts with the same layers")
    n = _check_acts(next(iter(pos_by_layer.values())), "pos acts").shape[0]
    if n < 4:
        raise ValueError(f"need at least 4 pairs (2 to fit, 1 to choose the layer, 1 to test), got {n}")
    split = pair_split(n, test_frac, val_frac, seed)
    train, val, test = split["train"], split["val"], split["test"]
    table, directions, norms = [], {}, {}
    for layer in sorted(pos_by_layer):
        P = _check_acts(pos_by_layer[layer], f"pos acts of layer {layer}")
        N = _check_acts(neg_by_layer[layer], f"neg acts of layer {layer}")
        if P.shape != N.shape or P.shape[0] != n:
            raise ValueError(f"layer {layer}: pos {P.shape} and neg {N.shape} must both be [{n}, d]")
        v = reading_vector(P[train] - N[train], seed=seed)
        directions[layer] = v
        norms[layer] = typical_norm(np.concatenate([P, N]))
        table.append({"layer": int(layer),
                      "train_accuracy": round(reading_accuracy(P[train], N[train], v), 4),
                      "val_accuracy": round(reading_accuracy(P[val], N[val], v), 4),
                      "test_accuracy": round(reading_accuracy(P[test], N[test], v), 4),
                      "n_train": int(len(train)), "n_val": int(len(val)), "n_test": int(len(test))})
    best = max(table, key=lambda r: (r["val_accuracy"], r["train_accuracy"], -r["layer"]))["layer"]
    return LATResult(table, directions, norms, best, split)


# ----------------------------------------------------------------------------------------------
# notebook helpers: CCS prompts


def ccs_prompt_pairs(items: Sequence[dict], task: str, tokenizer=None, max_text_tokens: int | None = None,
                     answers: tuple[str, str] = (" Yes", " No")) -> tuple[list[str], list[str], np.ndarray]:
    """CCS contrast prompts for labelled items: (prompts ending " Yes", prompts ending " No", labels).

    task picks the question ("sentiment" | "truth"); label 1 means the " Yes" side is right. Long texts
    are cut to max_text_tokens *before* the question, so truncation never removes the answer token.
    """
    template = ccs_template(task)
    if not items:
        raise ValueError("items is empty; load some labelled examples first")
    if max_text_tokens and tokenizer is None:
        raise ValueError("max_text_tokens needs the tokenizer")
    pos, neg, labels = [], [], []
    for it in items:
        text = it["text"]
        if max_text_tokens:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > max_text_tokens:
                text = tokenizer.decode(ids[:max_text_tokens]) + " ..."
        p = template.format(text=text)
        pos.append(p + answers[0])
        neg.append(p + answers[1])
        labels.append(int(it["label"]))
    return pos, neg, np.asarray(labels, dtype=np.int64)


def ccs_task_of(dataset: str) -> str:
    """Which CCS question suits a dataset name: "truth" for truthful_qa / synthetic:truth, else "sentiment"."""
    return "truth" if "truth" in dataset.lower() else "sentiment"
