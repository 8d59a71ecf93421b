"""Sparse feature circuits: edge scores equal a brute-force Jacobian contraction, thresholds keep what
they say, a planted circuit is faithful and complete, bad input fails in one line."""
from __future__ import annotations

import pytest
import torch

from shared.circuits import sfc
from shared.circuits.attribution import atp, integrated_gradients
from shared.circuits.metrics import logit_diff
from shared.circuits.tasks import PromptPairs
from shared.model import hooks
from shared.model.layout import decoder_layers
from shared.model.loading import load_model
from shared.saes import architectures
from shared.saes.relu import ReLUConfig


def random_sae(d_in: int, d_sae: int, seed: int):
    sae = architectures.build_sae(ReLUConfig(d_in=d_in, d_sae=d_sae, seed=seed))
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
    return sae.requires_grad_(False)


def random_pairs(n: int, T: int, vocab: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, vocab, (n, T), generator=gen)
    corrupt = clean.clone()
    corrupt[:, -2:] = torch.randint(3, vocab, (n, 2), generator=gen)
    return pairs_of(clean, corrupt, torch.randint(3, vocab, (n,), generator=gen),
                    torch.randint(3, vocab, (n,), generator=gen))


def pairs_of(clean, corrupt, answers, wrongs) -> PromptPairs:
    return PromptPairs("test", clean, corrupt, answers, wrongs, [""] * len(clean), [""] * len(clean))


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_model("tiny:gpt2")
    saes = {1: random_sae(64, 32, 1), 3: random_sae(64, 32, 3)}
    return model, sfc.check_saes(model, saes), saes, random_pairs(2, 5, len(tok), 1)


def brute_force_edges(task, up, down, ids, tau=None):
    """Edge matrix from the full Jacobian of every downstream value w.r.t. every upstream value; with tau, only
    the downstream (prompt, position) instances whose own effect grad . delta has |effect| >= tau count."""
    nodes = task.nodes
    (lat_u, err_u), (lat_d, err_d) = task.comps(up), task.comps(down)

    def downstream(f_u, e_u):
        edit = lambda c, v: {lat_u: f_u, err_u: e_u}.get(c, v)  # noqa: E731
        with nodes.hooked(edit) as rec, hooks.read_residuals(nodes.model, [down], stop_after_deepest=True):
            nodes.model(ids)
        return rec[lat_d][..., 0], rec[err_d][:, :, 0]

    (jff, jfe), (jef, jee) = torch.autograd.functional.jacobian(
        downstream, (task.clean[lat_u], task.clean[err_u]), vectorize=True)
    g_f, g_e = task.grad[lat_d][..., 0], task.grad[err_d][:, :, 0]
    if tau is not None:  # [n, T, d_sae] and [n, T, 1]: each instance's own effect against tau
        g_f = g_f * ((g_f * task.delta[lat_d][..., 0]).abs() >= tau)
        g_e = g_e * ((g_e * task.delta[err_d][:, :, 0]).sum(-1, keepdim=True).abs() >= tau)
    d_f, d_e = task.delta[lat_u][..., 0], task.delta[err_u][:, :, 0]
    n = ids.shape[0]
    # downstream latent j <- upstream latent i: sum over prompts p, q and positions t (down), s (up)
    ff = torch.einsum("ptj,ptjqsi,qsi->ji", g_f, jff[..., 0], d_f) / n
    fe = torch.einsum("ptj,ptjqsak,qsk->j", g_f, jfe, d_e) / n
    ef = torch.einsum("ptk,ptkqsi,qsi->i", g_e, jef[..., 0], d_f) / n
    ee = torch.einsum("ptk,ptkqsal,qsl->", g_e, jee, d_e) / n
    return torch.cat([ff, ef[None]]), torch.cat([fe, ee[None]])


