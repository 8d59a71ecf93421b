"""capture: hooks == hidden_states for every tiny arch, early stop, masks, the shuffling buffer, resume."""
import itertools

import pytest
import torch

from shared import capture, models

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


@pytest.mark.parametrize("arch", models.TINY_ARCHS)
def test_capture_matches_hidden_states(arch, tiny):
    model, tok = tiny(arch)
    ids = _ids(tok)
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    n = models.n_layers(model)
    norm = models.final_norm(model)
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
    blocks = models.decoder_layers(model)
    handles = [blocks[2].register_forward_hook(lambda *a: later_calls.append("block2")),
               models.unembed(model).register_forward_hook(lambda *a: later_calls.append("lm_head"))]
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
    blocks = models.decoder_layers(model)
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
    assert models.layers_path(wrapped) == "model.language_model.layers"
    ids = _ids(tok)
    a = capture.capture_residuals(wrapped, ids, [0, 2])
    b = capture.capture_residuals(model, ids, [0, 2])
    assert all(torch.equal(a[k], b[k]) for k in (0, 2))


def test_token_mask():
    tok = models.byte_tokenizer()
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    ids = torch.tensor([[bos, 10, 11, eos, 12], [bos, 13, pad, pad, pad]])
    attn = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert capture.token_mask(ids, tok).tolist() == [[False, True, True, False, True], [False, True, False, False, False]]
    no_bos = torch.tensor([[10, 11, 12]])
    assert capture.token_mask(no_bos, tok, drop_first=True).tolist() == [[False, True, True]]
    attn_only = torch.tensor([[10, 11, 12]])
    assert capture.token_mask(attn_only, tok, torch.tensor([[1, 1, 0]])).tolist() == [[True, True, False]]
    assert capture.token_mask(ids, tok, attn)[1].tolist() == [False, True, False, False, False]


# ----------------------------------------------------------------------------- ActivationBuffer

def _numbered_source(chunks, start=0, d=3):
    """Chunks of rows whose value tells which token they are; layer 7 holds the negated rows."""
    out, i = [], start
    for n in chunks:
        ids = torch.arange(i, i + n, dtype=torch.float64)
        rows = ids[:, None].repeat(1, d)
        out.append({5: rows, 7: -rows})
        i += n
    return out


def _ids_of(batch):
    return batch[5][:, 0].long().tolist()


def test_buffer_covers_every_token_once_per_fill():
    buf = capture.ActivationBuffer(64, 8, seed=0)
    batches = list(buf.stream(_numbered_source([16, 16, 16, 16])))
    assert len(batches) == 8 and all(b[5].shape == (8, 3) and b[7].shape == (8, 3) for b in batches)
    seen = [t for b in batches for t in _ids_of(b)]
    assert sorted(seen) == list(range(64))
    assert seen != list(range(64)) and seen != list(range(64))[::-1]  # shuffled
    for b in batches:  # the same permutation for every layer
        assert torch.equal(b[7], -b[5])
        assert b[5].dtype == torch.float32 and b[5].device == torch.device("cpu")


def test_buffer_refills_at_half_and_never_drops_or_repeats():
    buf = capture.ActivationBuffer(64, 8, seed=3)
    log = []

    def source():
        for i, chunk in enumerate(_numbered_source([13] * 20)):  # 260 tokens, chunks that never fit evenly
            log.append(("pull", i))
            yield chunk

    seen = []
    for b in buf.stream(source()):
        log.append(("yield", len(buf)))
        seen += _ids_of(b)
    # 260 tokens in, 32 full batches out; the 4 left over at the end are dropped (drop_last).
    assert len(seen) == 256 and len(set(seen)) == 256 and set(seen) <= set(range(260))
    first_yield = log.index(("yield", 56))
    assert [e for e in log[:first_yield] if e[0] == "pull"] == [("pull", i) for i in range(5)]  # filled completely
    # No more pulls until half the buffer has been handed out.
    second_pull = next(i for i, e in enumerate(log) if e == ("pull", 5))
    assert [e[1] for e in log[first_yield:second_pull]] == [56, 48, 40, 32]
    assert buf.source_batches == 20 and buf.tokens_yielded == 256


def test_buffer_drop_last_false_flushes_everything():
    buf = capture.ActivationBuffer(32, 8, seed=0, drop_last=False)
    seen = [t for b in buf.stream(_numbered_source([10, 10, 10, 10, 10])) for t in _ids_of(b)]
    assert sorted(seen) == list(range(50))


def test_buffer_is_deterministic_with_seed():
    def run(seed):
        buf = capture.ActivationBuffer(48, 8, seed=seed)
        return [_ids_of(b) for b in buf.stream(_numbered_source([12] * 10))]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_buffer_device_and_dtype():
    buf = capture.ActivationBuffer(16, 4, device="cpu", dtype=torch.bfloat16)
    out = next(iter(buf.stream(_numbered_source([16]))))
    assert out[5].dtype == torch.bfloat16 and out[5].device.type == "cpu"
    if torch.cuda.is_available():
        buf = capture.ActivationBuffer(16, 4, device="cuda")
        out = next(iter(buf.stream(_numbered_source([16]))))
        assert out[5].device.type == "cuda"


