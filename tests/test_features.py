"""Feature statistics: planted latents with known answers, brute-force checks, ranking, logit effects."""
from __future__ import annotations

import math

import pytest
import torch

from shared import sae as S
from shared.capture import capture_residuals, token_mask
from shared.data import token_batches
from shared.features import (FeatureStats, catalog_entries, collect, logit_effects, rank_features,
                             top_examples)
from shared.models import d_model, unembed
from shared.sae_topk import TopKConfig
from shared.synthetic import synthetic_texts

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
    sae = S.build_sae(TopKConfig(d_in=d_model(model), d_sae=48, k=4, seed=3))
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
    sae = S.build_sae(sae.cfg)
    W_U = unembed(model).weight.detach()
    t = int(W_U.norm(dim=1).argmax())  # largest row: its own logit is strictly the largest
    with torch.no_grad():
        sae.W_dec[7] = W_U[t]
        sae.W_dec[8] = -W_U[t]
    eff = logit_effects(model, sae, [7, 8], k=5, tokenizer=tok)
    assert eff[7]["promoted"][0]["token_id"] == t
    assert eff[7]["promoted"][0]["token"] == tok.decode([t])
    assert eff[8]["suppressed"][0]["token_id"] == t
    assert eff[7]["promoted"][0]["logit"] == pytest.approx(float(W_U[t] @ W_U[t]), rel=1e-5)
    with pytest.raises(ValueError, match="latent_ids"):
        logit_effects(model, sae, [48])


def test_bad_input_is_one_line_error():
    with pytest.raises(ValueError, match="top_m"):
        FeatureStats(4, top_m=0)
    st = FeatureStats(4)
    with pytest.raises(ValueError, match="dense latents"):
        st.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, 5))


def test_random_windows_and_judge_evidence(model_sae):
    from shared.features import judge_evidence, random_windows

    model, tok, sae = model_sae
    batches = list(token_batches(synthetic_texts(40, seed=0), tok, 32, 4, max_batches=3))
    pool = random_windows(batches, tok, n=30, width=9, seed=1)
    assert len(pool) == 30 and all(len(w["tokens"]) == 9 for w in pool)
    assert pool == random_windows(batches, tok, n=30, width=9, seed=1)  # seeded
    stats = collect(model, tok, sae, 1, batches, 300)
    ranked = rank_features(stats, top_n=3, min_fires=1, max_fire_rate=1.0)
    ev = judge_evidence(stats, ranked, tok, pool, n_random=5)
    assert [e["id"] for e in ev] == [j for j, _ in ranked]
    for e in ev:
        assert len(e["random_examples"]) == 5 and e["top_examples"]
        assert all(set(x) >= {"text", "tokens", "acts"} and len(x["tokens"]) == len(x["acts"]) for x in e["top_examples"])
    with pytest.raises(ValueError, match="width"):
        random_windows(batches, tok, n=2, width=64)
