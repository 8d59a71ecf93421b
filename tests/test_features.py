"""Feature statistics: planted latents with known answers, brute-force checks, ranking, logit effects."""
from __future__ import annotations

import math

import pytest
import torch

from shared.data.packing import token_batches
from shared.data.synthetic import synthetic_texts
from shared.features.stats import (FeatureStats, catalog_entries, collect, final_norm_gain, logit_effects,
                                   rank_features, top_examples)
from shared.model import loading
from shared.model.capture import capture_residuals, token_mask
from shared.model.layout import d_model, final_norm, unembed
from shared.saes import architectures
from shared.saes.topk import TopKConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def planted(tokens: torch.Tensor, d_sae: int = 6):
    """Dense latents [B, T, d_sae]: latent j fires on token id 10+j only, with a random positive
    value; latent 5 is dead."""
    gen = torch.Generator().manual_seed(1)
    acts = torch.zeros(*tokens.shape, d_sae)
    for j in range(d_sae - 1):
        hit = tokens == 10 + j
        acts[..., j] = hit * (0.5 + torch.rand(tokens.shape, generator=gen))
    return acts


def random_tokens(n_seq: int, T: int, seed: int = 0):
    return torch.randint(0, 20, (n_seq, T), generator=torch.Generator().manual_seed(seed))


def brute_top(tokens, acts, j, m):
    """Per-sequence peak of latent j, then the m largest peaks: [(value, seq, pos)]."""
    peaks = []
    for b in range(tokens.shape[0]):
        v, t = acts[b, :, j].max(0)
        if v > 0:
            peaks.append((float(v), b, int(t)))
    return sorted(peaks, reverse=True)[:m]


def test_planted_latents_match_brute_force():
    tokens = random_tokens(40, 16)
    acts = planted(tokens)
    st = FeatureStats(6, top_m=4, window=3)
    for s in range(0, 40, 7):  # uneven batches
        st.update(tokens[s:s + 7], acts[s:s + 7])
    assert st.n_tokens == tokens.numel()
    for j in range(5):
        col = acts[..., j]
        assert int(st.fire_count[j]) == int((tokens == 10 + j).sum())
        assert st.act_max[j] == pytest.approx(float(col.max()))
        assert float(st.mean_when_fired[j]) == pytest.approx(float(col[col > 0].mean()), rel=1e-5)
        assert int(st.hist[j].sum()) == int(st.fire_count[j])
        want = brute_top(tokens, acts, j, 4)
        got = top_examples(st, j, tokenizer=_Ids())
        assert [e["activation"] for e in got] == pytest.approx([w[0] for w in want])
        for e, (v, b, t) in zip(got, want):
            assert e["tokens"][e["peak"]] == str(10 + j)  # the planted token is at the centre
            assert e["token_activations"][e["peak"]] == pytest.approx(v)
            lo = max(t - 3, 0)
            assert e["tokens"] == [str(int(x)) for x in tokens[b, lo:t + 4]]
            assert e["token_activations"] == pytest.approx(acts[b, lo:t + 4, j].tolist())
    assert int(st.fire_count[5]) == 0 and not math.isfinite(float(st.top_vals[5, 0]))


def test_mask_and_sparse_input_agree_with_dense():
    tokens = random_tokens(12, 10, seed=3)
    acts = planted(tokens)
    mask = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(2)) > 0.3
    dense, sparse = FeatureStats(6, top_m=3, window=2), FeatureStats(6, top_m=3, window=2)
    dense.update(tokens, acts, mask=mask)
    vals, idx = acts.topk(3, dim=-1)
    sparse.update(tokens, vals, idx, mask)
    assert dense.n_tokens == int(mask.sum())
    for name, t in dense.tensors().items():
        assert torch.equal(t, sparse.tensors()[name]), name
    for j in range(5):
        assert int(dense.fire_count[j]) == int(((tokens == 10 + j) & mask).sum())


def test_memory_does_not_grow_with_tokens():
    sizes = []
    for n_seq in (4, 200):
        tokens = random_tokens(n_seq, 16)
        st = FeatureStats(6, top_m=5, window=4)
        for s in range(0, n_seq, 4):
            st.update(tokens[s:s + 4], planted(tokens[s:s + 4]))
        sizes.append({k: (tuple(v.shape), v.dtype) for k, v in st.tensors().items()})
    assert sizes[0] == sizes[1]
    assert sizes[0]["top_ids"][0] == (6, 5, 9)


def test_ranking_excludes_dead_and_always_on():
    T = 50
    tokens = torch.zeros(20, T, dtype=torch.long)
    acts = torch.zeros(20, T, 4)
    acts[..., 0] = 1.0                       # always on
    acts[:, 0, 1] = 3.0                      # fires once per sequence, strong
    acts[:2, 1, 2] = 1.0                     # fires twice: under min_fires
    st = FeatureStats(4, top_m=2, window=1)  # latent 3: dead
    st.update(tokens, acts)
    ranked = rank_features(st, min_fires=5, max_fire_rate=0.5)
    assert [j for j, _ in ranked] == [1]
    assert ranked[0][1] == pytest.approx(3.0 * math.log1p(20))
    assert [j for j, _ in rank_features(st, min_fires=1, max_fire_rate=1.0)] == [1, 0, 2]
    with pytest.raises(ValueError, match="max_fire_rate"):
        rank_features(st, max_fire_rate=0)


