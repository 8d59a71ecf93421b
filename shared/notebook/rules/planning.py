"""The rules of planning a run (07): the GPU, the time budget, the goal. The GPU classes and goals are
planning.gpus' GPU_CLASSES names and planning.recommend's GOALS, written out so the first cell does not vendor the planner
(tests/test_parameters.py keeps them equal)."""
from __future__ import annotations

from ..parameters import Rule, choice, number

GPU_CLASSES = ("T4", "2xT4", "L4", "A10G", "RTX-4090", "A100-40", "A100-80", "H100-80", "RTX-PRO-6000", "H200", "cpu")
GOALS = ("learn", "explore", "paper")


def _gpu(v, ctx):
    """A GPU class by name (any case; planning.gpus.gpu_class's reading), "auto" to detect, None for the CPU."""
    if v == "auto":
        return v
    if v is None:
        return "cpu"
    for name in GPU_CLASSES:
        if name.lower() == str(v).strip().lower():
            return name
    raise ValueError(f"unknown GPU class {v!r}; use one of {', '.join(GPU_CLASSES)} (or 'auto' to detect)")


RULES: dict[str, Rule] = {"GPU": _gpu, "BUDGET_MINUTES": number(0.0), "GOAL": choice(*GOALS)}
