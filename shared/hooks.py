"""The residual stream's one home: which layer a spec means, and the hooks that read or edit it.

Layer L is the residual stream as decoder block L leaves it. `resolve_layers` turns a layer spec
(negative indices, lists, "all", notebook strings) into block indices for every module; the
context managers `read_residuals` (record block outputs or inputs, optionally stopping the forward
after the deepest one), `read_final_norm_input` and `edit_residual` (replace a block's output) are
the only forward hooks in shared/, so each architecture's tuple-or-tensor block output is
unwrapped (`block_hidden`) and rewrapped (`with_hidden`) in one place.
"""
from __future__ import annotations

import numbers
import re
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

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


# ----------------------------------------------------------------------------- block outputs


def block_hidden(output) -> torch.Tensor:
    """The residual-stream tensor inside a decoder block's output (tensor, tuple or list)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def with_hidden(output, new_hidden: torch.Tensor):
    """The block output with its hidden state swapped, keeping the architecture's container."""
    if isinstance(output, torch.Tensor):
        return new_hidden
    if isinstance(output, tuple):
        return (new_hidden,) + tuple(output[1:])
    if isinstance(output, list):
        return [new_hidden] + list(output[1:])
    raise TypeError(f"unexpected decoder block output type {type(output).__name__}")


def _blocks(model):
    from .models import decoder_layers

    return decoder_layers(model)


# ----------------------------------------------------------------------------- read


class _StopForward(Exception):
    """Raised from a hook after the deepest requested layer to skip the rest of the forward."""


@contextmanager
def read_residuals(model, layers, *, at: str = "output", stop_after_deepest: bool = False,
                   on_read: Callable[[int, torch.Tensor], None] | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, record the residual stream at each requested layer into the yielded dict.

    The dict fills as the model runs: {layer: [B, T, D]} (detached; layers resolved by
    resolve_layers, negatives counting from the end). at="output" reads what block L writes (layer
    L), at="input" what enters it (the embeddings for L = 0). With stop_after_deepest the forward
    is aborted right after the deepest layer is read (nothing after it runs, not even lm_head) and
    the context swallows that stop, so `with read_residuals(...) as acts: model(ids)` just works.
    on_read(layer, hidden) is called on every read, so a reader sees each forward of a `generate`
    (the dict keeps only the latest).
    """
    if at not in ("output", "input"):
        raise ValueError(f"at must be 'output' or 'input', got {at!r}")
    blocks = _blocks(model)
    wanted = resolve_layers(layers, len(blocks), dedupe=True)
    deepest = max(wanted)
    token = object()  # this reader's stop, so a nested reader never swallows another's
    out: dict[int, torch.Tensor] = {}

    def record(layer: int, hidden: torch.Tensor) -> None:
        out[layer] = hidden.detach()
        if on_read is not None:
            on_read(layer, out[layer])
        if stop_after_deepest and layer == deepest:
            raise _StopForward(token)

    def output_hook(layer):
        return lambda _module, _args, output: record(layer, block_hidden(output))

    def input_hook(layer):
        return lambda _module, args, kwargs: record(layer, args[0] if args else kwargs["hidden_states"])

    handles = []
    try:
        for layer in wanted:
            if at == "output":
                handles.append(blocks[layer].register_forward_hook(output_hook(layer)))
            else:
                handles.append(blocks[layer].register_forward_pre_hook(input_hook(layer), with_kwargs=True))
        try:
            yield out
        except _StopForward as stop:
            if stop.args[0] is not token:
                raise
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def read_final_norm_input(model) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, record the last layer's residual as the final norm receives it: {n_layers-1: [B, T, D]}.

    Empty if the model has no final norm. For paths that read the other layers from
    `output_hidden_states`, whose last entry transformers has already passed through that norm.
    """
    from .models import final_norm

    last = len(_blocks(model)) - 1
    out: dict[int, torch.Tensor] = {}
    norm = final_norm(model)

    def pre_hook(_module, args):
        out[last] = args[0].detach()

    handle = norm.register_forward_pre_hook(pre_hook) if norm is not None else None
    try:
        yield out
    finally:
        if handle is not None:
            handle.remove()


# ----------------------------------------------------------------------------- edit

ResidualEdit = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def edit_residual(model, edits: dict[int, ResidualEdit]) -> Iterator[None]:
    """Within the block, replace the output h of decoder block L by ``edits[L](h)`` for each L.

    The one way to change what a block writes into the residual stream (an SAE's reconstruction
    spliced in, a steering vector added, a layer zero-ablated). The edit sees the block's residual
    output [batch, seq, d_model] and must return a tensor of the same shape; dtype and device are
    restored to the model's. Layers resolve as everywhere (negatives count from the end).
    """
    blocks = _blocks(model)

    def checked(edit):
        def apply(hidden):
            new_hidden = edit(hidden)
            if new_hidden.shape != hidden.shape:
                raise ValueError(f"a residual edit returned shape {tuple(new_hidden.shape)} for a hidden state of "
                                 f"shape {tuple(hidden.shape)}; it must keep the shape")
            return new_hidden.to(dtype=hidden.dtype, device=hidden.device)
        return apply

    by_block = {blocks[resolve_layers(int(layer), len(blocks))[0]]: checked(edit) for layer, edit in edits.items()}
    if len(by_block) < len(edits):
        raise ValueError(f"the residual edits name one block twice ({sorted(edits)}, negatives count from the end): "
                         "combine those edits into one function")
    with edit_module_outputs(by_block):
        yield


@contextmanager
def edit_module_outputs(edits: dict, *, whole: bool = False) -> Iterator[None]:
    """Within the block, replace each module's output by ``edits[module](output)``.

    For circuit nodes inside a block (an MLP's output, an attention module's output, a q/k/v
    projection). By default the edit sees the output tensor (the first element of a tuple output)
    and the container is kept; with whole=True it sees and returns the raw output (e.g. to read an
    attention module's weights).
    """
    handles = []
    try:
        for module, edit in edits.items():
            def hook(_module, _inputs, output, _edit=edit):
                return _edit(output) if whole else with_hidden(output, _edit(block_hidden(output)))

            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def edit_module_inputs(edits: dict) -> Iterator[None]:
    """Within the block, replace each module's first positional input x by ``edits[module](x)``.

    For nodes read where a module receives them, e.g. the per-head attention outputs entering o_proj.
    """
    handles = []
    try:
        for module, edit in edits.items():
            def pre_hook(_module, args, _edit=edit):
                return (_edit(args[0]),) + tuple(args[1:])

            handles.append(module.register_forward_pre_hook(pre_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
