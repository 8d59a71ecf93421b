"""Matplotlib figures the notebooks show: training curves, validation summaries and per-layer probe results."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

_CURVES = (("fvu", "FVU (lower is better)"), ("l0", "L0 (active latents per token)"),
           ("dead_pct", "dead latents (%)"), ("aux_loss", "AuxK loss"))


def plot_training_curves(history: list[dict], save_to: str | Path | None = None):
    """One panel per metric (FVU, L0, dead %, AuxK loss) against tokens, a line per layer."""
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("no metrics to plot: the run logged nothing (train longer or lower log_every)")
    layers = sorted({key.rsplit("/", 1)[0] for entry in history for key in entry if "/" in key})  # "L3", "L3/topk-k32"
    fig, axes = plt.subplots(1, len(_CURVES) + 1, figsize=(4 * (len(_CURVES) + 1), 3.2))
    tokens = [entry["tokens"] for entry in history]
    for ax, (metric, title) in zip(axes, _CURVES):
        for layer in layers:
            ax.plot(tokens, [entry.get(f"{layer}/{metric}", float("nan")) for entry in history], label=layer)
        ax.set_title(title)
        ax.set_xlabel("tokens")
    axes[-1].plot(tokens, [entry["lr"] for entry in history], color="gray")
    axes[-1].set_title("learning rate")
    axes[-1].set_xlabel("tokens")
    axes[0].legend()
    fig.tight_layout()
    if save_to is not None:
        fig.savefig(save_to, dpi=120)
    return fig


def _plot_layers(table: list[dict], series: dict[str, str], ylabel: str, title: str,
                 best_layer: int | None = None, chance: float | None = 0.5):
    import matplotlib.pyplot as plt

    if not table:
        raise ValueError("the table is empty; nothing to plot")
    layers = [r["layer"] for r in table]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for key, label in series.items():
        ax.plot(layers, [r[key] for r in table], marker="o", label=label)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", label=f"chance ({chance:g})")
    if best_layer is not None:
        ax.axvline(best_layer, color="k", ls="--", lw=1, label=f"best layer {best_layer}")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("layer (residual output of block)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(min(0.4, ax.get_ylim()[0]), 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_layer_auroc(table: list[dict], best_layer: int | None = None, title: str = "held-out AUROC per layer"):
    """Line plot of probe_layers' table: logistic-regression AUROC next to diff-of-means, chance at 0.5."""
    return _plot_layers(table, {"lr_auroc": "logistic regression", "dom_auroc": "diff-of-means"},
                        "AUROC (held out)", title, best_layer)


def plot_reading_accuracy(table: list[dict], best_layer: int | None = None,
                          title: str = "LAT reading accuracy per layer"):
    """Line plot of lat_layers' table: held-out and training reading accuracy, chance at 0.5."""
    return _plot_layers(table, {"test_accuracy": "held-out pairs", "train_accuracy": "training pairs"},
                        "reading accuracy", title, best_layer)


def plot_ccs_sweep(rows: list[dict], title: str = "CCS and baselines across layers"):
    """Line plot of per-layer accuracies; rows hold "layer" and one key per method (e.g. ccs, diff_of_means)."""
    keys = [k for k in rows[0] if k != "layer"] if rows else []
    return _plot_layers(rows, {k: k for k in keys}, "accuracy (held out)", title)


