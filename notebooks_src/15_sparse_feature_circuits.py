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
# - Splice an SAE into the residual stream at **two or more layers**, exactly: x = x̂(f) + error, so every
#   SAE latent and each SAE's **error node** (what the SAE misses) is a node of the graph.
# - Score every node's effect on a task (subject-verb agreement by default: "The keys to the cabinet"
#   → " are" over " is") with the metric's gradient × (corrupt − clean), by **integrated gradients**
#   (10 steps, as Marks et al. 2024) or plain AtP.
# - Score the **edges** between nodes of consecutive SAE layers: dm/dd · dd/du · Δu summed over positions,
#   one backward pass per kept downstream node (never by patching pairs one by one), into the downstream
#   node's (prompt, position) instances whose own effect passes `TAU_NODE`, as the paper's code does.
# - Keep nodes with |effect| ≥ `TAU_NODE` and edges with |effect| ≥ `TAU_EDGE`: the circuit, saved as
#   `circuit.json` and drawn as a graph (features as circles, error nodes as triangles).
# - Measure how **faithful** (the top nodes alone, everything else mean-ablated) and **complete** (the model
#   with those nodes mean-ablated) circuits of growing size are, on prompts that share none with the ones
#   that found the circuit (the paper's code finds on a train split and evaluates on a test split).
#
# Default: Pythia-70M-deduped with Sam Marks' residual SAEs (SAELens `pythia-70m-deduped-res-sm`, 32k latents),
# the paper's own model and dictionaries. With only residual SAEs, an edge carries everything the blocks
# between its two layers do (the paper also splices attention and MLP outputs).

# %% tags=["parameters"]
MODEL_ID = "EleutherAI/pythia-70m-deduped"  # @param {type:"string"}
LAYERS = [2, 3, 4]  # @param {type:"raw"}
# the blocks whose outputs the SAEs read (>= 2); SAE_IDS: one SAE per layer, in the same order
SAE = "pythia-70m-deduped-res-sm"  # @param {type:"string"}
SAE_IDS = ["blocks.2.hook_resid_post", "blocks.3.hook_resid_post", "blocks.4.hook_resid_post"]  # @param {type:"raw"}
# SAE: a SAELens release (SAE_IDS: the SAEs in it), a local export folder or a Hub repo id (SAE_IDS: its
# subfolders), or "train-tiny" to train a small SAE per layer here first (a quick try; the offline smoke run)
TASK = "sva"  # @param ["ioi", "sva", "synthetic"]
N_PROMPTS = 40  # @param {type:"integer"}
# prompt pairs in all: about half find the circuit (node and edge effects), the other half, sharing no
# prompt, score it (faithfulness and completeness)
METRIC = "logit_diff"  # @param ["logit_diff", "prob"]
NODE_METHOD = "ig"  # @param ["ig", "atp"]
IG_STEPS = 10  # @param {type:"integer"}
TAU_NODE = 0.1  # @param {type:"number"}
TAU_EDGE = 0.01  # @param {type:"number"}
# thresholds on |effect| in metric units (the paper: 0.1 / 0.01 in its code's README, 0.2 / 0.02 in its figures)
DEVICE = ""  # @param {type:"string"}
HF_REPO = ""  # @param {type:"string"}
HF_PRIVATE = True  # @param {type:"boolean"}
# HF_REPO "<user>/<name>" uploads circuit.json, its graph and sfc_report.json there with your HF_TOKEN
# write secret, and prints the circuit viewer's shareable address; empty: no upload. A new repo is
# private unless HF_PRIVATE = False.
OUTPUT_DIR = "outputs/15_sparse_feature_circuits"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
from shared import hub
from shared.circuits import circuit_json, metrics, sfc, tasks
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import circuits, common, saes
from shared.notebook.run import start
from shared.recipes import circuit_saes
from shared.views import html, plots, viewer

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, saes, circuits)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. The model, its SAEs and the task
#
# Each SAE must read the residual stream after its block of `LAYERS` (checked against its SAE id and the
# model's width). Every clean/corrupt pair has one token length and single-token answers. The pairs are
# split in two parts that share no prompt: the **find** part gives the node and edge effects, the **score**
# part the faithfulness and completeness curves.
#
# The cell prints one example pair, the split sizes, the node count, the metric on the find split's clean
# and corrupt prompts, and how far the splices move the logits. **What a healthy run shows**: the splices
# move the logits by float round-off only (x = x̂ + error at every layer, by construction); the clean
# metric is positive (the model prefers the verb that agrees with its subject: Marks et al. study this
# very task on this model); the corrupt metric is about its negative, by construction: the corrupt prompt
# flips the subject's number, so its own right verb is the other one, and both numbers are drawn
# equally often. A clean metric near 0 means the model does not do the task on these prompts.

