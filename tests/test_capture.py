"""capture: hooks == hidden_states for every tiny arch, early stop, masks, the block-shuffling buffer, resume."""
import copy
import itertools

import pytest
import torch

from shared.model import capture, layout
from shared.model.tiny import TINY_ARCHS, byte_tokenizer
from shared.training import buffer

TOL = dict(atol=1e-6, rtol=1e-5)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return lambda arch: tiny_model(arch, device="cpu")


def _ids(tok, batch=2, length=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (batch, length), generator=g)
    ids[:, 0] = tok.bos_token_id
    return ids


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_capture_matches_hidden_states(arch, tiny):
    model, tok = tiny(arch)
    ids = _ids(tok)
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    n = layout.n_layers(model)
    norm = layout.final_norm(model)
    for method, stop_early in itertools.product(("hooks", "hidden_states"), (True, False)):
        acts = capture.capture_residuals(model, ids, [2, 0, 1, n - 1], stop_early=stop_early, method=method)
        assert list(acts) == [0, 1, 2, n - 1]
        for layer in range(n - 1):
            assert acts[layer].shape == (2, 24, 64)
            assert torch.allclose(acts[layer], hidden[layer + 1], **TOL), (arch, method, stop_early, layer)
        # HF's last hidden state is after the final norm; layer n-1 is the block output before it.
        assert torch.allclose(norm(acts[n - 1]), hidden[n], **TOL), (arch, method, stop_early)
        # One layer, stopped early, on its own.
        single = capture.capture_residuals(model, ids, 1, stop_early=stop_early, method=method)
        assert list(single) == [1] and torch.allclose(single[1], hidden[2], **TOL)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen3_5"])
def test_early_stop_skips_the_rest(arch, tiny):
    model, tok = tiny(arch)
    later_calls = []
    blocks = layout.decoder_layers(model)
    handles = [blocks[2].register_forward_hook(lambda *a: later_calls.append("block2")),
               layout.unembed(model).register_forward_hook(lambda *a: later_calls.append("lm_head"))]
    before = {i: len(b._forward_hooks) for i, b in enumerate(blocks)}
    try:
        capture.capture_residuals(model, _ids(tok), [0, 1], stop_early=True)
        assert later_calls == []
        capture.capture_residuals(model, _ids(tok), [0, 1], stop_early=False)
        assert later_calls == ["block2", "lm_head"]
    finally:
        for h in handles:
            h.remove()
    assert {i: len(b._forward_hooks) for i, b in enumerate(blocks)} == {i: v - (i == 2) for i, v in before.items()}


def test_hooks_removed_after_error(tiny):
    model, tok = tiny("llama")
    blocks = layout.decoder_layers(model)
    before = [len(b._forward_hooks) for b in blocks]
    boom = blocks[1].register_forward_hook(lambda *a: (_ for _ in ()).throw(KeyError("boom")))
    try:
        with pytest.raises(KeyError):
            capture.capture_residuals(model, _ids(tok), [0, 3])
    finally:
        boom.remove()
    assert [len(b._forward_hooks) for b in blocks] == before


def test_layer_out_of_range(tiny):
    model, tok = tiny("llama")
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.3"):
        capture.capture_residuals(model, _ids(tok), [1, 4])
    with pytest.raises(ValueError, match="No layers"):
        capture.capture_residuals(model, _ids(tok), [])
    with pytest.raises(ValueError, match="method"):
        capture.capture_residuals(model, _ids(tok), 1, method="magic")
    assert list(capture.capture_residuals(model, _ids(tok), -1)) == [3]


def test_capture_with_padding(tiny):
    """Right-padded rows give the same activations at their real tokens as unpadded rows."""
    model, tok = tiny("llama")
    batch = tok(["short one", "a somewhat longer sentence"], padding=True, return_tensors="pt")
    acts = capture.capture_residuals(model, batch["input_ids"], [1], attention_mask=batch["attention_mask"])
    alone = capture.capture_residuals(model, tok(["short one"], return_tensors="pt")["input_ids"], [1])
    n = int(batch["attention_mask"][0].sum())
    assert torch.allclose(acts[1][0, :n], alone[1][0], atol=1e-5, rtol=1e-4)


class _Wrapper(torch.nn.Module):
    """Multimodal-style wrapper: decoder at .model.language_model, lm_head beside it."""

    def __init__(self, lm):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.language_model = lm.model
        self.lm_head = lm.lm_head

    def forward(self, input_ids, attention_mask=None, **kwargs):
        hidden = self.model.language_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.lm_head(hidden)