def plot_ccs_methods(report, title: str = "CCS beside its baselines (held-out accuracy)"):
    """Bar chart of each method's held-out accuracy in a probes.CCSReport; unsupervised ones are hatched, chance at 0.5."""
    import matplotlib.pyplot as plt

    names = list(report.results)
    accs = [report.results[k].accuracy for k in names]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.bar(names, accs, color=["C3" if k == "ccs" else "C0" for k in names])
    for bar, k, a in zip(bars, names, accs):
        if report.results[k].sign_free:
            bar.set_hatch("//")
        ax.text(bar.get_x() + bar.get_width() / 2, a + 0.01, f"{a:.2f}", ha="center", fontsize=9)
    ax.axhline(0.5, color="grey", ls=":")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("held-out accuracy\n(hatched: no sign, oriented on train)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_g1_scatter(rows: list[dict], rho: float | None, p_value: float | None, passed: bool,
                    title: str = "Stage Gate G1: R_mech vs correctness"):
    """Scatter of each problem's R_mech (x) against its correctness (y: 1 right, 0 wrong, jittered),
    with the Spearman rho, p and the verdict in the title; problems without a score are left out."""
    import matplotlib.pyplot as plt
    import numpy as np

    pts = [(r["r_mech"], float(bool(r["correct"]))) for r in rows if r.get("r_mech") is not None]
    if not pts:
        raise ValueError("no problem has an R_mech score; nothing to plot")
    x, y = np.array(pts).T
    jitter = np.random.default_rng(0).uniform(-0.08, 0.08, len(y))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.scatter(x, y + jitter, c=np.where(y > 0, "C2", "C3"), alpha=0.7, s=22)
    for label, value in ((1.0, "right"), (0.0, "wrong")):
        sel = x[y == label]
        if sel.size:
            ax.plot([sel.mean()] * 2, [label - 0.15, label + 0.15], color="k", lw=2)
    ax.set_yticks([0, 1], ["wrong", "right"])
    ax.set_xlabel("R_mech = helpful-pack mean - harmful-pack mean (response tokens)")
    stat = "rho undefined" if rho is None else f"Spearman rho = {rho:.3f}, p = {p_value:.3g}"
    ax.set_title(f"{title}\n{stat}: {'PASS' if passed else 'FAIL'} (black bars: group means)")
    fig.tight_layout()
    return fig


_MARKERS = "osD^vP*X"