# %%
model, tokenizer = run.load_model()
graph, sae_where = circuit_saes.load_saes(P, model, tokenizer, P.LAYERS, run.out_dir)
pairs = tasks.load_task(TASK, tokenizer, N_PROMPTS, seed=SEED)
find, score = tasks.split_pairs(pairs, seed=SEED)
print(pairs.describe(tokenizer))
print(f"find split: {len(find)} pairs (node and edge effects); score split: {len(score)} pairs (the curves)")
clean_m, corrupt_m, clean_logits = metrics.task_metrics(model, find, METRIC)
spliced_logits, _ = graph.values(find.clean_ids)
print(f"{len(graph)} nodes at layers {sorted(graph.saes)}; {METRIC}: clean {clean_m:.3f}, corrupt "
      f"{corrupt_m:.3f}; the SAE splices change the logits by at most "
      f"{float((spliced_logits - clean_logits).abs().max()):.1e}")

# %% [markdown]
# ## 2. Node effects
#
# For each node, the metric's gradient times its change from the clean to the corrupt prompt, summed over
# positions and averaged over the find split's prompts. IG averages the gradient along the straight path
# clean → corrupt at one layer at a time (latents and error together, `IG_STEPS` left Riemann steps: the
# paper's choice, because a single gradient is poor in early layers); AtP takes it at the clean run only.
# Per layer the cell prints the error node's effect and the latents with the largest |effect| (`f<id>`),
# in metric units: a negative effect means patching the node to its corrupt value lowers the clean
# answer's lead (the node helps do the task).

# %%
task = sfc.task_nodes(graph, find, METRIC, method=NODE_METHOD, ig_steps=IG_STEPS)
scores = task.scores()
for layer in task.layers:
    here = sorted((i for i in scores if i.startswith(f"L{layer}.")), key=lambda i: -abs(scores[i]))
    print(f"layer {layer}: error node {scores[f'L{layer}.error']:+.4f}; top latents "
          + ", ".join(f"{i.split('.')[1]} {scores[i]:+.4f}" for i in here if not i.endswith("error"))[:200])

# %% [markdown]
# ## 3. The circuit: thresholded nodes and their edges
#
# Nodes with |effect| ≥ `TAU_NODE` are kept (error nodes too). For each kept node of a later layer, one
# backward pass of (its gradient × its value) to every node of the layer before, times their change,
# gives all its incoming edges at once; edges with |effect| ≥ `TAU_EDGE` are kept. As in the paper's code,
# an edge counts only the downstream node's (prompt, position) instances whose own effect passes
# `TAU_NODE`, while the node itself is kept by its effect summed over positions. The cell prints the
# circuit's size (with how many error nodes) and its ten strongest edges, `source -> target effect`.
# Healthy: a circuit far smaller than the nodes scored, with edges between consecutive layers. No node
# passing `TAU_NODE` means the task's effects are all smaller than the threshold (lower it); a circuit
# nearly as large as the scored set, that it is far too low.

# %%
circuit = sfc.sparse_feature_circuit(graph, find, METRIC, tau_node=TAU_NODE, tau_edge=TAU_EDGE,
                                     method=NODE_METHOD, ig_steps=IG_STEPS, task=task)
n_err = sum(n["kind"] == "error" for n in circuit.nodes)
print(f"circuit: {len(circuit.nodes)} nodes ({n_err} error nodes) of {len(scores)} scored, {len(circuit.edges)} edges")
for e in sorted(circuit.edges, key=lambda e: -abs(e["score"]))[:10]:
    print(f"  {e['source']:>12} -> {e['target']:<12} {e['score']:+.4f}")

# %% [markdown]
# ## 4. The graph
#
# One row per layer (earliest at the bottom): latents as circles, error nodes as triangles, blue raises the
# metric, red lowers it, edge width ∝ |effect|; the nodes and edges listed below it. The same view as the
# site's circuit viewer, saved as a self-contained `circuit_graph.html` (open it in a browser).

# %%
drawn = circuit.circuit_data()
graph_html = html.view("circuit", drawn, title=f"{MODEL_ID} · {TASK} · {METRIC}")
(run.out_dir / "circuit_graph.html").write_text(html.page(graph_html, title="sparse feature circuit"),
                                                 encoding="utf-8")
html.show(graph_html)

# %% [markdown]
# ## 5. Faithfulness and completeness
#
# For the top k nodes by |effect| (ranked on the find split): faithfulness = (m(those nodes alone) − m(∅)) /
# (m(model) − m(∅)), every other node at every SAE layer mean-ablated (per position, over the clean prompts);
# completeness = the same for the model with those k nodes mean-ablated. Both on the score split, whose
# prompts did not choose the nodes. A good circuit: faithfulness near 1 and completeness near 0 with few nodes.
#
# `faithfulness_completeness.png` draws both against k (log axis), the thresholded circuit's size marked.
# By construction the curve starts at faithfulness 0 and completeness 1 (k = 0: nothing kept) and ends
# near faithfulness 1 and completeness 0 (k = every scored node: only latents that never moved on the
# find prompts are still ablated). **Healthy**: most of the way there with a small share of the nodes;
# Marks et al. (2024) find feature circuits reach high faithfulness with far fewer nodes than neuron
# circuits, on this model and task. A faithfulness that stays near 0 until the last few points means the
# ranking does not find what does the task. The paper's curves also splice attention and MLP outputs;
# with residual SAEs only, no published curve is the exact reference for this one.

