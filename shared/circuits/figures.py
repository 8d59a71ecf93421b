"""Figures of circuit attribution: estimated vs exact patching effects, one panel per method."""
from __future__ import annotations


def attribution_scatter(exact: dict[str, float], estimates: dict[str, dict[str, float]], *, label_top: int = 5):
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
