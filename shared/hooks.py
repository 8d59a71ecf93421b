"""Which residual stream: the one place that turns a layer spec into decoder-block indices.

Layer L is the residual stream as decoder block L leaves it. Every module that reads or edits it
(capture, lens, probes, intervene, the notebooks' parameter checks) resolves its layer argument
with `resolve_layers`, so negative indices, lists, "all" and notebook strings mean the same thing
everywhere. (This module is meant to become the single home of the residual read/edit hooks too.)
"""
from __future__ import annotations

import numbers
import re

_RANGE = re.compile(r"(-?\d+)-(-?\d+)")
_FORMS = ("an int such as 12 (negative counts from the end), a list such as [4, 8], 'all', 'middle', "
          "or comma-separated indices and ranges such as '0,3,5' or '0-4'")


def _count(model_or_n) -> int:
    if isinstance(model_or_n, numbers.Integral) and not isinstance(model_or_n, bool):
        n = int(model_or_n)
    else:
        from .models import n_layers

        n = n_layers(model_or_n)
    if n < 1:
        raise ValueError(f"n_layers must be >= 1, got {n}")
    return n


def _one(x, spec, n: int, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (numbers.Integral, str)):
        raise ValueError(f"{name} {spec!r} is not a layer spec: use {_FORMS}")
    try:
        x = int(x)
    except ValueError:
        raise ValueError(f"{name} {spec!r} is not a layer spec: use {_FORMS}") from None
    if not -n <= x < n:
        raise ValueError(f"layer {x} is out of range: this model has {n} decoder layers (blocks 0..{n - 1}), "
                         f"valid layers are 0..{n - 1} (or -{n}..-1 from the end)")
    return x % n


def _items(spec, n: int, name: str) -> list:
    """The raw entries of a spec (ints or int strings), ranges and keywords expanded."""
    if isinstance(spec, str):
        s = spec.strip().lower().replace(" ", "")
        if s == "all":
            return list(range(n))
        if s == "middle":
            return [n // 2]
        out: list = []
        for part in filter(None, s.split(",")):
            m = _RANGE.fullmatch(part)
            if m:
                lo, hi = (_one(v, spec, n, name) for v in m.groups())
                if lo > hi:
                    raise ValueError(f"{name} range {part!r} runs backwards; write it low-high, e.g. '{hi}-{lo}'")
                out += range(lo, hi + 1)
            else:
                out.append(part)
        return out
    if isinstance(spec, (numbers.Integral, bool)):
        return [spec]
    if isinstance(spec, (list, tuple, range)) or type(spec).__name__ == "ndarray":
        return list(spec)
    raise ValueError(f"{name} {spec!r} is not a layer spec: use {_FORMS}")


def resolve_layers(spec, model_or_n, *, dedupe: bool = False, allow_empty: bool = False,
                   name: str = "layer") -> list[int]:
    """Non-negative block indices for `spec`, in the order given, against a model or a layer count.

    spec: an int (negative counts from the end), a list/tuple of ints, "all", "middle", or a string
    such as "2", "-1", "0,3,5", "0-4". Out-of-range, non-integer and (unless dedupe) repeated
    layers raise a one-line ValueError naming `name` and the valid range; so does an empty spec
    unless allow_empty.
    """
    n = _count(model_or_n)
    out: list[int] = []
    for x in _items(spec, n, name):
        layer = _one(x, spec, n, name)
        if layer in out:
            if dedupe:
                continue
            raise ValueError(f"{name} {spec!r} names layer {layer} twice (negative indices count from the end); "
                             f"list each layer once")
        out.append(layer)
    if not out and not allow_empty:
        raise ValueError(f"No layers requested ({name} = {spec!r}); pass one or more of 0..{n - 1}, or 'all'")
    return out