class _Ids:
    """A tokenizer stand-in whose decode writes token ids as text (for planted ids)."""

    def decode(self, ids):
        return " ".join(str(int(i)) for i in ids)


@pytest.fixture(scope="module")
def model_sae(tiny_trained_model):
    model, tok = tiny_trained_model("gpt2")
    sae = architectures.build_sae(TopKConfig(d_in=d_model(model), d_sae=48, k=4, seed=3))
    with torch.no_grad():
        sae.b_enc.fill_(-0.05)  # some latents stay silent on some tokens
    return model, tok, sae


def test_collect_matches_dense_computation(model_sae):
    model, tok, sae = model_sae
    batches = list(token_batches(synthetic_texts(40, seed=5), tok, context_len=24, batch_size=4, max_batches=3))
    n = 150  # cuts the last batch mid-way
    st = collect(model, tok, sae, 2, batches, n_tokens=n, top_m=3, window=2)
    assert st.n_tokens == n
    ids = torch.cat(batches)
    x = capture_residuals(model, ids, [2])[2]
    keep = token_mask(ids, tok)
    keep &= keep.reshape(-1).cumsum(0).reshape(keep.shape) <= n
    z = sae.encode(x) * keep[..., None]
    fired = z > 0
    assert torch.equal(st.fire_count, fired.sum((0, 1)))
    torch.testing.assert_close(st.act_max, z.amax((0, 1)))
    torch.testing.assert_close(st.act_sum.float(), z.sum((0, 1)), rtol=1e-5, atol=1e-5)
    for j in range(sae.cfg.d_sae):
        want = brute_top(ids, z.detach(), j, 3)
        assert st.top_vals[j, :len(want)].tolist() == pytest.approx([w[0] for w in want], rel=1e-5)
        for e, (_, b, t) in enumerate(want):
            assert int(st.top_ids[j, e, 2]) == int(ids[b, t])
    entries = catalog_entries(st, rank_features(st, top_n=5, min_fires=1, max_fire_rate=1.0), tok,
                              effects=logit_effects(model, sae, range(48), k=3, tokenizer=tok))
    keys = {"id", "rank", "name", "desc", "confidence", "fire_rate", "mean_when_fired", "score",
            "top_activating_examples"}
    assert entries and all(keys <= set(e) for e in entries)
    assert [e["rank"] for e in entries] == list(range(1, len(entries) + 1))
    ex = entries[0]["top_activating_examples"][0]
    assert set(ex) >= {"activation", "text"} and isinstance(ex["text"], str)
    assert len(entries[0]["logit_effects"]["promoted"]) == 3


def test_logit_effect_of_an_unembedding_row(model_sae):
    model, tok, sae = model_sae
    sae = architectures.build_sae(sae.cfg)
    W_U = unembed(model).weight.detach()
    t = int(W_U.norm(dim=1).argmax())  # largest row: its own logit is strictly the largest
    gain = final_norm_gain(model)  # the trained ln_f's weight: undone here, so the effect is W_U[t] @ W_U^T
    with torch.no_grad():
        sae.W_dec[7] = W_U[t] / gain
        sae.W_dec[8] = -W_U[t] / gain
    eff = logit_effects(model, sae, [7, 8], k=5, tokenizer=tok)
    assert eff[7]["promoted"][0]["token_id"] == t
    assert eff[7]["promoted"][0]["token"] == tok.decode([t])
    assert eff[8]["suppressed"][0]["token_id"] == t
    assert eff[7]["promoted"][0]["logit"] == pytest.approx(float(W_U[t] @ W_U[t]), rel=1e-5)
    with pytest.raises(ValueError, match="latent_ids"):
        logit_effects(model, sae, [48])


