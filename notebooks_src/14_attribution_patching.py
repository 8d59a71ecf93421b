# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# ## What you'll do
#
# - Take a task as **clean / corrupt prompt pairs** (indirect object identification by default: "When
#   Mary and John went to the store, John gave a drink to" → " Mary") and a metric (the answer's logit
#   minus the competing one's, at the last position).
# - Splice an SAE into the residual stream at `LAYER` **exactly** (x = x̂(f) + error), so each SAE
#   latent and the SAE's error term become nodes, next to every attention head (and its query and key)
#   and every MLP.
# - Score **every node at once** with attribution patching: AtP (two forwards, one backward:
#   Δactivation · gradient) and **AtP*** (Kramár et al. 2024): the QK fix recomputes each query/key
#   node's attention softmax exactly instead of linearising through it, and GradDrop re-runs the
#   backward once per layer with that layer's gradient dropped, so effects that cancel still show.
# - Check the estimates against **exact activation patching** of every node that is affordable (every
#   head, query, key, MLP and the SAE error, and up to 1,000 SAE latents besides each estimate's top ones):
#   Spearman correlation and the false-negative rate (top nodes by exact effect that the estimate missed),
#   next to the same numbers on the estimates' top nodes alone, which cannot see a node both missed.
# - Find the circuit on one half of the prompts and score its faithfulness on the other half.
# - Save `feature_attribution.json` (the SAE features), `attribution_report.json` and `circuit.json`.
#
# Default: GPT-2 small with Joseph Bloom's residual SAE read before block 8 (SAELens `gpt2-small-res-jb`).

# %% tags=["parameters"]
MODEL_ID = "gpt2"  # @param {type:"string"}
LAYER = 7  # @param {type:"integer"}
# the block whose output the SAE reads: SAE_ID "blocks.8.hook_resid_pre" is the output of block 7
SAE = "gpt2-small-res-jb"  # @param {type:"string"}
SAE_ID = "blocks.8.hook_resid_pre"  # @param {type:"string"}
# SAE: a SAELens release (SAE_ID: the SAE in it), a local export folder or a Hub repo id (SAE_ID: its
# subfolder), or "train-tiny" to train a small SAE here first (a quick try; the offline smoke run)
TASK = "ioi"  # @param ["ioi", "sva", "synthetic"]
N_PROMPTS = 40  # @param {type:"integer"}
# prompt pairs in all: about half find the nodes (AtP, AtP*, exact patching), the other half, sharing no
# prompt, score the circuit's faithfulness
METRIC = "logit_diff"  # @param ["logit_diff", "prob"]
COUNTERFACTUAL = "mean"  # @param ["mean", "resample", "zero"]
# what a node is patched to: its mean over the clean prompts (mean ablation), its value on the corrupt
# prompt (resample), or zero
USE_QK_FIX = True  # @param {type:"boolean"}
USE_GRADDROP = True  # @param {type:"boolean"}
TOP_N = 30  # @param {type:"integer"}
# the circuit keeps the top TOP_N nodes by AtP*; the "top-set" check patches only each estimate's top TOP_N
DEVICE = ""  # @param {type:"string"}
HF_REPO = ""  # @param {type:"string"}
HF_PRIVATE = True  # @param {type:"boolean"}
# HF_REPO "<user>/<name>" uploads circuit.json and the two reports there with your HF_TOKEN write
# secret, and prints the circuit viewer's shareable address; empty: no upload. A new repo is private
# unless HF_PRIVATE = False.
OUTPUT_DIR = "outputs/14_attribution_patching"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
from shared import hub
from shared.circuits import attribution, circuit_json, metrics, nodes, patching, tasks
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import circuits, common, saes
from shared.notebook.run import start
from shared.recipes import sae_source
from shared.saes import releases
from shared.views import plots, viewer

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, saes, circuits)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. The model, its SAE and the task
#
# The SAE must read the residual stream after block `LAYER` (checked against SAE_ID and the model's
# width). Every clean/corrupt pair has one token length and single-token answers. The pairs are split in
# two parts that share no prompt: the **find** part scores and ranks the nodes, the **score** part measures
# the circuit's faithfulness, so the circuit is not graded on the prompts that chose it.