def test_capture_in_multimodal_wrapper(tiny):
    model, tok = tiny("llama")
    wrapped = _Wrapper(model)
    assert layout.layers_path(wrapped) == "model.language_model.layers"
    ids = _ids(tok)
    a = capture.capture_residuals(wrapped, ids, [0, 2])
    b = capture.capture_residuals(model, ids, [0, 2])
    assert all(torch.equal(a[k], b[k]) for k in (0, 2))


def test_hybrid_qwen3_5_hooks_equal_hidden_states_at_linear_and_full_attention(tiny):
    """Qwen3.5's Gated-DeltaNet (linear-attention) and full-attention blocks: hooks == output_hidden_states."""
    model, tok = tiny("qwen3_5")
    types = layout.text_config(model).layer_types
    linear, full = types.index("linear_attention"), types.index("full_attention")  # 0 and 1 in tiny:qwen3_5
    assert (linear, full) == (0, 1) and types[-1] == "full_attention"
    ids = _ids(tok)
    assert capture.capture_method(model) == "hooks"  # the block list is reachable in the hybrid model
    hooked = capture.capture_residuals(model, ids, [linear, full], method="hooks")
    hidden = capture.capture_residuals(model, ids, [linear, full], method="hidden_states")
    for layer in (linear, full):
        assert torch.allclose(hooked[layer], hidden[layer], **TOL), types[layer]
        assert not torch.equal(hooked[layer], torch.zeros_like(hooked[layer]))


