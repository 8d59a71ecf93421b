"""hooks: the one home of the residual read/edit hooks (reads match hidden_states, stops, edits restore)."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from shared.model import hooks, layout, loading

SHARED = Path(__file__).resolve().parent.parent / "shared"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return lru_cache(None)(lambda arch: loading.load_model(f"tiny:{arch}", device="cpu"))


def _hook_counts(model):
    """Hooks on each block (transformers registers some of its own), to check ours are all removed."""
    return [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in layout.decoder_layers(model)]


def _ids(tok):
    return tok(["The cat sat on the mat", "A dog"], return_tensors="pt", padding=True)


def test_only_hooks_registers_forward_hooks():
    """No other module hooks a decoder block (or anything else): reads and edits go through hooks.py."""
    offenders = [f"{p.name}:{i}" for p in sorted(SHARED.glob("**/*.py")) if p.name != "hooks.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"register_forward", line)]
    assert offenders == []


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen3_5"])
def test_read_outputs_and_inputs_match_hidden_states(arch, tiny):
    model, tok = tiny(arch)
    enc = _ids(tok)
    n = layout.n_layers(model)
    with torch.no_grad():
        model(**enc, output_hidden_states=True)  # transformers installs its own recorder hooks on first use
    before = _hook_counts(model)
    with torch.no_grad(), hooks.read_residuals(model, "all") as outs, \
            hooks.read_residuals(model, "all", at="input") as ins, hooks.read_final_norm_input(model) as normed:
        hidden = model(**enc, output_hidden_states=True).hidden_states
    assert sorted(outs) == sorted(ins) == list(range(n)) and list(normed) == [n - 1]
    for layer in range(n):
        assert torch.equal(ins[layer], hidden[layer])  # what enters block L is hidden_states[L]
        if layer < n - 1:  # hidden_states[n] is after the final norm
            assert torch.equal(outs[layer], hidden[layer + 1])
    assert torch.equal(outs[n - 1], normed[n - 1])
    assert _hook_counts(model) == before


def test_stop_after_deepest_skips_the_rest_and_is_swallowed(tiny):
    model, tok = tiny("llama")
    later = []
    handle = layout.unembed(model).register_forward_hook(lambda *a: later.append("lm_head"))
    try:
        with torch.no_grad(), hooks.read_residuals(model, [-1, 1], stop_after_deepest=True) as acts:
            model(**_ids(tok))
            later.append("after the forward")  # never reached: the forward stopped
        assert sorted(acts) == [1, 3] and later == []
        # a nested reader never swallows another reader's stop: the deeper one still gets its layer
        with torch.no_grad(), hooks.read_residuals(model, 3, stop_after_deepest=True) as deep, \
                hooks.read_residuals(model, 0, stop_after_deepest=True) as shallow:
            model(**_ids(tok))
        assert list(shallow) == [0] and deep == {}
    finally:
        handle.remove()


def test_edit_replaces_output_and_restores(tiny):
    model, tok = tiny("gpt2")  # tuple block outputs: rewrapped, the rest of the tuple kept
    enc = _ids(tok)
    before = _hook_counts(model)
    with torch.no_grad():
        with hooks.read_residuals(model, 1) as plain:
            clean = model(**enc).logits
        with hooks.edit_residual(model, {1: lambda h: h * 2}), hooks.read_residuals(model, 1) as acts:
            edited = model(**enc).logits  # the reader, registered after the edit, sees the edited output
        again = model(**enc).logits
    assert torch.equal(acts[1], plain[1] * 2)
    assert not torch.equal(clean, edited) and torch.equal(clean, again)
    with pytest.raises(ValueError, match="keep the shape"), torch.no_grad():
        with hooks.edit_residual(model, {0: lambda h: h[:, :1]}):
            model(**enc)
    with pytest.raises(ValueError, match="name one block twice"):
        with hooks.edit_residual(model, {1: lambda h: h, 1 - len(model.transformer.h): lambda h: h}):
            pass
    with pytest.raises(ValueError, match="at must be"):
        with hooks.read_residuals(model, 0, at="middle"):
            pass
    assert _hook_counts(model) == before


def test_block_hidden_and_with_hidden_keep_the_container():
    h, other = torch.zeros(1, 2, 3), torch.ones(1)
    new = torch.ones(1, 2, 3)
    assert hooks.block_hidden(h) is h and hooks.block_hidden((h, other)) is h and hooks.block_hidden([h]) is h
    assert hooks.with_hidden(h, new) is new
    assert hooks.with_hidden((h, other), new)[0] is new and hooks.with_hidden((h, other), new)[1] is other
    assert isinstance(hooks.with_hidden([h, other], new), list)
    with pytest.raises(TypeError):
        hooks.with_hidden({"h": h}, new)
