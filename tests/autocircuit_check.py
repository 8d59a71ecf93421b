"""Run AutoCircuit's EAP and ACDC on a saved HF GPT-2 model; for tests/test_circuits_acdc.py, inside .venv-autocircuit.

usage: .venv-autocircuit/bin/python tests/autocircuit_check.py MODEL_DIR PAIRS.pt TAU OUT.json
The HF weights become a HookedTransformer without any processing (no LN folding, no centering, no
value-bias folding), so both libraries compute the same function; AutoCircuit's edge names are
written in shared/circuits/edges.py's naming ("embed", "L1.h2", "L1.h2.q", "L1.mlp", "logits").
"""
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


def hooked(model_dir: str) -> HookedTransformer:
    hf = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn=c.activation_function,
        normalization_type="LN", eps=c.layer_norm_epsilon, positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=False, device="cpu")
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False, refactor_factored_attn_matrices=False)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    return model.eval()


def main(model_dir: str, pairs_path: str, tau: float, out_path: str) -> None:
    t.set_num_threads(1)
    data = t.load(pairs_path)
    model = hooked(model_dir)
    n = data["clean_ids"].shape[0]
    dataset = PromptDataset(list(data["clean_ids"]), list(data["corrupt_ids"]),
                            [a.view(1) for a in data["answer_ids"]], [w.view(1) for w in data["wrong_ids"]])
    loader = PromptDataLoader(dataset, seq_len=None, diverge_idx=0, batch_size=n, shuffle=False)
    pm = patchable_model(model, factorized=True, slice_output="last_seq", separate_qkv=True, device=t.device("cpu"))
    names = {e: (our_name(e.src.name), our_name(e.dest.name)) for e in pm.edges}

    t0 = time.time()
    eap = mask_gradient_prune_scores(pm, loader, None, grad_function="logit", answer_function="avg_diff",
                                     mask_val=0.0)
    eap_seconds = time.time() - t0
    order = sorted(pm.edges, key=lambda x: x.dest.layer, reverse=True)  # what acdc_prune_scores iterates
    pm.zero_grad()
    t0 = time.time()
    acdc = acdc_prune_scores(pm, loader, None, tao_exps=[0], tao_bases=[tau], faithfulness_target="kl_div")
    acdc_seconds = time.time() - t0
    out = {
        "eap": [[*names[e], float(e.prune_score(eap))] for e in pm.edges],
        "acdc_order": [list(names[e]) for e in order],
        "acdc_removed": [list(names[e]) for e in pm.edges if float(e.prune_score(acdc)) != float("inf")],
        "n_edges": len(pm.edges),
        "seconds": {"eap": eap_seconds, "acdc": acdc_seconds},
    }
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])
