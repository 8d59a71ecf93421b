"""AutoCircuit (auto-circuit 1.0.1) as an independent check of acdc.py's EAP and ACDC, run in its own interpreter.

AutoCircuit needs TransformerLens < 3, which our core cannot import beside current packages, so it
runs in a separate venv (scripts/autocircuit_venv.sh, `make autocircuit-venv`): `run_autocircuit`
saves the model (float32) and the pairs to a folder, runs SCRIPT there (the HF weights become a
HookedTransformer with no LN folding, centring or bias folding, so both compute the same function)
and reads back AutoCircuit's EAP scores and, given tau, its ACDC edges and edge order; `compare`
runs ours on the same input and order. AutoCircuit's EAP is minus ours (it differentiates
-logit_diff); its ACDC order within a layer is a set's iteration order, which changes from run to run
(the edges hash by identity, so PYTHONHASHSEED=0 does not fix it): SCRIPT records it and `compare`
replays it in ours.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch

from .acdc import acdc, eap_scores
from .edges import EdgeGraph, edge_graph
from .metrics import check_tau
from .tasks import PromptPairs

SCRIPT = r"""
import json
import sys
import time

import torch as t
from auto_circuit.data import PromptDataLoader, PromptDataset
from auto_circuit.prune_algos.ACDC import acdc_prune_scores
from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
from auto_circuit.utils.graph_utils import patchable_model
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
from transformers import GPT2LMHeadModel


def our_name(node_name: str) -> str:
    if node_name == "Resid Start":
        return "embed"
    if node_name == "Resid End":
        return "logits"
    if node_name.startswith("MLP "):
        return f"L{node_name[4:]}.mlp"
    parts = node_name[1:].split(".")  # A{block}.{head}[.Q|K|V]
    return f"L{parts[0]}.h{parts[1]}" + (f".{parts[2].lower()}" if len(parts) == 3 else "")


def hooked(model_dir: str, device: str, dtype: t.dtype) -> HookedTransformer:
    hf = GPT2LMHeadModel.from_pretrained(model_dir, torch_dtype=dtype).eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn=c.activation_function,
        normalization_type="LN", eps=c.layer_norm_epsilon, positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=False, device=device, dtype=dtype)
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False, refactor_factored_attn_matrices=False)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    return model.to(device).eval()


