"""The hooks that read or edit the residual stream.

Layer L is the residual stream as decoder block L leaves it (which blocks a spec means:
`layout.resolve_layers`). The context managers `read_residuals` (record block outputs or inputs, optionally stopping the forward
after the deepest one), `read_final_norm_input` and `edit_residual` (replace a block's output) are
the only forward hooks in shared/, so each architecture's tuple-or-tensor block output is
unwrapped (`block_hidden`) and rewrapped (`with_hidden`) in one place.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from .layout import decoder_layers, final_norm, resolve_layers


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
