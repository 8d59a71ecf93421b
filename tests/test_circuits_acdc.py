"""circuits.edges / circuits.acdc: exact edge patching, EAP against it, ACDC on a planted circuit, AutoCircuit agreement."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import peer_python
from shared.circuits import acdc, autocircuit, edges
from shared.circuits.tasks import PromptPairs
from shared.model import loading

pytestmark = pytest.mark.usefixtures("one_thread")

# AutoCircuit needs TransformerLens < 3, so it lives in its own venv (`make autocircuit-venv`);
# set AUTOCIRCUIT_PYTHON to use another interpreter.


def _pairs(n=6, t=8, seed=0, positions=(3,)) -> PromptPairs:
    """Random token prompts; the corrupt prompt differs at `positions` (never the last)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 256, (n, t), generator=g)
    corrupt = clean.clone()
    for p in positions:
        corrupt[:, p] = torch.randint(0, 256, (n,), generator=g)
    ans, wrong = torch.randint(0, 256, (n,), generator=g), torch.randint(0, 256, (n,), generator=g)
    return PromptPairs("random", clean, corrupt, ans, wrong, [""] * n, [""] * n)


def _lively(seed=3):
    """tiny:gpt2 with its block weights x4, so edges move the output well above float noise."""
    model, _ = loading.load_model("tiny:gpt2", seed=seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "wte" not in name and "wpe" not in name:
                p.mul_(4)
    return model


def _planted():
    """Only head L1.h0 writes to the residual (every other head's W_O and every MLP's output zeroed)."""
    model = _lively()
    d, h = model.config.n_embd, model.config.n_head
    dh = d // h
    with torch.no_grad():
        for b, block in enumerate(model.transformer.h):
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
            for head in range(h):
                if (b, head) != (1, 0):
                    block.attn.c_proj.weight[head * dh:(head + 1) * dh] = 0
            if b == 1:
                block.attn.c_attn.weight[:, 2 * d:2 * d + dh] *= 3  # a strong value path
                block.attn.c_proj.weight[:dh] *= 3
    return model


def test_graph_is_autocircuits_and_patching_none_or_all_gives_clean_or_corrupt():
    model = _lively()
    g = edges.edge_graph(model)
    # AutoCircuit's factorized graph of a 4-layer 4-head model with separate Q/K/V: 21 sources, 53 destinations
    assert (len(g.srcs), len(g.dests), g.n_edges) == (21, 53, 479)
    assert ("L0.h1", "L0.mlp") in g.index() and ("L0.mlp", "L0.h1.q") not in g.index()
    pairs = _pairs(positions=(1, 3, 5))
    corrupt = edges.source_outputs(model, g, pairs.corrupt_ids)
    with torch.no_grad():
        clean_logits, corrupt_logits = model(pairs.clean_ids).logits, model(pairs.corrupt_ids).logits
    none = edges.patched_logits(model, g, pairs.clean_ids, corrupt, torch.zeros(g.n_edges, dtype=torch.bool))
    every = edges.patched_logits(model, g, pairs.clean_ids, corrupt, torch.ones(g.n_edges, dtype=torch.bool))
    assert torch.equal(none, clean_logits)
    assert torch.allclose(every, corrupt_logits, atol=1e-5)
    assert not torch.allclose(clean_logits, corrupt_logits, atol=1e-3)


def test_eap_tracks_exact_single_edge_patching():
    """EAP is the first-order estimate of each edge's exact patching effect: they agree closely."""
    model = _lively()
    g = edges.edge_graph(model)
    pairs = _pairs(positions=(3,))
    eap = acdc.eap_scores(model, pairs)
    assert torch.allclose(acdc.eap_scores(model, pairs, batch_size=4), eap, atol=1e-6)  # batching only sums
    corrupt = edges.source_outputs(model, g, pairs.corrupt_ids)
    from shared.circuits.metrics import logit_diff

    base = logit_diff(model(pairs.clean_ids).logits, pairs).mean()
    exact = torch.zeros(g.n_edges)
    for i in range(g.n_edges):
        one = torch.zeros(g.n_edges, dtype=torch.bool)
        one[i] = True
        exact[i] = logit_diff(edges.patched_logits(model, g, pairs.clean_ids, corrupt, one), pairs).mean() - base
    assert torch.corrcoef(torch.stack([eap, exact]))[0, 1] > 0.9
    assert exact.abs().max() > 1e-3


@pytest.mark.parametrize("metric", ["kl", "logit_diff"])
def test_acdc_keeps_the_planted_circuit_and_nothing_else(metric):
    model = _planted()
    g = edges.edge_graph(model)
    pairs = _pairs(positions=(1, 2, 3, 4, 5, 6))  # the last token is shared, so only attention carries the change
    res = acdc.acdc(model, pairs, tau=1e-4, metric=metric)
    kept = set(res.edge_names())
    allowed = {("embed", f"L1.h0.{x}") for x in "qkv"} | {("L1.h0", "logits")}
    assert {("L1.h0", "logits"), ("embed", "L1.h0.v")} <= kept <= allowed
    assert res.kept.sum() == len(kept) and (res.delta[res.kept] >= 1e-4).all()
    # the circuit alone reproduces the model: KL to the clean run stays under tau per removed edge
    assert res.target < 1e-4 * (g.n_edges - len(kept))
    curve = acdc.faithfulness_curve(model, pairs, res.scores, budgets=[0, len(kept), 10_000], metric="kl")
    assert curve["faithfulness"][0] == pytest.approx(0.0, abs=1e-6)
    assert curve["faithfulness"][1] > 0.9 and curve["faithfulness"][2] == pytest.approx(1.0)


def test_faithfulness_curve_ends_at_the_full_model_and_starts_at_the_corrupt_run():
    model = _lively()
    pairs = _pairs(positions=(1, 3, 5))
    scores = acdc.eap_scores(model, pairs)
    curve = acdc.faithfulness_curve(model, pairs, scores, budgets=[0, 5, 479])
    assert curve["budgets"] == [0, 5, 479] and curve["n_edges"] == 479
    assert curve["faithfulness"][0] == pytest.approx(0.0, abs=1e-5)
    assert curve["faithfulness"][-1] == pytest.approx(1.0, abs=1e-5)
    weakest_first = 1 / (scores.abs() + 1e-12)
    both = acdc.faithfulness_curves(model, pairs, {"eap": scores, "weakest first": weakest_first},
                                    budgets=[0, 5, 479])
    assert both["eap"] == curve  # one shared corrupt run and ends: the same numbers as one at a time
    assert both["weakest first"] == acdc.faithfulness_curve(model, pairs, weakest_first, budgets=[0, 5, 479])


@pytest.mark.parametrize("call, match", [
    (lambda m, p: acdc.acdc(m, p, tau=-0.1), "tau must be a finite number >= 0"),
    (lambda m, p: acdc.acdc(m, p, tau=float("nan")), "tau must be"),
    (lambda m, p: acdc.acdc(m, p, tau="0.1"), "tau must be"),
    (lambda m, p: acdc.acdc(m, p, tau=0.1, metric="loss"), "unknown metric 'loss'"),
    (lambda m, p: acdc.eap_scores(m, p, metric="kl"), "zero gradient"),
    (lambda m, p: acdc.eap_scores(m, p, batch_size=0), "batch_size"),
    (lambda m, p: acdc.acdc(m, p, tau=0.1, order=[0, 1]), "order must list every edge"),
    (lambda m, p: acdc.faithfulness_curve(m, p, torch.zeros(3)), "one entry per edge"),
])
def test_bad_input_is_one_line(call, match):
    model, _ = loading.load_model("tiny:gpt2")
    with pytest.raises(ValueError, match=match) as e:
        call(model, _pairs(n=2))
    assert "\n" not in str(e.value)


def test_other_architectures_are_refused_by_name():
    model, _ = loading.load_model("tiny:llama")
    with pytest.raises(ValueError, match="GPT-2-architecture.*'llama'"):
        edges.edge_graph(model)


@pytest.mark.slow
def test_autocircuit_agrees_on_eap_scores_and_acdc_edges():
    """AutoCircuit 1.0.1 on the same weights (as a HookedTransformer): EAP to float tolerance (its sign is the
    opposite: it differentiates -logit_diff), ACDC the same removed edges at the same tau and edge order."""
    autocircuit_python = peer_python("AUTOCIRCUIT_PYTHON", ".venv-autocircuit", "auto_circuit.prune_algos.ACDC",
                                     "autocircuit-venv")
    model, pairs = _lively().double(), _pairs(positions=(3,))
    # ACDC removes an edge when its KL step is under tau, and each decision changes the circuit the later
    # ones start from. Where a step lies within the libraries' rounding of tau (AutoCircuit restarts each
    # patched forward from cached residuals with float32 masks, we run the whole model; in float32 that
    # reached past 1e-7), the two can decide that edge differently and every later one from another
    # circuit. So: in AutoCircuit's order (a set's, different each run; we replay it) every decision up to
    # the first differing one must agree, that one must be a near tie (our step within 1e-6 of tau), and
    # at least one of the taus tried must give the very same removed edges. Both run in float64.
    checked = []
    for tau in (3e-5, 2e-5, 5e-5, 1.5e-5, 4e-5, 2.5e-5):
        theirs = autocircuit.run_autocircuit(autocircuit_python, model, pairs, tau=tau, dtype=torch.float64)
        got = autocircuit.compare(model, pairs, theirs, tau=tau)
        assert got["n_edges"] == 479 and got["eap_max_abs_score"] > 1e-3
        assert torch.allclose(got["eap_ours"], got["eap_theirs"], atol=1e-6, rtol=1e-4), got["eap_max_abs_diff"]
        assert 10 <= got["acdc_kept"] < 479  # a circuit: neither empty nor the whole graph (15-55 kept at these taus)
        first = got["acdc_first_difference"]
        if first is None:
            assert got["acdc_same_removed"]
            checked.append(tau)
            break
        assert abs(first["step"] - tau) < 1e-6, (tau, first, got["acdc_only_ours"], got["acdc_only_theirs"])
    assert checked, "no tau tried gave the same removed edges (each differed first at a near tie with tau)"


def test_autocircuit_bad_input_is_one_line():
    model, pairs = _lively(), _pairs(n=2)
    with pytest.raises(ValueError, match="no AutoCircuit interpreter at '/no/such/python'"):
        autocircuit.run_autocircuit("/no/such/python", model, pairs)
    with pytest.raises(ValueError, match="AutoCircuit's graph"):
        autocircuit.compare(model, pairs, {"n_edges": 3, "eap": []})

def test_circuit_json_and_node_baseline_on_the_planted_circuit(tmp_path):
    from shared.circuits import attribution, circuit_json, nodes

    model = _planted()
    g = edges.edge_graph(model)
    pairs = _pairs(positions=(1, 2, 3, 4, 5, 6))
    res = acdc.acdc(model, pairs, tau=1e-4)
    node_list, edge_list = acdc.circuit_entries(g, res.delta, res.kept)
    data = circuit_json.write_circuit(tmp_path / "circuit.json", node_list, edge_list, metric="kl",
                                      prompts_n=len(pairs), tau_node=0.0, tau_edge=1e-4, method="acdc")
    kinds = {n["id"]: n["kind"] for n in data["nodes"]}
    assert kinds["L1.h0"] == "head" and kinds["L1.h0.v"] == "v" and kinds["logits"] == "logits"
    assert {"source": "L1.h0.v", "target": "L1.h0", "score": 0.0} in data["edges"]  # the input joined to its head
    # node-level AtP turned into edges: an edge ranks as its weaker end, so only the live head's edges score
    atp = attribution.atp(nodes.Nodes(model, heads="all", mlps="all"), pairs)
    ranked = acdc.edge_scores_from_nodes(g, atp)
    index = g.index()
    assert ranked[index[("L1.h0", "logits")]] == pytest.approx(abs(atp["L1.h0"]))
    assert ranked[index[("embed", "L1.h0.v")]] == pytest.approx(abs(atp["L1.h0"]))
    assert ranked[index[("embed", "logits")]] == 0.0
    assert int(torch.argmax(ranked)) in {index[("L1.h0", "logits")], *(index[("embed", f"L1.h0.{x}")] for x in "qkv")}
    with pytest.raises(ValueError, match="no score for 'L0.h0.q'"):
        acdc.edge_scores_from_nodes(g, {"L1.h0": 1.0})