def main(model_dir: str, pairs_path: str, tau: float, out_path: str, device: str, dtype: str = "float32") -> None:
    if device == "cpu":
        t.set_num_threads(1)
    data = {k: v.to(device) for k, v in t.load(pairs_path).items()}
    model = hooked(model_dir, device, getattr(t, dtype))
    n = data["clean_ids"].shape[0]
    dataset = PromptDataset(list(data["clean_ids"]), list(data["corrupt_ids"]),
                            [a.view(1) for a in data["answer_ids"]], [w.view(1) for w in data["wrong_ids"]])
    loader = PromptDataLoader(dataset, seq_len=None, diverge_idx=0, batch_size=n, shuffle=False)
    pm = patchable_model(model, factorized=True, slice_output="last_seq", separate_qkv=True, device=t.device(device))
    names = {e: (our_name(e.src.name), our_name(e.dest.name)) for e in pm.edges}

    t0 = time.time()
    eap = mask_gradient_prune_scores(pm, loader, None, grad_function="logit", answer_function="avg_diff",
                                     mask_val=0.0)
    eap_seconds = time.time() - t0
    out = {"eap": [[*names[e], float(e.prune_score(eap))] for e in pm.edges], "n_edges": len(pm.edges),
           "seconds": {"eap": eap_seconds}}
    if tau >= 0:
        order = sorted(pm.edges, key=lambda x: x.dest.layer, reverse=True)  # what acdc_prune_scores iterates
        pm.zero_grad()
        t0 = time.time()
        acdc = acdc_prune_scores(pm, loader, None, tao_exps=[0], tao_bases=[tau], faithfulness_target="kl_div")
        out["seconds"]["acdc"] = time.time() - t0
        out["acdc_order"] = [list(names[e]) for e in order]
        out["acdc_removed"] = [list(names[e]) for e in pm.edges if float(e.prune_score(acdc)) != float("inf")]
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5], *sys.argv[6:7])
"""


def run_autocircuit(python: str, model, pairs: PromptPairs, *, tau: float | None = None, device: str = "cpu",
                    timeout: float = 3600, dtype: torch.dtype = torch.float32) -> dict:
    """AutoCircuit's EAP scores (and, given tau, its ACDC removed edges and edge order) on `model` and `pairs`.

    python: the interpreter of a venv made by scripts/autocircuit_venv.sh; dtype: the weights' and
    activations' dtype there (float64 for an exact cross-check: run ours in float64 too). Returns
    {"eap": [[src, dest, score], ...], "n_edges", "seconds", "acdc_order"?, "acdc_removed"?} in edges.py's names.
    """
    if not python or not Path(python).is_file():
        raise ValueError(f"no AutoCircuit interpreter at {python!r}: build one with scripts/autocircuit_venv.sh "
                         f"(or `make autocircuit-venv`) and pass its bin/python")
    if tau is not None:
        tau = check_tau("tau", tau)  # None: EAP only
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = tmp / "model"
        dtype = next(model.parameters()).dtype
        model.to(dtype).save_pretrained(model_dir)
        model.to(dtype)
        torch.save({k: getattr(pairs, k).cpu() for k in ("clean_ids", "corrupt_ids", "answer_ids", "wrong_ids")},
                   tmp / "pairs.pt")
        (tmp / "check.py").write_text(SCRIPT)
        r = subprocess.run([python, str(tmp / "check.py"), str(model_dir), str(tmp / "pairs.pt"),
                            str(-1.0 if tau is None else float(tau)), str(tmp / "out.json"), device,
                            str(dtype).removeprefix("torch.")],
                           capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONHASHSEED": "0"})
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"AutoCircuit run failed ({python}): {last}")
        return json.loads((tmp / "out.json").read_text())


def compare(model, pairs: PromptPairs, theirs: dict, *, tau: float | None = None,
            graph: EdgeGraph | None = None) -> dict:
    """Ours beside AutoCircuit's result: EAP max |difference| (after its sign flip) and, given tau, whether ACDC
    (run in AutoCircuit's edge order) removes the same edges, with the closest KL step to tau and, where
    they differ, the first edge decided differently and our step there (a near tie with tau explains it)."""
    g = graph if graph is not None else edge_graph(model)
    index = g.index()
    if theirs["n_edges"] != g.n_edges or {(s, d) for s, d, _ in theirs["eap"]} != set(index):
        raise ValueError(f"AutoCircuit's graph ({theirs['n_edges']} edges) is not ours ({g.n_edges}): "
                         f"different models were compared")
    ours = eap_scores(model, pairs, graph=g)
    ac = torch.zeros(g.n_edges)
    for s, d, v in theirs["eap"]:
        ac[index[(s, d)]] = -v
    out = {"n_edges": g.n_edges, "eap_max_abs_diff": float((ours - ac).abs().max()),
           "eap_max_abs_score": float(ours.abs().max()), "eap_ours": ours, "eap_theirs": ac}
    if tau is not None:
        if "acdc_order" not in theirs:
            raise ValueError("AutoCircuit's result holds no ACDC run: call run_autocircuit with tau")
        res = acdc(model, pairs, tau, graph=g, order=[index[tuple(e)] for e in theirs["acdc_order"]])
        ours_removed = {n for n, k in zip(g.names(), res.kept.tolist()) if not k}
        theirs_removed = {tuple(e) for e in theirs["acdc_removed"]}
        names = g.names()
        first = next(((names[i], float(res.delta[i])) for i in res.order
                      if (names[i] in ours_removed) != (names[i] in theirs_removed)), None)
        out.update(acdc_same_removed=ours_removed == theirs_removed, acdc_kept=int(res.kept.sum()),
                   acdc_only_ours=sorted(ours_removed - theirs_removed), acdc_only_theirs=sorted(theirs_removed - ours_removed),
                   acdc_closest_step_to_tau=float((res.delta - tau).abs().min()),
                   # the first edge, in the order tried, that the two decided differently, with our KL step
                   # there (the decisions after it start from different circuits): None when they agree
                   acdc_first_difference=None if first is None else {"edge": first[0], "step": first[1]})
    return out