# %%
model, tokenizer = run.load_model()
layer = nodes.check_sae_layer(SAE_ID, P.one_layer())
sae, sae_repo = sae_source.sae_for_notebook(P, model, tokenizer, layer, run.out_dir)
pairs = tasks.load_task(TASK, tokenizer, N_PROMPTS, seed=SEED)
find, score = tasks.split_pairs(pairs, seed=SEED)
print(pairs.describe(tokenizer))
print(f"find split: {len(find)} pairs (AtP, AtP*, exact patching); score split: {len(score)} pairs (faithfulness)")

# %% [markdown]
# ## 2. The nodes
#
# Heads (o_proj's input split by head), query and key inputs of softmax-attention heads, MLP outputs,
# and the SAE's latents plus its error term. Splicing the SAE leaves the model's output unchanged.
#
# The cell prints the node count, the metric on the find split's clean and corrupt prompts, and how far
# the splice moves the logits. **What a healthy run shows**: the splice moves the logits by float
# round-off only, orders of magnitude below the metric (x = x̂ + error exactly, by construction); the clean
# metric is positive and of the size Wang et al. (2022) report for GPT-2 small on IOI, a mean logit difference
# of 3.56 with the right name preferred 99.3 % of the time (their 15 templates; ours are 3 of the same
# form); the corrupt metric is about its negative, by construction: the corrupt prompt swaps which name
# is repeated, so its own answer is the other name, and names are drawn symmetrically. A clean metric
# near 0 means the model does not do the task on these prompts, and nothing below means much.

# %%
graph = nodes.Nodes(model, heads="all", mlps="all", qk=nodes.softmax_layers(model), saes={layer: sae},
                    centre_sae_input=releases.centred_input(SAE))
clean_m, corrupt_m, clean_logits = metrics.task_metrics(model, find, METRIC)
spliced_logits, _ = graph.values(find.clean_ids)
print(f"{len(graph)} nodes; {METRIC}: clean {clean_m:.3f}, corrupt {corrupt_m:.3f}; "
      f"SAE splice changes the logits by at most {float((spliced_logits - clean_logits).abs().max()):.1e}")

# %% [markdown]
# ## 3. AtP and AtP* for every node
#
# One clean forward with gradients, one forward for the counterfactual, one backward: AtP. Then the
# QK fix (a forward per attention layer with each head's query or key patched, stopped after that
# layer) and GradDrop (one more backward per layer). Scores estimate "metric change when this node is
# patched"; AtP* ranks by GradDrop's magnitude with AtP's sign: 1/(L−1) × the sum over the other layers
# of |AtP with that layer's gradient dropped| (a node's own layer adds 0), so a node whose effects are all
# direct scores |AtP|. All on the find split.
#
# Node ids read `L9.h9` (head 9 of block 9), `L9.h9.q` / `.k` (its query / key input), `L10.mlp`,
# `L7.f1234` (latent 1234 of the SAE after block 7) and `L7.error` (that SAE's error term). Scores are
# in metric units (logits). Healthy on IOI: among the top nodes, heads Wang et al. (2022) found: the name
# movers `L9.h9`, `L9.h6`, `L10.h0` and the S-inhibition heads `L7.h3`, `L7.h9`, `L8.h6`, `L8.h10`,
# scored negative (patching them lowers the metric), and the negative name movers `L10.h7`, `L11.h10`
# scored positive (patching them raises it), beside layer-7 SAE latents and the SAE's error term.

# %%
star = attribution.atp_star(graph, find, metric=METRIC, ablation=COUNTERFACTUAL,
                            use_qk_fix=USE_QK_FIX, use_graddrop=USE_GRADDROP)
top = lambda scores, n: sorted(scores, key=lambda i: -abs(scores[i]))[:n]  # noqa: E731
for node in top(star.score, 10):
    print(f"  {node:>12}  AtP* {star.score[node]:+9.4f}   AtP {star.atp[node]:+9.4f}")