class _Opaque(torch.nn.Module):
    """A wrapper whose block list cannot be found: the LM sits at no known path and a second
    ModuleList of the same length (per-layer adapters) makes the search ambiguous."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.adapters = torch.nn.ModuleList(torch.nn.Identity() for _ in range(layout.n_layers(lm)))

    def forward(self, **kwargs):
        return self.lm(**kwargs)


@pytest.mark.parametrize("arch", ["qwen3_5", "llama"])
def test_auto_falls_back_to_hidden_states_where_blocks_are_unreachable(arch, tiny):
    model, tok = tiny(arch)
    opaque = _Opaque(model)
    with pytest.raises(ValueError, match="Could not find the decoder layers"):
        layout.decoder_layers(opaque)
    assert capture.capture_method(opaque) == "hidden_states" and capture.capture_method(model) == "hooks"
    assert capture.capture_method(opaque, "hooks") == "hooks"
    ids = _ids(tok)
    fallback = capture.capture_residuals(opaque, ids, [0, 1, 2])  # method="auto"
    hooked = capture.capture_residuals(model, ids, [0, 1, 2], method="hooks")
    forced = capture.capture_residuals(model, ids, [0, 1, 2], method="hidden_states")
    for layer in (0, 1, 2):
        assert torch.allclose(fallback[layer], hooked[layer], **TOL) and torch.equal(fallback[layer], forced[layer])
    rows = next(capture.residual_rows(opaque, tok, [ids], [1], device="cpu"))
    assert torch.allclose(rows[1], hooked[1].reshape(-1, 64)[capture.token_mask(ids, tok).reshape(-1)], **TOL)
    with pytest.raises(ValueError, match=r"layer 3 \(the last\).*pick an earlier layer"):
        capture.capture_residuals(opaque, ids, [1, -1])
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.3"):
        capture.capture_residuals(opaque, ids, [9])


def test_token_mask():
    tok = byte_tokenizer()
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    ids = torch.tensor([[bos, 10, 11, eos, 12], [bos, 13, pad, pad, pad]])
    attn = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert capture.token_mask(ids, tok).tolist() == [[False, True, True, False, True], [False, True, False, False, False]]
    no_bos = torch.tensor([[10, 11, 12]])
    assert capture.token_mask(no_bos, tok, drop_first=True).tolist() == [[False, True, True]]
    attn_only = torch.tensor([[10, 11, 12]])
    assert capture.token_mask(attn_only, tok, torch.tensor([[1, 1, 0]])).tolist() == [[True, True, False]]
    assert capture.token_mask(ids, tok, attn)[1].tolist() == [False, True, False, False, False]


# ----------------------------------------------------------------------------- ActivationBlocks

def _numbered_source(chunks, start=0, d=3):
    """Chunks of rows whose value tells which token they are; layer 7 holds the negated rows."""
    out, i = [], start
    for n in chunks:
        ids = torch.arange(i, i + n, dtype=torch.float64)
        rows = ids[:, None].repeat(1, d)
        out.append({5: rows, 7: -rows})
        i += n
    return out


CHUNKS = [13, 9, 16, 11, 16, 7, 14, 16, 12, 5, 15, 10]  # 144 rows in forwards of up to 16


def _blocks(chunks=CHUNKS, state=None, **kw):
    source = _numbered_source(chunks)
    kw = {"batch_tokens": 8, "block_batches": 3, "rows_per_forward": 16, "seed": 4, "dtype": torch.float64, **kw}
    return buffer.ActivationBlocks(lambda skip: iter(source[skip:]), state=state, **kw)


def _drain(blocks, max_rows=None):
    """Every batch of every remaining block, and (batches so far, state) between blocks."""
    batches, states = [], [(0, copy.deepcopy(blocks.state_dict()))]
    while (block := blocks.next_block(max_rows)) is not None:
        for b in block:
            assert torch.equal(b[7], -b[5])  # one permutation for every layer
            batches.append(b[5][:, 0].long().tolist())
        states.append((len(batches), copy.deepcopy(blocks.state_dict())))
    return batches, states


def test_blocks_train_every_row_once_carrying_the_leftovers():
    blocks = _blocks()
    batches, states = _drain(blocks)
    seen = [i for b in batches for i in b]
    assert all(len(b) == 8 for b in batches) and len(seen) == len(set(seen))
    assert len(seen) == 144 - blocks.carry_rows() and blocks.carry_rows() < 8  # only the last carry is unused
    assert sorted(seen + [int(i) for i in states[-1][1]["carry"]["5"][:, 0]]) == list(range(144))
    assert any(0 < len(s["carry"]["5"]) for _, s in states[1:-1])  # leftovers really did cross blocks
    # The old scheme (each block's leftovers dropped) would have lost more rows here.
    assert sum(sum(CHUNKS[i:i + 3]) % 8 for i in range(0, 12, 3)) > blocks.carry_rows()


def test_blocks_resume_exactly_from_any_boundary():
    full, states = _drain(_blocks())
    assert len(states) > 3
    for consumed, state in states:
        tail, _ = _drain(_blocks(state=state))
        assert full[:consumed] + tail == full


def test_blocks_refuse_a_checkpoint_carry_holding_nan():
    """A damaged carry is refused where it is loaded, on every rank alike (each loads the same checkpoint), not
    by the one rank whose slice of a later batch holds the bad row."""
    _, states = _drain(_blocks())
    state = copy.deepcopy(next(s for _, s in states[1:] if len(s["carry"]["5"])))
    state["carry"]["7"][-1, 0] = float("nan")
    with pytest.raises(ValueError, match="carried activation rows hold NaN or inf: it is damaged"):
        _blocks(state=state)


def test_blocks_size_may_change_between_blocks():
    """block_batches may be lowered (e.g. memory is short) or raised between blocks: no row lost or repeated."""
    blocks = _blocks()
    seen = []
    for size in (3, 1, 5, 2, 2, 2):
        blocks.block_batches = size
        block = blocks.next_block()
        if block is None:
            break
        seen += [i for b in block for i in b[5][:, 0].long().tolist()]
        assert next(iter(blocks.store.values())).shape[0] == blocks.capacity == size * 16 + 8
    assert len(seen) == len(set(seen)) == 144 - blocks.carry_rows() and blocks.carry_rows() < 8


def test_blocks_stop_forwarding_at_max_rows():
    blocks = _blocks()
    block = blocks.next_block(max_rows=20)
    assert blocks.forwards == 2 and len(block.order) == 22 and len(block) == 2
    with pytest.raises(ValueError, match="rows_per_forward"):
        _blocks([13, 40]).next_block()


def test_blocks_shrink_to_a_small_memory_budget_instead_of_failing():
    """A budget too small for 3 forwards per block: fewer forwards per block and a smaller store
    instead of a failure, every row still trained once, and resuming stays exact."""
    row_bytes = 2 * 3 * 8  # two layers of width 3, float64
    full, _ = _drain(_blocks())
    budget = lambda: (8 + 16) * row_bytes  # noqa: E731 -- room for one forward plus a batch
    small = _blocks(memory_budget=budget)
    batches, states = _drain(small)
    assert small.block_batches == 1 and next(iter(small.store.values())).shape[0] == 16 + 8 < 3 * 16 + 8
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen)) == 144 - small.carry_rows() and sorted(seen) != seen
    assert all(s["block_batches"] == 1 for _, s in states[1:])
    for consumed, state in states:  # resuming under the same budget is exact ...
        tail, _ = _drain(_blocks(state=state, memory_budget=budget))
        assert batches[:consumed] + tail == batches
        if consumed:  # ... and so it is without one: the size in force is part of the state
            assert batches[:consumed] + _drain(_blocks(state=state))[0] == batches
    # The store's own memory counts as the buffer's: free memory taken by others later does not shrink
    # a store already held (it frees nothing to shrink it), and the run still completes.
    room = [10**9]
    held = _blocks(memory_budget=lambda: room[0])
    assert len(held.next_block()) > 0 and held.block_batches == 3
    room[0] = 0
    rest = [b for b in held.block] + [b for blk in iter(held.next_block, None) for b in blk]
    assert held.block_batches == 3 and len(rest) == len(full)
    assert len(batches) == len(full) and batches != full  # the same rows, cut into blocks differently
    assert buffer.block_batches_for_memory(10**9, row_bytes=8, rows_per_forward=16, fixed_rows=8,
                                            max_batches=64) == 64


def test_blocks_halve_when_the_store_allocation_runs_out_of_memory(monkeypatch):
    real_empty = torch.empty

    def empty(*size, **kw):
        if size and size[0] > 2 * 16 + 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate (test)")
        return real_empty(*size, **kw)

    blocks = _blocks(block_batches=8)
    monkeypatch.setattr(torch, "empty", empty)
    batches, _ = _drain(blocks)
    monkeypatch.undo()
    assert blocks.block_batches == 2  # 8 -> 4 -> 2
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen)) == 144 - blocks.carry_rows()


# ----------------------------------------------------------------------------- residual_rows + ActivationBlocks

def _token_batches(tok, n=6, batch=4, length=16, seed=0):
    return [_ids(tok, batch, length, seed + i) for i in range(n)]


def test_blocks_yield_every_kept_token(tiny):
    model, tok = tiny("qwen3_5")
    batches = _token_batches(tok)
    for b in batches:
        b[1, 5] = tok.eos_token_id  # a special token mid-sequence is dropped too
    source = lambda skip: capture.residual_rows(model, tok, batches, [2, 0], device="cpu", skip=skip)  # noqa: E731
    blocks = buffer.ActivationBlocks(source, batch_tokens=16, block_batches=4, rows_per_forward=4 * 16, seed=0)
    out = []
    while (block := blocks.next_block()) is not None:
        out += list(block)
    assert all(set(b) == {0, 2} and b[0].dtype == torch.float32 for b in out)
    got = {layer: torch.cat([b[layer] for b in out]) for layer in (0, 2)}
    expect = {0: [], 2: []}
    for ids in batches:
        acts = capture.capture_residuals(model, ids, [0, 2])
        keep = capture.token_mask(ids, tok).reshape(-1)
        for layer in (0, 2):
            expect[layer].append(acts[layer].reshape(-1, 64)[keep])
    n_kept = sum(int(capture.token_mask(ids, tok).sum()) for ids in batches)
    assert n_kept == (6 * 4 * 15 - 6) and blocks.carry_rows() == n_kept % 16
    assert got[0].shape == (n_kept - n_kept % 16, 64) and n_kept % 16
    # With the final carry (under one batch), the batches hold every kept token once.
    got = {layer: torch.cat([got[layer], blocks.state_dict()["carry"][str(layer)]]) for layer in (0, 2)}
    for layer in (0, 2):
        e = torch.cat(expect[layer])
        order_g, order_e = got[layer][:, 0].argsort(), e[:, 0].argsort()
        assert torch.allclose(got[layer][order_g], e[order_e], **TOL)
    # Rows stay aligned across layers: each yielded row pair is one token's (layer 0, layer 2) pair.
    pairs_e = {tuple(x) for x in torch.stack([torch.cat(expect[0])[:, 0], torch.cat(expect[2])[:, 0]], 1).tolist()}
    pairs_g = {tuple(x) for x in torch.stack([got[0][:, 0], got[2][:, 0]], 1).tolist()}
    assert pairs_g == pairs_e


def test_residual_rows_nan_error(tiny):
    model, tok = tiny("llama")
    blocks = layout.decoder_layers(model)
    h = blocks[1].register_forward_hook(lambda m, a, out: (out[0] * float("nan"),) + tuple(out[1:])
                                         if isinstance(out, tuple) else out * float("nan"))
    try:
        with pytest.raises(FloatingPointError, match="layer 1"):
            next(iter(capture.residual_rows(model, tok, _token_batches(tok), [0, 1], device="cpu")))
    finally:
        h.remove()


def test_residual_rows_bad_layer(tiny):
    model, tok = tiny("gpt2")
    with pytest.raises(ValueError, match=r"0\.\.3"):
        next(capture.residual_rows(model, tok, _token_batches(tok), [7], device="cpu"))
