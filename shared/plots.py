"""Matplotlib figures the notebooks show: training curves, validation summaries and per-layer probe results."""
from __future__ import annotations

from pathlib import Path

_CURVES = (("fvu", "FVU (lower is better)"), ("l0", "L0 (active latents per token)"),
           ("dead_pct", "dead latents (%)"), ("aux_loss", "AuxK loss"))


def plot_training_curves(history: list[dict], save_to: str | Path | None = None):
    """One panel per metric (FVU, L0, dead %, AuxK loss) against tokens, a line per layer."""
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("no metrics to plot: the run logged nothing (train longer or lower log_every)")
    layers = sorted({key.split("/")[0] for entry in history for key in entry if "/" in key})
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
    ax.set_ylabel("accuracy (hatched: sign-free max(acc, 1-acc))")
    ax.set_title(title)
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