# %% [markdown]
# ## 4. Exact patching: how good were the estimates?
#
# Each node is patched alone (many per forward) on the find split and the metric change measured: every
# head, query, key, MLP and the SAE error, every latent in an estimate's top `TOP_N`, and the other latents
# the patch changes (all when there are at most 1,000, else a seeded random 1,000; a latent the patch leaves
# unchanged has exact effect 0 and estimate 0). Spearman compares |score| with |exact effect|; the
# false-negative rate is the share of the top k nodes by exact effect that an estimate's top k missed.
# "full" counts on every patched node; "top set" on the estimates' own top nodes alone, where a node that
# every estimate ranks low is never patched, so it cannot count as missed. (With `TOP_N = 1` the top set
# can be a single node that every estimate ranks first: nothing to rank, so its Spearman reads nan.)
#
# The table gives, per estimate (`atp`, `atp_qk` = AtP with the QK fix only, `atp*`), the Spearman
# correlation of |score| with |exact effect| and the false-negative rate among the top k (printed with
# the nodes missed), on both node sets; then the 15 nodes with the largest exact effect and their
# scores. `atp_vs_exact.png`: per method, each node's score against its exact effect, the diagonal being
# a perfect estimate, the top nodes by |exact effect| labelled. Healthy: Spearman well above 0, most
# points near the diagonal, and AtP*'s false-negative rate at or below AtP's: Kramár et al. (2024) find
# AtP's misses come from attention saturation and from direct and indirect effects cancelling, the two
# failures the QK fix and GradDrop address (they give no single rate to expect). Spearman near 0 or a
# cloud with no slope means the gradient and the exact patch disagree everywhere: a bug, not a finding.

# %%
check = attribution.exact_check(graph, find, {"atp": star.atp, "atp_qk": star.qk_fixed, "atp*": star.score},
                                 top_n=TOP_N, seed=SEED, ablation=COUNTERFACTUAL, metric=METRIC)
exact, k = check["exact"], check["full"]["atp"]["top_k"]
print(f"patched exactly: {check['nodes']['full']} nodes: {check['nodes']['policy']}")
print(f"{'method':>8} | spearman full | top set | false negatives (top {k}) full | top set")
for method, c in check["full"].items():
    t = check["top_set"][method]
    print(f"{method:>8} | {c['spearman']:13.3f} | {t['spearman']:7.3f} | {c['false_negative_rate']:30.2f} | "
          f"{t['false_negative_rate']:.2f}   missed: {c['false_negatives']}")
print("false-negative rate: the share of the top k nodes by |exact effect| that the estimate's top k missed")
print(f"\n{'node':>12} | {'exact':>9} | {'AtP':>9} | {'AtP*':>9}")
for node in top(exact, 15):
    print(f"{node:>12} | {exact[node]:+9.4f} | {star.atp[node]:+9.4f} | {star.score[node]:+9.4f}")
run.save_figure(plots.plot_attribution_scatter(exact, {"AtP": star.atp, "AtP*": star.score}), "atp_vs_exact.png")

# %% [markdown]
# ## 5. The circuit and its faithfulness
#
# The top `TOP_N` nodes by AtP* (found on the find split) form the circuit. Faithfulness, on the score
# split, keeps them and mean-ablates every other node: (m(circuit) − m(nothing)) / (m(model) − m(nothing));
# 1 means the circuit alone does the task.
#
# For scale: Wang et al.'s hand-found circuit of 26 heads keeps 87 % of GPT-2 small's logit difference
# with everything else mean-ablated, and circuits found by activation patching reach a normalised
# faithfulness above 0.8 where EAP's plateau at 0.6 (Hanna et al. 2024). Thirty nodes that must also
# carry what the SAE's layer holds may land lower. Near 0 or negative: the top nodes do not do the
# task. Above 1 is possible under mean ablation, where a circuit can beat the model (Nainani et al.
# 2024 measure 1.285 on an IOI variant), and is no sign of a bug by itself.

# %%
circuit = top(star.score, TOP_N)
faith = patching.faithfulness(graph, score, circuit, metric=METRIC)
print(f"circuit of {len(circuit)} nodes, faithfulness {faith:.3f} on the {len(score)} score-split pairs "
      f"(none of them used to find it)")

# %% [markdown]
# ## 6. The reports
#
# `feature_attribution.json`: `model`, `layer`, `sae`, `d_sae`, `task`, `metric`, and `features`: the SAE's
# top `TOP_N` latents and its error term ranked by |AtP*|, each with `id`, `kind` (feature or error),
# `latent`, `atp_star`, `atp` and `exact` (its exactly patched effect; null if it was not patched).
# `attribution_report.json`: `model`, `layer`, `sae`, `task`, `prompts_n`; `splits` (the find and score
# sizes and the rule); `config` (QK fix, GradDrop, the counterfactual, the metric, `top_n`, the layers the
# QK fix ran on and those it does not apply to); `metric_clean` and `metric_corrupt` (find split) and
# `n_nodes`; `comparison` (step 4's numbers: `full` and `top_set` per method with `n`, `top_k`,
# `spearman`, `spearman_signed`, `false_negative_rate`, `false_negatives`, and `patched`, what was patched
# and why); `faithfulness` (step 5, on the score split); `top_nodes`, every exactly patched node with
# its exact effect and its three estimates, largest exact effect first. Both reports (and `upload.json`)
# also hold `run`, the stamp every JSON report here carries (the notebook, model, seed, parameters, the
# vendored core's hash, when it was written).
# `circuit.json` is CircuitData: `nodes` (the `TOP_N` nodes by AtP*, each with `id`, `layer`, `score` =
# its AtP* and `kind`), `edges` (none: this method scores nodes), `metric`, `prompts_n` (the find split),
# `tau_node` (the smallest |score| kept), `method`, `model`, `sae_repo`, `task`, `ablation`,
# `faithfulness` and `faithfulness_prompts_n` (the score split).

