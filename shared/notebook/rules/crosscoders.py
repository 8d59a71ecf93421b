"""The rules of a crosscoder (17): its sparsity (saes.crosscoder.ARCHITECTURES) and the decoder-norm shares
that classify its features as dominated by one layer or persistent across them."""
from __future__ import annotations

from ..parameters import Rule, choice, number

RULES: dict[str, Rule] = {
    "SPARSITY": choice("topk", "l1"), "L1_COEFFICIENT": number(0.0, open_low=False),
    "DOMINANT_SHARE": number(0.5, high=1.0, open_high=False, hint=" (one layer at most can dominate)"),
    "PERSISTENT_SHARE": number(0.0, high=0.5, open_high=False, hint=" and <= 1/len(LAYERS)"),
}
