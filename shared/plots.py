"""Matplotlib figures the notebooks show: training curves and validation summaries."""
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
