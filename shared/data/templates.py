"""CCS prompt wording (Burns et al. 2022): one yes/no question per task, the single home of the text
that `synthetic.ccs_pairs` and `probes.ccs_prompt_pairs` (for any labelled items) both format."""
from __future__ import annotations

CCS_TEMPLATES = {
    "sentiment": "Review: {text}\nQuestion: Is the sentiment of this review positive?\nAnswer:",
    "truth": "Statement: {text}\nQuestion: Is this statement true?\nAnswer:",
}


def ccs_template(task: str) -> str:
    """The prompt of a CCS task ("sentiment" | "truth"), with a {text} slot; answers " Yes"/" No" follow it."""
    if task not in CCS_TEMPLATES:
        raise ValueError(f"unknown CCS task {task!r}; valid tasks: {', '.join(CCS_TEMPLATES)}")
    return CCS_TEMPLATES[task]