def plot_pareto(points: list[dict], title: str = "variance explained vs L0 (held out)"):
    """Three panels of a k sweep (sweep.sweep_points, marked by sweep.summarize): variance explained
    vs L0 with the Pareto frontier (the points marked on_frontier) dashed, dead latents (%) and CE
    loss recovered vs L0; a marker and colour per architecture, each point labelled with its k; L0
    on a log axis."""
    import matplotlib.pyplot as plt

    if not points:
        raise ValueError("no sweep points to plot: train and evaluate at least one SAE")
    archs = list(dict.fromkeys(p["architecture"] for p in points))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (("var_expl", "variance explained"), ("dead_pct", "dead latents (%)"),
              ("ce_loss_recovered", "CE loss recovered"))
    for ax, (metric, label) in zip(axes, panels):
        for i, arch in enumerate(archs):
            pts = sorted((p for p in points if p["architecture"] == arch), key=lambda p: p["l0"])
            ax.plot([p["l0"] for p in pts], [p[metric] for p in pts], marker=_MARKERS[i % len(_MARKERS)],
                    color=f"C{i}", label=arch)
            for p in pts:
                ax.annotate(f"k={p['k']}", (p["l0"], p[metric]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=f"C{i}")
        ax.set_xscale("log")
        ax.set_xlabel("L0 (active latents per token, held out)")
        ax.set_ylabel(label)
    front = sorted((p for p in points if p.get("on_frontier")), key=lambda p: p["l0"])
    if front:
        axes[0].plot([p["l0"] for p in front], [p["var_expl"] for p in front], ls="--", color="grey", lw=1,
                     label="Pareto frontier", zorder=0)
    axes[0].set_title(title)
    axes[1].set_title("dead latents (never fired on held-out tokens)")
    axes[2].set_title("CE loss recovered with the SAE spliced in")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_crosscoder_features(norms, classes: list[str], layers: list[int], order: tuple[str, ...],
                             title: str = "crosscoder features: decoder norm share per layer"):
    """Left: each live feature's decoder-norm share per layer (a heat map, one row per feature, grouped
    by class in `order`); right: the count of features per class."""
    import matplotlib.pyplot as plt
    import numpy as np

    norms = np.asarray(norms, dtype=float)
    share = norms / np.maximum(norms.sum(1, keepdims=True), 1e-12)
    rows = [i for c in order if c != "dead" for i, x in enumerate(classes) if x == c]
    counts = [sum(1 for x in classes if x == c) for c in order]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.4]})
    image = ax.imshow(share[rows] if rows else np.zeros((1, len(layers))), aspect="auto", vmin=0, vmax=1,
                      cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(layers)), [f"L{x}" for x in layers])
    ax.set_title("decoder norm share per layer (live features)")
    edge, ticks, names = 0, [], []
    for c, n in zip(order, counts):
        if c != "dead" and n:
            ticks.append(edge + (n - 1) / 2)
            names.append(f"{c} ({n})")
            edge += n
            ax.axhline(edge - 0.5, color="w", lw=0.8)
    ax.set_yticks(ticks, names, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.05)
    bars = bx.bar(order, counts, color=[f"C{i}" for i in range(len(order))])
    for bar, n in zip(bars, counts):
        bx.text(bar.get_x() + bar.get_width() / 2, n, str(n), ha="center", va="bottom", fontsize=9)
    bx.set_ylabel("features")
    bx.set_title("features per class")
    bx.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_interpscore(report: dict, title: str = "InterpScore and its parts"):
    """Bars of interpscore.json's parts: each component's raw value (light) and weight x value (dark,
    the share of the score it gives), with the total InterpScore as a last bar."""
    import matplotlib.pyplot as plt

    names = list(report["weights"])
    raw = [report["components"][c] for c in names]
    weighted = [report["weights"][c] * report["components"][c] for c in names]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    x = range(len(names))
    ax.bar(x, raw, color="C0", alpha=0.3, label="component (0-1)")
    ax.bar(x, weighted, color="C0", label="weight x component")
    for i, (w, c) in enumerate(zip(weighted, names)):
        ax.text(i, raw[i] + 0.02, f"{w:.3f}\n(w {report['weights'][c]:.2f})", ha="center", fontsize=8)
    ax.bar(len(names), report["interp_score"], color="C3", label="InterpScore")
    ax.text(len(names), report["interp_score"] + 0.02, f"{report['interp_score']:.3f}", ha="center", fontsize=9)
    ax.set_xticks(list(x) + [len(names)], names + ["InterpScore"], rotation=15)
    ax.set_ylim(0, 1.35)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    return fig


def plot_faithfulness_curves(curves: dict[str, dict], title: str = "faithfulness of the top-k edges"):
    """Faithfulness against the edge budget (log x), one line per method; curves: {method: faithfulness_curve(...)}."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, c in curves.items():
        xs = [max(k, 1) for k in c["budgets"]]
        ax.plot(xs, c["faithfulness"], marker="o", label=method)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.axhline(0.0, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("edges kept (all others patched to the corrupt run)")
    ax.set_ylabel("faithfulness (1 = full model, 0 = corrupt)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_attribution_scatter(exact: dict[str, float], estimates: dict[str, dict[str, float]], *, label_top: int = 5):
    """A Figure: for each method, its score against the exact patching effect on the nodes both hold,
    with the diagonal (a perfect linear estimate) and the top nodes by |exact effect| labelled."""
    import matplotlib.pyplot as plt

    if not exact or not estimates:
        raise ValueError("nothing to plot: pass exact effects and at least one method's estimates")
    fig, axes = plt.subplots(1, len(estimates), figsize=(4.2 * len(estimates), 4), squeeze=False)
    top = sorted(exact, key=lambda i: -abs(exact[i]))[:label_top]
    for ax, (method, est) in zip(axes[0], estimates.items()):
        ids = [i for i in exact if i in est]
        xs, ys = [exact[i] for i in ids], [est[i] for i in ids]
        ax.scatter(xs, ys, s=14, alpha=0.7)
        lo, hi = min(xs + ys + [0.0]), max(xs + ys + [0.0])
        ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8, ls="--")
        for i in top:
            if i in est:
                ax.annotate(i, (exact[i], est[i]), fontsize=7)
        ax.set_xlabel("exact patching effect")
        ax.set_ylabel(f"{method} score")
        ax.set_title(method)
    return fig


def plot_faithfulness_completeness(rows: Sequence[dict], circuit_size: int | None = None,
                                   title: str = "faithfulness and completeness"):
    """A Figure: faithfulness (the top-k nodes alone) and completeness (the model without them) against k, on a
    log-x axis, with the thresholded circuit's size marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ks = [max(r["n_nodes"], 0.5) for r in rows]  # k = 0 drawn at 0.5 on the log axis
    ax.plot(ks, [r["faithfulness"] for r in rows], "o-", label="faithfulness: circuit alone")
    ax.plot(ks, [r["completeness"] for r in rows], "s--", label="completeness: model without the circuit")
    if circuit_size:
        ax.axvline(circuit_size, color="gray", lw=0.8, ls=":", label=f"thresholded circuit ({circuit_size} nodes)")
    ax.axhline(1, color="black", lw=0.5)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("nodes kept (top k by |effect|; 0 at 0.5)")
    ax.set_ylabel("(m - m(empty)) / (m(model) - m(empty))")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- lenses (19, 20)