def test_buffer_rejects_bad_input():
    with pytest.raises(ValueError, match="buffer_tokens"):
        capture.ActivationBuffer(4, 8)
    buf = capture.ActivationBuffer(16, 4)
    buf.add({1: torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="layers"):
        buf.add({2: torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="width"):
        buf.add({1: torch.zeros(3, 5)})
    with pytest.raises(ValueError, match="same number of rows"):
        capture.ActivationBuffer(16, 4).add({1: torch.zeros(3, 2), 2: torch.zeros(4, 2)})


def test_buffer_exact_resume_with_contents():
    source = _numbered_source([13] * 30)
    full = [_ids_of(b) for b in capture.ActivationBuffer(64, 8, seed=5).stream(source)]
    buf = capture.ActivationBuffer(64, 8, seed=5)
    it = buf.stream(source)
    first = [_ids_of(next(it)) for _ in range(11)]
    state = buf.state_dict(include_contents=True)
    resumed = capture.ActivationBuffer(64, 8, seed=5)
    resumed.load_state_dict(state)
    rest = [_ids_of(b) for b in resumed.stream(source[state["source_batches"]:])]
    assert first + rest == full


# ----------------------------------------------------------------------------- activation_batches

def _token_batches(tok, n=6, batch=4, length=16, seed=0):
    return [_ids(tok, batch, length, seed + i) for i in range(n)]


def test_activation_batches_yield_every_kept_token(tiny):
    model, tok = tiny("qwen3_5")
    batches = _token_batches(tok)
    for b in batches:
        b[1, 5] = tok.eos_token_id  # a special token mid-sequence is dropped too
    stream = capture.activation_batches(model, tok, batches, [2, 0], batch_tokens=16, buffer_tokens=512,
                                        device="cpu", seed=0, drop_last=False)
    out = list(stream)
    assert all(set(b) == {0, 2} and b[0].dtype == torch.float32 for b in out)
    got = {layer: torch.cat([b[layer] for b in out]) for layer in (0, 2)}
    expect = {0: [], 2: []}
    for ids in batches:
        acts = capture.capture_residuals(model, ids, [0, 2])
        keep = capture.token_mask(ids, tok).reshape(-1)
        for layer in (0, 2):
            expect[layer].append(acts[layer].reshape(-1, 64)[keep])
    n_kept = sum(int(capture.token_mask(ids, tok).sum()) for ids in batches)
    assert got[0].shape == (n_kept, 64) == (6 * 4 * 15 - 6, 64)
    for layer in (0, 2):
        e = torch.cat(expect[layer])
        order_g, order_e = got[layer][:, 0].argsort(), e[:, 0].argsort()
        assert torch.allclose(got[layer][order_g], e[order_e], **TOL)
    # Rows stay aligned across layers: each yielded row pair is one token's (layer 0, layer 2) pair.
    pairs_e = {tuple(x) for x in torch.stack([torch.cat(expect[0])[:, 0], torch.cat(expect[2])[:, 0]], 1).tolist()}
    pairs_g = {tuple(x) for x in torch.stack([got[0][:, 0], got[2][:, 0]], 1).tolist()}
    assert pairs_g == pairs_e


def test_activation_batches_resume(tiny):
    model, tok = tiny("llama")
    batches = _token_batches(tok, n=10, batch=2, length=16)
    kw = dict(layers=[1, 3], batch_tokens=8, buffer_tokens=64, device="cpu", seed=11)
    full = [b[1] for b in capture.activation_batches(model, tok, batches, **kw)]
    stream = capture.activation_batches(model, tok, batches, **kw)
    head = [next(stream)[1] for _ in range(9)]
    exact = capture.activation_batches(model, tok, batches, state=stream.state_dict(include_contents=True), **kw)
    tail = [b[1] for b in exact]
    assert len(head) + len(tail) == len(full)
    assert all(torch.equal(a, b) for a, b in zip(head + tail, full))
    # Without contents the resumed stream is still deterministic and starts after the consumed batches.
    light = stream.state_dict()
    r1 = [b[1] for b in capture.activation_batches(model, tok, batches, state=light, **kw)]
    r2 = [b[1] for b in capture.activation_batches(model, tok, batches, state=light, **kw)]
    assert len(r1) > 0 and all(torch.equal(a, b) for a, b in zip(r1, r2))
    seen_before = {tuple(r.tolist()) for b in head for r in b}
    assert not seen_before & {tuple(r.tolist()) for b in r1 for r in b}


def test_activation_batches_nan_error(tiny):
    model, tok = tiny("llama")
    blocks = models.decoder_layers(model)
    h = blocks[1].register_forward_hook(lambda m, a, out: (out[0] * float("nan"),) + tuple(out[1:])
                                         if isinstance(out, tuple) else out * float("nan"))
    try:
        with pytest.raises(FloatingPointError, match="layer 1"):
            next(iter(capture.activation_batches(model, tok, _token_batches(tok), [0, 1], 8, 64)))
    finally:
        h.remove()


def test_activation_batches_bad_layer(tiny):
    model, tok = tiny("gpt2")
    with pytest.raises(ValueError, match=r"0\.\.3"):
        capture.activation_batches(model, tok, _token_batches(tok), [7], 8, 64)