@pytest.mark.parametrize("arch", ["gpt2", "gemma2"])
def test_logit_effects_fold_the_final_norm_gain(arch):
    """A planted final-norm weight: the gain is LayerNorm's weight (gpt2) and Gemma's 1 + w, measured; a
    decoder direction along a dimension the norm zeroes has no effect on the logits, and any other's
    effect is (W_dec[j] * gain) @ W_U^T, the logits' first-order change (SAELens' fold_ln W_U)."""
    model, tok = loading.load_model(f"tiny:{arch}")
    norm, W_U = final_norm(model), unembed(model).weight.detach()
    d = W_U.shape[1]
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, d))
    effective = norm.weight.detach() + (1.0 if arch == "gemma2" else 0.0)
    effective[3] = 0.0
    with torch.no_grad():
        norm.weight[3] = -1.0 if arch == "gemma2" else 0.0
    assert torch.allclose(final_norm_gain(model), effective, atol=1e-5)
    sae = architectures.build_sae(TopKConfig(d_in=d, d_sae=8, k=2, seed=0))
    with torch.no_grad():
        sae.W_dec[0] = 0.0
        sae.W_dec[0, 3] = 1.0
    eff = logit_effects(model, sae, [0, 1], k=5)
    assert max(abs(e["logit"]) for side in eff[0].values() for e in side) < 1e-6
    want = (sae.W_dec[1].detach() * effective) @ W_U.t()
    top = want.topk(5)
    assert [e["token_id"] for e in eff[1]["promoted"]] == top.indices.tolist()
    assert [e["logit"] for e in eff[1]["promoted"]] == pytest.approx(top.values.tolist(), rel=1e-4, abs=1e-6)
    # read in vocabulary chunks (no whole float32 copy of W_U): the same tokens and logits, in the same order
    chunked = logit_effects(model, sae, [0, 1], k=5, vocab_chunk=7)
    for j in (0, 1):
        for side in ("promoted", "suppressed"):
            if j == 1:  # latent 0's logits are all ~0: their order is rounding's
                assert [e["token_id"] for e in chunked[j][side]] == [e["token_id"] for e in eff[j][side]]
            assert [e["logit"] for e in chunked[j][side]] == pytest.approx([e["logit"] for e in eff[j][side]],
                                                                          rel=1e-5, abs=1e-6)


def test_bad_input_is_one_line_error():
    with pytest.raises(ValueError, match="top_m"):
        FeatureStats(4, top_m=0)
    st = FeatureStats(4)
    with pytest.raises(ValueError, match="dense latents"):
        st.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, 5))


def test_detection_contexts_and_judge_evidence(model_sae):
    """Held-out windows carry each latent's activation as the full sequence gives it, hold no special token;
    the judge's evidence scores on windows measured silent and on activating ones across quantiles."""
    from shared.features.stats import DETECTION_PROTOCOL, detection_contexts, judge_evidence

    model, tok, sae = model_sae
    seen = list(token_batches(synthetic_texts(40, seed=0), tok, 32, 4, max_batches=3))
    held = list(token_batches(synthetic_texts(60, seed=9), tok, 32, 4, max_batches=6))
    stats = collect(model, tok, sae, 1, seen, 300)
    ranked = rank_features(stats, top_n=3, min_fires=1, max_fire_rate=0.05)
    latents = [j for j, _ in ranked]
    ctx = detection_contexts(model, tok, sae, 1, held, latents, 10_000, width=7)
    assert ctx.ids.shape[1:] == (7,) and ctx.acts.shape == (ctx.ids.shape[0], 7, 3)
    assert not torch.isin(ctx.ids, torch.tensor(tok.all_special_ids)).any()
    ids = torch.cat(held)
    z = sae.encode(capture_residuals(model, ids, [1])[1])[..., latents]  # [rows, 32, 3]
    windows = {tuple(r): a for r, a in zip(ids[:, 1:29].reshape(-1, 7).tolist(), z[:, 1:29].reshape(-1, 7, 3))}
    for r, a in zip(ctx.ids.tolist(), ctx.acts):
        assert torch.allclose(a, windows[tuple(r)], atol=1e-5)  # read in the full row, not re-encoded alone
    ev = judge_evidence(stats, ranked, tok, ctx, n_score=4, n_quantiles=4, seed=1)
    assert [e["id"] for e in ev] == latents
    specials = {t for t in (tok.bos_token, tok.eos_token, tok.pad_token) if t}
    for c, e in enumerate(ev):
        assert e["top_examples"] and len(e["activating_examples"]) == 4 and len(e["non_activating_examples"]) == 4
        assert [x["quantile"] for x in e["activating_examples"]] == [0, 1, 2, 3]
        assert all(max(x["acts"]) > 0 for x in e["activating_examples"])
        assert all(x["acts"] == [0.0] * 7 for x in e["non_activating_examples"])
        shown = e["top_examples"] + e["activating_examples"] + e["non_activating_examples"]
        assert all(len(x["tokens"]) == len(x["acts"]) and not specials & set(x["tokens"]) for x in shown)
        assert len({x["text"] for x in shown}) == len(shown)  # deduplicated by text
    assert set(DETECTION_PROTOCOL) >= {"activating", "non_activating", "special_tokens", "dedupe"}
    with pytest.raises(ValueError, match="not in the detection contexts"):
        judge_evidence(stats, [(47, 1.0)], tok, ctx)
    with pytest.raises(ValueError, match="width"):
        detection_contexts(model, tok, sae, 1, held, latents, 100, width=64)


def test_quantile_sample_draws_across_the_ranking():
    import random

    from shared.features.stats import quantile_sample

    got = quantile_sample(100, 10, 10, random.Random(0))
    assert [q for _, q in got] == list(range(10)) and all(10 * q <= i < 10 * (q + 1) for i, q in got)
    assert [q for _, q in quantile_sample(100, 5, 10, random.Random(0))] == [0, 1, 2, 3, 4]
    assert len(quantile_sample(100, 25, 10, random.Random(0))) == 25
    assert [i for i, _ in quantile_sample(3, 10, 10, random.Random(0))] == [0, 1, 2]  # too few: all of them