def _short_token(s, n=8):
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)  # "\n", "\x10": visible, and in the font
    return s if len(s) <= n else s[: n - 1] + "…"


def plot_lens_heatmap(table, value="prob", max_tokens=40, annotate=True):
    """Token x layer heat map of top-1 probability (value="prob") or KL to final ("kl"), top-1 token written in."""
    import matplotlib.pyplot as plt

    if value not in ("prob", "kl"):
        raise ValueError('value must be "prob" or "kl".')
    tokens = table["tokens"][-max_tokens:]
    T = len(tokens)
    grid = [[p[0] for p in row[-T:]] for row in table["top_probs"]] if value == "prob" else [row[-T:] for row in table["kl"]]
    words = [[w[0] for w in row[-T:]] for row in table["top_tokens"]]
    L = len(grid)
    fig, ax = plt.subplots(figsize=(min(2 + 0.8 * T, 40), min(max(3.5, 1.5 + 0.38 * L), 40)))
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis" if value == "prob" else "magma_r",
                   vmin=0, vmax=1 if value == "prob" else None)
    if annotate:
        for li in range(L):
            for ti in range(T):
                ax.text(ti, li, _short_token(words[li][ti]), ha="center", va="center", fontsize=7, color="w" if value == "prob" and grid[li][ti] < 0.5 else "k")
    ax.set_xticks(range(T), [_short_token(t, 10) for t in tokens], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(L), [str(x) for x in table["layers"]], fontsize=8)
    ax.set_xlabel("input token (prediction is for the next token)")
    ax.set_ylabel("layer (block output)")
    ax.set_title(f"{table.get('lens', 'logit')} lens: " + ("top-1 probability" if value == "prob" else "KL(final || layer), nats"))
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def plot_kl_per_layer(table):
    """Mean KL(final || layer) over the prompt's positions, one point per layer."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(table["layers"], table["kl_mean"], marker="o")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("KL(final || lens), nats")
    ax.set_title(f"{table.get('lens', 'logit')} lens: distance to the final prediction")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_lens_comparison(report):
    """Two panels: KL to the final distribution and top-1 agreement per layer, logit vs tuned lens."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, style in (("logit_lens", "o--"), ("tuned_lens", "s-")):
        axes[0].plot(report["layers"], report[name]["kl"], style, label=name.replace("_", " "))
        axes[1].plot(report["layers"], report[name]["top1_agreement"], style, label=name.replace("_", " "))
    axes[0].set_ylabel("KL(final || lens), nats")
    axes[1].set_ylabel("top-1 agreement with final")
    axes[1].set_ylim(0, 1.02)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Tuned vs logit lens on {report['n_tokens']} held-out tokens")
    fig.tight_layout()
    return fig