# %%
kinds = graph.kinds()
feats = [i for i in top(star.score, len(graph)) if kinds[i] in ("feature", "error")][:TOP_N]
run.write_report("feature_attribution.json", {
    "model": MODEL_ID, "layer": layer, "sae": sae_repo, "d_sae": sae.cfg.d_sae, "task": TASK, "metric": METRIC,
    "features": [{"id": i, "kind": kinds[i], "latent": int(i.split(".f")[1]) if kinds[i] == "feature" else None,
                  "atp_star": star.score[i], "atp": star.atp[i], "exact": exact.get(i)} for i in feats],
})
run.write_report("attribution_report.json", {
    "model": MODEL_ID, "layer": layer, "sae": sae_repo, "task": TASK, "prompts_n": len(pairs),
    "splits": {"find": len(find), "score": len(score),
               "rule": "disjoint prompts; find: AtP, AtP*, exact patching, comparison; score: faithfulness"},
    "config": {"use_qk_fix": USE_QK_FIX, "use_graddrop": USE_GRADDROP, "counterfactual": COUNTERFACTUAL,
               "metric": METRIC, "top_n": TOP_N, "qk_fix_layers": star.config["qk_fix_layers"],
               "qk_fix_not_applicable": star.config["qk_fix_not_applicable"]},  # linear-attention layers
    "metric_clean": clean_m, "metric_corrupt": corrupt_m, "n_nodes": len(graph),  # on the find split
    "comparison": {"full": check["full"], "top_set": check["top_set"], "patched": check["nodes"],
                   "false_negative_rate": "share of the top_k nodes by |exact effect| missed by the estimate's "
                                          "top_k; full: every patched node, top_set: the estimates' top_n alone"},
    "faithfulness": faith, "faithfulness_split": "score",
    "top_nodes": [{"id": i, "kind": kinds[i], "exact": exact[i], "atp": star.atp[i], "atp_qk": star.qk_fixed[i],
                   "atp_star": star.score[i]} for i in top(exact, len(exact))],
})
entries = circuit_json.node_entries({i: star.score[i] for i in circuit}, kinds)
circuit_json.write_circuit(run.out_dir / "circuit.json", entries, [], metric=METRIC, prompts_n=len(find),
                           tau_node=min(abs(e["score"]) for e in entries), method="atp*", model=MODEL_ID,
                           sae_repo=sae_repo, task=TASK, ablation=COUNTERFACTUAL, faithfulness=faith,
                           faithfulness_prompts_n=len(score))  # found on the find split, scored on the score split
print(f"wrote {run.out_dir / 'circuit.json'}")

# %% [markdown]
# ## 7. Upload and share (only when you name a repo)
#
# With `HF_REPO` set and an `HF_TOKEN` write secret, `circuit.json`, `feature_attribution.json` and
# `attribution_report.json` go to that repo (created private unless `HF_PRIVATE = False`); a failed
# upload is printed and recorded in `upload.json`, and the files stay in `OUTPUT_DIR`.
# The last line is the circuit's shareable address: the site's circuit viewer opening the uploaded
# circuit.json (it works once the repo is public); without an upload it says where to drop the file.
# `upload.json`: `hub` (`{}` when `HF_REPO` is empty; else `ok`, `repo`, and `url`, `files`, `file_urls`,
# `private` or `error`) and `viewer_url` (null without an upload).

# %%
circuit_path = run.out_dir / "circuit.json"
upload = hub.upload_files([circuit_path, run.out_dir / "feature_attribution.json", run.out_dir / "attribution_report.json"],
                          hub.hub_repo_id(HF_REPO), private=HF_PRIVATE, path_in_repo="circuits/atp")
run.write_report("upload.json", {"hub": upload, "viewer_url": viewer.share(upload, "circuit", circuit_path)})
