"""Seeds and train/held-out splits shared by every data source and the synthetic corpus: a seeded RNG
per purpose (`seeded_rng`) and the stable 80/20 split of an item by the hash of its key (`split_of`),
so training and validation never share a document or a labelled item."""
from __future__ import annotations

import hashlib
import random

_TEST_FRACTION = 0.2


def seeded_rng(*parts) -> random.Random:
    """A random.Random seeded by the joined parts, e.g. seeded_rng("task", name, seed, split)."""
    return random.Random(":".join(str(p) for p in parts))


def split_of(key: str) -> str:
    """Stable "train"/"test" (80/20) by hashing an item's key, so train and test never share items."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") / 2**32
    return "test" if h < _TEST_FRACTION else "train"