# %%
ranking = circuit.ranking()
counts = sorted(set(sfc.default_counts(len(ranking)) + [len(circuit.nodes)]))
curve = sfc.faithfulness_curve(graph, score, ranking, counts, metric=METRIC)
print(f"on the {len(score)} score-split pairs (none of them chose the nodes):")
print(f"{'nodes':>6} | faithfulness | completeness")
for r in curve:
    print(f"{r['n_nodes']:6d} | {r['faithfulness']:12.3f} | {r['completeness']:12.3f}")
at_circuit = next(r for r in curve if r["n_nodes"] == len(circuit.nodes))
run.save_figure(plots.plot_faithfulness_completeness(curve, len(circuit.nodes)), "faithfulness_completeness.png")

# %% [markdown]
# ## 6. The reports
#
# `circuit.json` is CircuitData: `nodes` (each with `id` such as `L3.f1234` or `L3.error`, `layer`, `score` =
# its effect and `kind`, feature or error), `edges` (`source`, `target`, `score`), `metric`, `prompts_n`
# (the find split), `tau_node`, `tau_edge`, `method` ("sfc") and `node_method`, `model`, `sae_repo`, `task`,
# and the circuit's `faithfulness` and `completeness` on the `faithfulness_prompts_n` score-split pairs.
# `sfc_report.json`: `model`, `layers`, `sae` (where each layer's SAE came from), `task`, `prompts_n`,
# `splits`, `metric` with `metric_clean` and `metric_corrupt` (find split), `config` (node method, IG
# steps, thresholds, what a patch and an ablation are, how edges are counted), `n_scored` (nodes with a
# non-zero effect), `n_nodes`, `n_edges`, `error_nodes` (each layer's error-node effect), `faithfulness`
# and `completeness` at the circuit's size, and `curve` (step 5's rows: `n_nodes`, `faithfulness`,
# `completeness`) with `curve_split` ("score"), and `run`, the stamp every JSON report here carries (the
# notebook, model, seed, parameters, the vendored core's hash, when it was written).

# %%
sae_repo = ", ".join(f"L{layer}: {w}" for layer, w in sae_where.items())
circuit_json.write_circuit(run.out_dir / "circuit.json", **drawn, model=MODEL_ID, sae_repo=sae_repo, task=TASK,
                           faithfulness=at_circuit["faithfulness"], completeness=at_circuit["completeness"],
                           faithfulness_prompts_n=len(score))  # found on the find split, scored on the score split
run.write_report("sfc_report.json", {
    "model": MODEL_ID, "layers": task.layers, "sae": sae_where, "task": TASK, "prompts_n": len(pairs),
    "splits": {"find": len(find), "score": len(score),
               "rule": "disjoint prompts; find: node and edge effects, thresholds; score: faithfulness, completeness"},
    "metric": METRIC, "metric_clean": clean_m, "metric_corrupt": corrupt_m,
    "config": {"node_method": NODE_METHOD, "ig_steps": IG_STEPS, "tau_node": TAU_NODE, "tau_edge": TAU_EDGE,
               "patch": "corrupt prompt (node and edge effects)", "ablation": "mean over clean prompts (curves)",
               "edges": "into downstream (prompt, position) instances with |effect| >= tau_node, as Marks et al.'s code"},
    "n_scored": len(scores), "n_nodes": len(circuit.nodes), "n_edges": len(circuit.edges),
    "error_nodes": {f"L{layer}": scores[f"L{layer}.error"] for layer in task.layers},
    "faithfulness": at_circuit["faithfulness"], "completeness": at_circuit["completeness"],  # on the score split
    "curve": curve, "curve_split": "score",
})
print(f"wrote {run.out_dir / 'circuit.json'}, circuit_graph.html, faithfulness_completeness.png, sfc_report.json")

# %% [markdown]
# ## 7. Upload and share (only when you name a repo)
#
# With `HF_REPO` set and an `HF_TOKEN` write secret, `circuit.json`, `circuit_graph.html` and
# `sfc_report.json` go to that repo (created private unless `HF_PRIVATE = False`); a failed upload is
# printed and recorded in `upload.json`, and the files stay in `OUTPUT_DIR`.
# The last line is the circuit's shareable address: the site's circuit viewer opening the uploaded
# circuit.json (it works once the repo is public); without an upload it says where to drop the file.
# `upload.json`: `hub` (`{}` when `HF_REPO` is empty; else `ok`, `repo`, and `url`, `files`, `file_urls`,
# `private` or `error`) and `viewer_url` (null without an upload).

# %%
circuit_path = run.out_dir / "circuit.json"
upload = hub.upload_files([circuit_path, run.out_dir / "circuit_graph.html", run.out_dir / "sfc_report.json"],
                          hub.hub_repo_id(HF_REPO), private=HF_PRIVATE, path_in_repo="circuits/sfc")
run.write_report("upload.json", {"hub": upload, "viewer_url": viewer.share(upload, "circuit", circuit_path)})