def test_edge_scores_equal_a_brute_force_jacobian(tiny):
    _, nodes, _, pairs = tiny
    task = sfc.task_nodes(nodes, pairs, method="atp")
    rows_f, rows_e = sfc.edge_scores(task, 1, 3, pairs.clean_ids, list(range(32)), down_error=True)
    want_f, want_e = brute_force_edges(task, 1, 3, pairs.clean_ids)
    assert rows_f.abs().max() > 1e-3 and rows_e.abs().max() > 1e-4  # a real signal, not all zeros
    torch.testing.assert_close(rows_f, want_f, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(rows_e, want_e, rtol=1e-3, atol=1e-5)


def test_edges_leave_out_downstream_instances_under_the_node_threshold(tiny):
    """Issue 21.9: as Marks et al.'s code (jvp over the (prompt, position, feature) instances whose effect
    passes node_threshold), only the downstream instances whose own effect passes tau send edges; edges
    summed over every instance were larger where small instances add up."""
    _, nodes, _, pairs = tiny
    task = sfc.task_nodes(nodes, pairs, method="atp")
    lat, err = task.comps(3)
    inst = torch.cat([(task.grad[lat] * task.delta[lat])[..., 0].flatten(),
                      (task.grad[err] * task.delta[err]).sum((2, 3)).flatten()]).abs()
    tau = float(inst[inst > 0].median())
    rows_f, rows_e = sfc.edge_scores(task, 1, 3, pairs.clean_ids, list(range(32)), True, down_tau=tau)
    want_f, want_e = brute_force_edges(task, 1, 3, pairs.clean_ids, tau=tau)
    all_f, _ = brute_force_edges(task, 1, 3, pairs.clean_ids)
    assert (want_f - all_f).abs().max() > 0.1 * all_f.abs().max()  # the threshold changes the edges
    torch.testing.assert_close(rows_f, want_f, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(rows_e, want_e, rtol=1e-3, atol=1e-5)


def test_planted_edges_count_only_the_prompts_whose_downstream_instance_passes():
    """The planted model (blocks write nothing, identity SAEs at layers 0 and 2): L2.f_i is L0.f_i, so the edge
    L0.f_i -> L2.f_i of one prompt is that prompt's effect of L2.f_i at the last position (where alone the
    gradient is), when the latent is on there. With tau_node between the prompts' effects the edge is the mean
    over the prompts whose effect passes; the node itself is kept by its mean over prompts."""
    model, saes, pairs = planted()
    nodes = sfc.check_saes(model, saes)
    task = sfc.task_nodes(nodes, pairs, method="atp")
    tau = 0.03
    circuit = sfc.sparse_feature_circuit(nodes, pairs, tau_node=tau, tau_edge=0.0, method="atp", task=task)
    edges = {(e["source"], e["target"]): e["score"] for e in circuit.edges}
    lat = task.comps(2)[0]
    checked = 0
    for i in range(lat.n):
        if (f"L0.f{i}", f"L2.f{i}") not in edges:
            continue
        per_prompt = (task.grad[lat] * task.delta[lat])[:, -1, i, 0]  # each prompt's effect of L2.f_i
        on = task.clean[task.comps(0)[0]][:, -1, i, 0] > 0
        want = float((per_prompt * on * (per_prompt.abs() >= tau)).sum()) / len(pairs)
        every = float((per_prompt * on).sum()) / len(pairs)
        assert edges[(f"L0.f{i}", f"L2.f{i}")] == pytest.approx(want, rel=1e-4, abs=1e-7)
        checked += abs(want - every) > 1e-3  # a prompt under tau that summing over every instance counted
    assert checked >= 2
    assert circuit.scores["L2.f0"] >= tau and (task.grad[lat] * task.delta[lat])[:, -1, 0, 0].abs().min() < tau


def test_atp_is_one_step_ig_and_ig_nearly_completes(tiny):
    _, nodes, saes, pairs = tiny
    at = sfc.task_nodes(nodes, pairs, method="atp")
    ig1 = sfc.task_nodes(nodes, pairs, method="ig", ig_steps=1)
    for comp in nodes.components:
        torch.testing.assert_close(at.grad[comp], ig1.grad[comp], rtol=1e-4, atol=1e-6)
    reference = atp(nodes, pairs)  # circ-core's AtP: the same node effects
    assert at.scores() == pytest.approx({k: reference[k] for k in at.scores()}, rel=1e-4, abs=1e-6)
    # the layer-wise IG whose gradients the edges use gives circ-core's joint left-Riemann IG scores
    ig3 = sfc.task_nodes(nodes, pairs, method="ig", ig_steps=3)
    joint = integrated_gradients(nodes, pairs, steps=3, rule="left", joint=True)
    assert ig3.scores() == pytest.approx({k: joint[k] for k in ig3.scores()}, rel=1e-4, abs=1e-6)
    # IG's completeness at one layer: its latents' + error's effects ~ m(layer patched) - m(clean)
    ig = sfc.task_nodes(nodes, pairs, method="ig", ig_steps=16)
    lat, err = ig.comps(3)
    total = float(ig.effects(lat).sum() + ig.effects(err).sum())
    with torch.no_grad():
        m_clean = float(logit_diff(nodes.model(pairs.clean_ids).logits, pairs).mean())
        patched = {c: ig.clean[c] + ig.delta[c] for c in (lat, err)}
        logits, _ = nodes.values(pairs.clean_ids, lambda c, v: patched.get(c, v))
        m_patch = float(logit_diff(logits, pairs).mean())
    assert abs(total - (m_patch - m_clean)) < 0.05 * abs(m_patch - m_clean) + 1e-3


def test_thresholds_select_nodes_and_edges(tiny):
    _, nodes, _, pairs = tiny
    task = sfc.task_nodes(nodes, pairs, method="atp")
    loose = sfc.sparse_feature_circuit(nodes, pairs, tau_node=0.0, tau_edge=0.0, task=task)
    tau = sorted(abs(v) for v in loose.scores.values())[len(loose.scores) // 2]
    tight = sfc.sparse_feature_circuit(nodes, pairs, tau_node=tau, tau_edge=0.0, task=task)
    assert all(abs(n["score"]) >= tau for n in tight.nodes)
    assert {n["id"] for n in tight.nodes} == {k for k, v in loose.scores.items() if abs(v) >= tau}
    assert 0 < len(tight.nodes) < len(loose.nodes)
    kept = {n["id"] for n in tight.nodes}
    assert tight.edges and all(e["source"] in kept and e["target"] in kept for e in tight.edges)
    assert all(e["source"].startswith("L1.") and e["target"].startswith("L3.") for e in tight.edges)
    t_edge = sorted(abs(e["score"]) for e in tight.edges)[len(tight.edges) // 2]
    sparse = sfc.sparse_feature_circuit(nodes, pairs, tau_node=tau, tau_edge=t_edge, task=task)
    assert {(e["source"], e["target"]) for e in sparse.edges} == \
        {(e["source"], e["target"]) for e in tight.edges if abs(e["score"]) >= t_edge}
    assert {n["kind"] for n in loose.nodes} == {"feature", "error"}
    none = sfc.sparse_feature_circuit(nodes, pairs, tau_node=1e9, tau_edge=0.0, task=task)
    assert none.nodes == [] and none.edges == []


def identity_sae(d: int):
    """A ReLU 'SAE' whose latents are the +/- coordinates of the residual: exact, error 0."""
    sae = architectures.build_sae(ReLUConfig(d_in=d, d_sae=2 * d))
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
    pairs = pairs_of(clean, corrupt, torch.full((n,), 97), torch.full((n,), 98))
    return model, {0: identity_sae(64), 2: identity_sae(64)}, pairs


def test_planted_circuit_is_faithful_and_complete():
    model, saes, pairs = planted()
    nodes = sfc.check_saes(model, saes)
    circuit = sfc.sparse_feature_circuit(nodes, pairs, tau_node=1e-4, tau_edge=1e-4, method="atp")
    planted_ids = {f"L{L}.f{i}" for L in saes for i in (0, 1, 64, 65)}
    found = {n["id"] for n in circuit.nodes}
    assert found and found <= planted_ids  # nothing but the planted latents carries an effect
    assert circuit.edges and {int(e["source"].split(".f")[1]) % 64 for e in circuit.edges} <= {0, 1}
    empty, full = sfc.faithfulness_curve(nodes, pairs, circuit.ranking(), counts=[0, len(found)])
    assert full["faithfulness"] == pytest.approx(1.0, abs=1e-4)
    assert full["completeness"] == pytest.approx(0.0, abs=1e-4)
    assert empty["faithfulness"] == pytest.approx(0.0, abs=1e-6)
    assert empty["completeness"] == pytest.approx(1.0, abs=1e-4)


def test_bad_input_fails_in_one_line(tiny):
    model, nodes, saes, pairs = tiny
    cases = [
        (dict(tau_node=-0.1), "tau_node"), (dict(tau_edge=float("nan")), "tau_edge"),
        (dict(method="eap"), "method"), (dict(ig_steps=0), "ig_steps"), (dict(metric="nope"), "metric"),
    ]
    for kw, word in cases:
        with pytest.raises(ValueError, match=word) as err:
            sfc.sparse_feature_circuit(nodes, pairs, **kw)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=">= 2"):
        sfc.check_saes(model, {1: saes[1]})
    with pytest.raises(ValueError, match="width is 64"):
        sfc.check_saes(model, {1: saes[1], 2: random_sae(32, 16, 0)})
    with pytest.raises(ValueError, match="after block 2"):
        sfc.check_saes(model, saes, {1: "blocks.2.hook_resid_post", 3: ""})
    assert sfc.check_saes(model, saes, {1: "blocks.2.hook_resid_pre", 3: "blocks.3.hook_resid_post"}).saes.keys() == {1, 3}
    with pytest.raises(ValueError, match="out of range"):
        sfc.check_saes(model, {1: saes[1], 9: saes[3]})


def test_notebook_sae_ids_are_checked_before_any_load(tiny, tmp_path):
    from shared.notebook.parameters import Parameters
    from shared.recipes import circuit_saes

    model = tiny[0]

    def P(ids):
        return Parameters(MODEL_ID="tiny:gpt2", SAE="someone/saes", SAE_IDS=ids, SEED=0)

    with pytest.raises(ValueError, match="after block 2.*layer 3"):  # the second id fails before the first loads
        circuit_saes.load_saes(P(["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]), model, None, [1, 3], tmp_path)
    with pytest.raises(ValueError, match="one SAE id per layer"):
        circuit_saes.load_saes(P(["", ""]), model, None, [1, 2, 3], tmp_path)
    with pytest.raises(ValueError, match=">= 2 SAE layers"):
        circuit_saes.load_saes(P([""]), model, None, [1], tmp_path)
    assert not any(tmp_path.iterdir())
