"""Sparse feature circuits: edge scores equal a brute-force Jacobian contraction, thresholds keep what
they say, a planted circuit is faithful and complete, bad input fails in one line."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from shared import sae as S
from shared.circuits import sfc
from shared.models import decoder_layers, load_model
from shared.sae_relu import ReLUConfig


def logit_diff(logits, pairs):
    """logit[answer] - logit[wrong] at the last position, per prompt."""
    last = logits[:, -1]
    rows = torch.arange(last.shape[0])
    return last[rows, pairs.answer_ids] - last[rows, pairs.wrong_ids]


def random_sae(d_in: int, d_sae: int, seed: int):
    sae = S.build_sae(ReLUConfig(d_in=d_in, d_sae=d_sae, seed=seed))
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
    return sae.requires_grad_(False)


def random_pairs(n: int, T: int, vocab: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, vocab, (n, T), generator=gen)
    corrupt = clean.clone()
    corrupt[:, -2:] = torch.randint(3, vocab, (n, 2), generator=gen)
    return SimpleNamespace(clean_ids=clean, corrupt_ids=corrupt, answer_ids=torch.randint(3, vocab, (n,), generator=gen),
                           wrong_ids=torch.randint(3, vocab, (n,), generator=gen))


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_model("tiny:gpt2")
    saes = {1: random_sae(64, 32, 1), 3: random_sae(64, 32, 3)}
    return model, tok, saes, random_pairs(2, 5, len(tok), 0)


def brute_force_edges(model, saes, up, down, ids):
    """Edge matrix from the full Jacobian of every downstream value w.r.t. every upstream value."""
    def downstream(f_u, e_u):
        held = {}

        def read(h):
            held["v"] = sfc._encode(saes[down.layer], h.float())
            return h

        edits = {up.layer: lambda h: saes[up.layer].decode(f_u) + e_u, down.layer: read}
        with sfc.splice(model, edits, stop_at=down.layer):
            model(ids)
        return held["v"]

    (jff, jfe), (jef, jee) = torch.autograd.functional.jacobian(downstream, (up.f, up.e), vectorize=True)
    n = up.f.shape[0]
    # downstream latent j <- upstream latent i: sum over prompts p, positions t (down), s (up)
    ff = torch.einsum("ptj,ptjqsi,qsi->ji", down.gf, jff, up.df) / n
    fe = torch.einsum("ptj,ptjqsk,qsk->j", down.gf, jfe, up.de) / n
    ef = torch.einsum("ptk,ptkqsi,qsi->i", down.ge, jef, up.df) / n
    ee = torch.einsum("ptk,ptkqsl,qsl->", down.ge, jee, up.de) / n
    return torch.cat([ff, ef[None]]), torch.cat([fe, ee[None]])


def test_edge_scores_equal_a_brute_force_jacobian(tiny):
    model, _, saes, pairs = tiny
    nodes = sfc.task_nodes(model, saes, pairs, logit_diff, method="atp")
    up, down = nodes[1], nodes[3]
    latents = list(range(32))
    rows_f, rows_e = sfc.edge_scores(model, saes, up, down, pairs.clean_ids, latents, down_error=True)
    want_f, want_e = brute_force_edges(model, saes, up, down, pairs.clean_ids)
    assert rows_f.abs().max() > 1e-3 and rows_e.abs().max() > 1e-4  # a real signal, not all zeros
    torch.testing.assert_close(rows_f, want_f, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(rows_e, want_e, rtol=1e-3, atol=1e-5)


def test_atp_is_one_step_ig_and_ig_nearly_completes(tiny):
    model, _, saes, pairs = tiny
    atp = sfc.task_nodes(model, saes, pairs, logit_diff, method="atp")
    ig1 = sfc.task_nodes(model, saes, pairs, logit_diff, method="ig", ig_steps=1)
    for L in saes:
        torch.testing.assert_close(atp[L].gf, ig1[L].gf, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(atp[L].ge, ig1[L].ge, rtol=1e-4, atol=1e-6)
    # IG's completeness at one layer: the effects of its latents + error ~ m(patch there) - m(clean)
    ig = sfc.task_nodes(model, saes, pairs, logit_diff, method="ig", ig_steps=16)
    L = 3
    feat, err = ig[L].scores()
    with torch.no_grad():
        m_clean = float(logit_diff(model(pairs.clean_ids).logits, pairs).mean())
        patched = ig[L].f + ig[L].df, ig[L].e + ig[L].de
        with sfc.splice(model, {L: lambda h: saes[L].decode(patched[0]) + patched[1]}):
            m_patch = float(logit_diff(model(pairs.clean_ids).logits, pairs).mean())
    assert abs(float(feat.sum()) + err - (m_patch - m_clean)) < 0.05 * abs(m_patch - m_clean) + 1e-3


def test_thresholds_select_nodes_and_edges(tiny):
    model, _, saes, pairs = tiny
    nodes = sfc.task_nodes(model, saes, pairs, logit_diff, method="atp")
    loose = sfc.sparse_feature_circuit(model, saes, pairs, logit_diff, tau_node=0.0, tau_edge=0.0, nodes=nodes)
    tau = sorted(abs(v) for v in loose.scores.values())[len(loose.scores) // 2]
    tight = sfc.sparse_feature_circuit(model, saes, pairs, logit_diff, tau_node=tau, tau_edge=0.0, nodes=nodes)
    assert all(abs(n["score"]) > tau for n in tight.nodes)
    assert {n["id"] for n in tight.nodes} == {k for k, v in loose.scores.items() if abs(v) > tau}
    assert 0 < len(tight.nodes) < len(loose.nodes)
    kept = {n["id"] for n in tight.nodes}
    assert tight.edges and all(e["source"] in kept and e["target"] in kept for e in tight.edges)
    assert all(sfc.parse_node(e["target"])[0] == 3 and sfc.parse_node(e["source"])[0] == 1 for e in tight.edges)
    t_edge = sorted(abs(e["score"]) for e in tight.edges)[len(tight.edges) // 2]
    sparse = sfc.sparse_feature_circuit(model, saes, pairs, logit_diff, tau_node=tau, tau_edge=t_edge, nodes=nodes)
    assert {(e["source"], e["target"]) for e in sparse.edges} == \
        {(e["source"], e["target"]) for e in tight.edges if abs(e["score"]) > t_edge}
    assert {n["kind"] for n in loose.nodes} == {"feature", "error"}
    none = sfc.sparse_feature_circuit(model, saes, pairs, logit_diff, tau_node=1e9, tau_edge=0.0, nodes=nodes)
    assert none.nodes == [] and none.edges == []


def identity_sae(d: int):
    """A ReLU 'SAE' whose latents are the +/- coordinates of the residual: exact, error 0."""
    sae = S.build_sae(ReLUConfig(d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc_T.copy_(torch.cat([eye, -eye])), sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_(), sae.b_dec.zero_()
    return sae.requires_grad_(False)


def planted():
    """tiny:gpt2 with every block writing nothing (the residual is the embedding), where the last tokens'
    embeddings differ only in coordinates 0 and 1 and the earlier varying token cannot reach the logits:
    the circuit is the latents of coordinates 0, 1 at both SAE layers."""
    model, tok = load_model("tiny:gpt2", seed=1)
    with torch.no_grad():
        for block in decoder_layers(model):
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_(), proj.bias.zero_()
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.clone(), requires_grad=False)  # untie
        wte = model.transformer.wte.weight
        last = torch.arange(40, 48)
        wte[last] = wte[40] + 0.0
        wte[last, :2] = torch.randn(8, 2, generator=torch.Generator().manual_seed(0)) * 2
    gen = torch.Generator().manual_seed(1)
    n = 8
    clean = torch.stack([torch.tensor([1, 50, int(torch.randint(60, 90, (1,), generator=gen)), 52, 40 + i])
                         for i in range(n)])
    corrupt = clean.clone()
    corrupt[:, -1] = 40 + (torch.arange(n) + 3) % 8
    corrupt[:, 2] = torch.randint(60, 90, (n,), generator=gen)
    pairs = SimpleNamespace(clean_ids=clean, corrupt_ids=corrupt, answer_ids=torch.full((n,), 97),
                            wrong_ids=torch.full((n,), 98))
    return model, {0: identity_sae(64), 2: identity_sae(64)}, pairs


def test_planted_circuit_is_faithful_and_complete():
    model, saes, pairs = planted()
    circuit = sfc.sparse_feature_circuit(model, saes, pairs, logit_diff, tau_node=1e-4, tau_edge=1e-4,
                                         method="atp")
    planted_ids = {sfc.node_id(L, i) for L in saes for i in (0, 1, 64, 65)}
    found = {n["id"] for n in circuit.nodes}
    assert found and found <= planted_ids  # nothing but the planted latents carries an effect
    assert {sfc.parse_node(e["source"])[1] % 64 for e in circuit.edges} <= {0, 1}
    curve = sfc.faithfulness_curve(model, saes, pairs, logit_diff, circuit.ranking(), counts=[0, len(found)])
    empty, full = curve["rows"]
    assert full["faithfulness"] == pytest.approx(1.0, abs=1e-4)
    assert full["completeness"] == pytest.approx(0.0, abs=1e-4)
    assert empty["faithfulness"] == pytest.approx(0.0, abs=1e-6)
    assert empty["completeness"] == pytest.approx(1.0, abs=1e-4)


def test_bad_input_fails_in_one_line(tiny):
    model, _, saes, pairs = tiny
    cases = [
        (dict(tau_node=-0.1), "tau_node"), (dict(tau_edge=float("nan")), "tau_edge"),
        (dict(method="eap"), "method"), (dict(ig_steps=0), "ig_steps"),
    ]
    for kw, word in cases:
        with pytest.raises(ValueError, match=word) as err:
            sfc.sparse_feature_circuit(model, saes, pairs, logit_diff, **kw)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=">= 2"):
        sfc.sparse_feature_circuit(model, {1: saes[1]}, pairs, logit_diff)
    with pytest.raises(ValueError, match="d_model=64"):
        sfc.check_saes(model, {1: saes[1], 2: random_sae(32, 16, 0)})
    with pytest.raises(ValueError, match="block 2"):
        sfc.check_saes(model, saes, {1: "out/tiny_sae/blocks.2.hook_resid_post", 3: "x"})
    assert sfc.check_saes(model, saes, {1: "r/blocks.2.hook_resid_pre", 3: "r/blocks.3.hook_resid_post"}) == [1, 3]
    with pytest.raises(ValueError, match="out of range"):
        sfc.check_saes(model, {1: saes[1], 9: saes[3]})
