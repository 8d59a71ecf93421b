"""The rules of circuit discovery: the task and its metric, what a node is patched to, AtP*'s two fixes (14),
sparse feature circuits' node method and thresholds (15), ACDC's threshold and target and the edge budgets of
the faithfulness curves (16). The names are shared.circuits' TASKS / GRADIENT_METRICS / ABLATIONS, written out
so a notebook's first cell does not vendor the circuits package (tests/test_circuits_tasks.py keeps them equal)."""
from __future__ import annotations

import os

from ..parameters import POSITIVE, Rule, choice, flag, number, text


def _gradient_metric(v, ctx):
    if v == "kl":
        raise ValueError("has zero gradient on the clean run (KL to the clean run is smallest there), so AtP "
                         "would score every node 0: use 'logit_diff' or 'prob'")
    return choice("logit_diff", "prob")(v, ctx)


def _edge_budgets(v, ctx):
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError("must be a non-empty list of edge counts >= 1, e.g. [2, 5, 10, 20, 50, 100, 200]")
    return sorted({POSITIVE(x, ctx) for x in v})


def _autocircuit_python(v, ctx):
    text(empty_ok=True)(v, ctx)
    if v.strip() and not os.path.isfile(v.strip()):
        raise ValueError("must be '' (skip the AutoCircuit check) or the path of the python of a venv built by "
                         "scripts/autocircuit_venv.sh, e.g. '.venv-autocircuit/bin/python'")
    return v.strip()


_EFFECT = " (|effect| in metric units)"

RULES: dict[str, Rule] = {
    # node attribution (14)
    "TASK": choice("ioi", "sva", "synthetic"), "METRIC": _gradient_metric,
    "COUNTERFACTUAL": choice("mean", "resample", "zero"), "USE_QK_FIX": flag, "USE_GRADDROP": flag,
    "TOP_N": POSITIVE,
    # sparse feature circuits (15)
    "NODE_METHOD": choice("ig", "atp"), "IG_STEPS": POSITIVE,
    "TAU_NODE": number(0.0, open_low=False, hint=_EFFECT), "TAU_EDGE": number(0.0, open_low=False, hint=_EFFECT),
    # edge-level circuits (16)
    "TAU": number(0.0, open_low=False, hint=", e.g. 0.05 (ACDC removes an edge whose patching moves the target less)"),
    "ACDC_METRIC": choice("kl", "logit_diff", "prob"), "EDGE_BUDGETS": _edge_budgets,
    "AUTOCIRCUIT_PYTHON": _autocircuit_python,
}
