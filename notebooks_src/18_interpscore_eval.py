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
# - Score one SAE, yours or a published one, with **InterpScore v0.0.1**: one number in [0, 1],
#
#   `InterpScore = 0.30·loss_recovered + 0.15·alive + 0.15·l0_score + 0.25·sparse_probing + 0.15·tpp`
#
# - See each of its five parts: how much of the model's loss the SAE keeps when spliced in, how many
#   latents are alive, how close L0 is to the sweet spot of 80, how well a probe on its latents reads
#   labelled concepts, and how much of that probe's skill sits in its top-20 latents (TPP).
# - Write `interpscore.json` with a leaderboard entry, and compare the probing parts with SAEBench's
#   definitions of sparse probing and TPP on the very same latents.
#
# Default: Gemma-2-2B with the Gemma Scope residual SAE of layer 12 (16k latents), FineWeb-Edu text
# for the loss, and two of SAEBench's own probing sets for the probes: Amazon review sentiment (5 stars vs
# 1 star) and the gender of Bias-in-Bios biographies.

# %% tags=["parameters"]
MODEL_ID = "google/gemma-2-2b"  # @param {type:"string"}
LAYER = 12  # @param {type:"integer"}
SAE = "gemma-scope-2b-pt-res-canonical"  # @param {type:"string"}
SAE_ID = "layer_12/width_16k/canonical"  # @param {type:"string"}
# SAE: a SAELens release (SAE_ID: the SAE in it), a local export folder or a Hub repo id such as a tier
# notebook's push (SAE_ID: its subfolder, "" for the root), or "train-tiny" to train a small SAE here
# first on DATASET (a quick try; the offline smoke run)
# it must read the residual stream after block LAYER (a blocks.L.hook_resid_pre SAE reads block L-1's output:
# LAYER = L - 1); its hook, layer and width are checked in the next cell wherever its files or release say them
TOKENS_TRAINED = 0  # @param {type:"integer"}
# how many tokens the SAE was trained on, for the leaderboard (0 = read it from a local export's cfg.json,
# else unknown)
DATASET = "hf:HuggingFaceFW/fineweb-edu:sample-10BT:train:text"  # @param {type:"string"}
# the text the tier notebooks (and train-tiny here) train on; the evaluation reads other text:
VAL_DATASET = "hf:HuggingFaceFW/fineweb-edu:CC-MAIN-2024-10:train:text"  # @param {type:"string"}
# the held-out text the loss, alive and L0 parts are measured on (the tier notebooks' validation default);
# "" = DATASET itself (held out only for "synthetic", read from its test split; the report says which)
EVAL_TOKENS = 100_000  # @param {type:"integer"}
CONTEXT_LEN = 128  # @param {type:"integer"}
PROBE_TASKS = ["amazon_sentiment", "bias_in_bios_gender"]  # @param {type:"raw"}
# binary labelled tasks (amazon_sentiment, bias_in_bios_gender, imdb, sst2, truthful_qa,
# synthetic:<sentiment|truth|names>); the first is the TPP concept
N_TRAIN = 1000  # @param {type:"integer"}
N_TEST = 500  # @param {type:"integer"}
MAX_LEN = 128  # @param {type:"integer"}
BATCH_SIZE = 4  # @param {type:"integer"}
# contexts per forward pass (the loss pass keeps several full-vocabulary logits of this many contexts)
DEVICE = ""  # @param {type:"string"}
OUTPUT_DIR = "outputs/18_interpscore_eval"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
from shared.data import packing
from shared.evals import scores
from shared.model import layout
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, data, evals, saes
from shared.notebook.run import start
from shared.readouts import probes
from shared.recipes import sae_source
from shared.saes import releases
from shared.views import plots

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, data, saes, evals)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. The model and its SAE
#
# Gated models (Gemma, Llama) need an `HF_TOKEN` secret. The SAE must read the residual stream of
# `LAYER` of this model: its width is checked against the model's.

# %%
model, tokenizer = run.load_model()
layer = P.one_layer()
sae, sae_repo = sae_source.sae_for_notebook(P, model, tokenizer, layer, run.out_dir)

# %% [markdown]
# ## 2. Loss recovered, alive, L0
#
# One pass over `EVAL_TOKENS` tokens of held-out text, `VAL_DATASET` (`shared.evals.metrics.evaluate_saes`, the same
# pass and the same default source the tier notebooks validate with, so an SAE is not scored on the
# tokens it trained on; `eval_text` in the report names the text and says whether it is held out): the next-token loss of the clean model, with the SAE's reconstruction
# spliced in at the layer, and with the layer zeroed. **loss_recovered** = (CE zeroed − CE spliced) /
# (CE zeroed − CE clean) with the layer zeroed at every position, BOS included: SAELens' `ce_loss_score`,
# the formula InterpScore v0.0.1 was published with, so scores compare with the published ones; clipped
# to [0, 1] (an SAE that hurts more than zeroing the layer scores 0, one that beats the clean model 1; the
# unclipped value stays in the report). **alive** = share of latents that fire at least once.
# **l0_score** = exp(−|ln(L0/80)|): 1 at 80 active latents per token, 0.5 at 40 or 160.
#
# The cell prints the note on the evaluation text, the three losses with the loss recovered, L0, alive
# latents and the variance explained, then the three parts as they enter the score. **What a healthy run
# shows** on the default Gemma Scope SAE: L0 near 82, the average L0 the release is named for
# (`average_l0_82`, Lieberum et al. 2024, measured on its own training text; FineWeb-Edu may shift it a
# little), so `l0_score` about exp(−|ln(82/80)|) = 0.98; `loss_recovered`, i.e. SAELens' `ce_loss_score` about 0.90-0.99,
# the band published SAEs of this size and sparsity score on Gemma-2 residual streams
# (Gemma Scope; SAEBench, Karvonen et al. 2025; notebook 01 cites them), and our own CE loss recovered
# (printed beside it) somewhat below: it zero-ablates the layer at ordinary tokens only, where SAELens
# also zeroes BOS (a far worse baseline, so a larger share "recovered"); `alive` below 1 even for a healthy SAE, by construction:
# a latent that fires less often than once in `EVAL_TOKENS` tokens cannot show up as alive here.
# Broken: L0 in the thousands or near 0, or `loss_recovered` near 0: the SAE does not read this layer.

# %%
eval_texts, eval_text = scores.evaluation_text(VAL_DATASET, P.DATASET, seed=SEED)
print(eval_text["note"])
batches = scores.take_tokens(packing.token_batches(eval_texts, tokenizer, CONTEXT_LEN, BATCH_SIZE), EVAL_TOKENS)
# a release trained on TransformerLens' centred GPT-2 (gpt2-small-res-jb) is measured against the centred residual it read
parts, val = scores.reconstruction_parts(model, tokenizer, sae, layer, batches, forward_batch_size=BATCH_SIZE,
                                         centre_input=releases.centred_input(SAE))
# measured on eval_text (held out from DATASET unless the note above says otherwise)
print(f"CE clean {val['ce_loss_clean']:.3f}, spliced {val['ce_loss_spliced']:.3f}, zeroed "
      f"{val['ce_loss_zero_ablation']:.3f} -> our CE loss recovered {val['ce_loss_recovered']:.3f}; SAELens' "
      f"ce_loss_score (zeroing BOS too) {val['saelens']['ce_loss_score']:.3f}, InterpScore's loss_recovered")
print(f"L0 {val['l0']:.1f}, alive {val['alive']}/{val['d_sae']}, var_expl {val['var_expl']:.3f}")
print("InterpScore parts so far, each in [0, 1]:", {k: round(v, 4) for k, v in parts.items()})

# %% [markdown]
# ## 3. Sparse probing and TPP
#
# For each task: the latents of each text's tokens, averaged over the text (BOS and padding left out);
# a logistic regression (C = 1, class-balanced, standardised latents) trained on the train split and
# scored by **AUROC on the held-out test split**. **sparse_probing** is the mean AUROC over the tasks.
#
# **TPP** (targeted probe perturbation) on the first task: zero the probe's 20 latents with the largest
# |weight| and score the same probe again. tpp = (AUROC − AUROC ablated) / (AUROC − 0.5), clipped to
# [0, 1]: the share of the probe's above-chance skill those 20 latents carry. A concept written in a few
# latents scores near 1; one smeared over hundreds scores near 0. When the probe itself is barely above
# chance (AUROC near 0.5) the ratio is noisy: read tpp together with that AUROC.
#
# Printed per task: the probe's held-out AUROC and accuracy, and its AUROC with the top-20 latents
# zeroed; then `sparse_probing` and `tpp`. Healthy: every task's AUROC well above 0.5 (both concepts are
# written in the residual stream of this layer; step 4 prints what a probe on the residual itself
# reaches, the natural comparison) and the ablated AUROC lower than the clean one. No published range
# exists for these two parts under InterpScore's definitions, and TPP itself is a noisy measure: Chanin
# (2026, arXiv:2605.18229) finds SAEBench's TPP fails its reliability tests at the canonical settings.
# An AUROC near 0.5 on every task means the labels or the pooling are wrong, not that the SAE is bad.

# %%
tasks = {task: scores.task_latents(model, tokenizer, sae, layer, task, N_TRAIN, N_TEST, batch_size=BATCH_SIZE,
                                  max_length=MAX_LEN, seed=SEED) for task in PROBE_TASKS}
results = [scores.probe_task(task, t.X_train, t.y_train, t.X_test, t.y_test, seed=SEED) for task, t in tasks.items()]
for r in results:
    print(f"{r.name}: AUROC {r.auroc:.3f} (accuracy {r.accuracy:.3f}); top-20 latents zeroed -> {r.auroc_ablated:.3f}")
print(f"sparse_probing {scores.sparse_probing(results):.3f}; tpp on {results[0].name}: {results[0].tpp:.3f}")

# %% [markdown]
# ## 4. The same latents, SAEBench's way
#
# SAEBench (`sae-bench` 0.6.0) defines both probing metrics differently; here are its numbers on the
# latents above, so the two can be read side by side.
#
# | | InterpScore v0.0.1 (this notebook) | SAEBench 0.6.0 |
# |---|---|---|
# | sparse probing metric | held-out **AUROC** of one probe on **all** d_sae latents (standardised, L2 C=1, class-balanced) | held-out **accuracy** of probes on the top **k ∈ {1, 2, 5}** latents by \|mean_pos − mean_neg\| (raw latents, L2 C=1, `sae_top_k_test_accuracy`); its all-latent probe is a PyTorch probe |
# | datasets | `PROBE_TASKS`, binary: by default SAEBench's Amazon sentiment (its own binary set) and Bias-in-Bios gender (the attribute its SCR uses), `N_TRAIN` / `N_TEST` | 8 sets (Bias-in-Bios professions ×3, Amazon categories and sentiment, GitHub code language, AG News, Europarl), one-vs-rest per class, 4000 / 1000, 128 tokens |
# | pooling | mean over non-special tokens | mean over tokens except BOS / pad / EOS (the same on these tokenizers) |
# | TPP probe | on the SAE **latents** | on the model's mean-pooled **residual** (PyTorch, L1 penalty) |
# | TPP latents | top 20 by \|standardised probe weight\| | top N by clamp(mean_pos − mean_neg, 0) · (W_dec[f] · w_probe) |
# | TPP ablation | zero those pooled latents | zero them per token, decode, add the SAE error back, re-pool the residual |
# | TPP metric | relative AUROC drop on **one** concept, in [0, 1] | accuracy drop of the class's probe **minus** the mean drop of the other classes' probes (`tpp_threshold_N_total_metric`, N ∈ {2, 5, 10, 20, 50, 100, 500}) |
#
# Zeroing latents per token and re-pooling equals zeroing the pooled latents (pooling is linear): SAEBench's
# ablated residual is the pooled residual minus the pooled ablated latents times their decoder rows, so
# the ablations differ only in what is probed. tests/test_scores.py runs SAEBench's own functions
# (`get_top_k_mean_diff_mask`, `train_sklearn_probe`, `get_effects_per_class_precomputed_acts`,
# `select_top_n_features`, `ablated_precomputed_activations`) on the same latents and checks they give
# these numbers and that identity.
# Below, the residual probe that weighs SAEBench's TPP effects is our logistic regression (SAEBench
# trains a PyTorch probe with an L1 penalty), so a full SAEBench run may pick a few other latents.
#
# Printed: per task, SAEBench's held-out accuracies of probes on the top 1, 2 and 5 latents
# (`sae_top_k_test_accuracy`); how many of SAEBench's top TPP latents are among ours; and the AUROC of a
# probe on the residual stream itself, the ceiling the SAE's probe is read against. Healthy: top-k
# accuracies above 0.5, usually rising with k.

# %%
c = tasks[results[0].name]  # the TPP concept
resid_probe = probes.linear_probe(c.R_train, c.y_train, c.R_test, c.y_test, seed=SEED)
saebench_top = scores.saebench_top_n(scores.saebench_tpp_effects(c.X_train, c.y_train, resid_probe.direction, sae.W_dec))
saebench = {
    "sparse_probing": {name: scores.saebench_top_k_accuracies(t.X_train, t.y_train, t.X_test, t.y_test)
                       for name, t in tasks.items()},
    "tpp_concept_top_features": saebench_top,
    "tpp_top_features_shared_with_ours": len(set(saebench_top) & set(results[0].top_features)),
    "residual_probe_auroc": round(resid_probe.auroc, 6),
}
for t, accs in saebench["sparse_probing"].items():
    print(t, {k: round(v, 3) for k, v in accs.items()})
print(f"TPP latents: {saebench['tpp_top_features_shared_with_ours']} of SAEBench's top {len(saebench_top)} "
      f"are among ours; a probe on the residual itself reaches AUROC {resid_probe.auroc:.3f}")

# %% [markdown]
# ## 5. InterpScore and the report
#
# `interpscore.json` is the InterpScore v0.0.1 format, whose keys are: `version`, `sae_repo`, `model`,
# `layer`, `d_model`, `d_sae`, `k`, `tokens_trained`, `eval_tokens` (the token positions step 2 read, BOS/EOS included),
# `probing_tasks`, `probing_per_task_auc` (step 3's held-out AUROC per task), `tpp_concept` (the first
# task), `tpp_top_features` (its probe's 20 latents), `components` (the five parts in [0, 1]:
# `loss_recovered`, `alive`, `l0_score`, `sparse_probing`, `tpp`, defined in steps 2 and 3), `weights`
# (0.30, 0.15, 0.15, 0.25, 0.15), `interp_score` (= the sum of weight × component) and `timestamp`.
# Beside them: the raw numbers behind each part, their definitions in words (`definitions`), the
# evaluation text (`eval_text`), SAEBench's numbers, and the leaderboard row. The chart,
# `interpscore_parts.png`, shows each part's value (light) and its weighted share of the score (dark),
# with the total as the last bar. The other keys: `tpp_auroc` (the TPP concept's probe AUROC, clean and
# with its 20 latents zeroed), `validation` (step 2's raw numbers: the three losses, our own CE loss
# recovered, SAELens' ce_loss_score unclipped (the loss_recovered part before clipping), L0, alive,
# var_expl, and eval_tokens: the ordinary tokens those are measured over), `eval_text` (`dataset`, `sources`, `held_out`, `note`),
# `saebench` (step 4's numbers), `leaderboard_entry` (version, SAE, model, layer, width, k, the score,
# the time and the five parts: one row of a leaderboard), and `run`, the stamp every JSON report here
# carries (the notebook, model, seed, parameters, the vendored core's hash, when it was written).
#
# No published InterpScore exists for this 16k SAE. The original InterpScore leaderboard
# (openinterp.org/interpscore) lists Gemma Scope's 65k SAE at this layer at 0.871 (loss recovered 0.930,
# 99.4 % alive), numbers it compiled from SAEBench and the Gemma Scope paper rather than measured with
# this notebook's definitions: a reference point, not a target.

# %%
report = scores.interpscore_report(
    parts=parts, task_results=results, sae_repo=sae_repo, model=MODEL_ID, layer=layer,
    d_model=layout.d_model(model), d_sae=sae.cfg.d_sae, k=getattr(sae.cfg, "k", None),
    tokens_trained=TOKENS_TRAINED or scores.tokens_trained_in(sae_repo), eval_tokens=sum(b.numel() for b in batches),
    extra={"validation": {k: val[k] for k in ("ce_loss_clean", "ce_loss_spliced", "ce_loss_zero_ablation",
                                              "ce_loss_recovered", "l0", "alive", "var_expl", "eval_tokens")}
                         | {"saelens_ce_loss_score": val["saelens"]["ce_loss_score"]},
           "eval_text": eval_text, "saebench": saebench})
report["leaderboard_entry"] = scores.leaderboard_entry(report)
run.save_figure(plots.plot_interpscore(report, title=f"InterpScore {report['interp_score']:.3f}: {sae_repo}"),
                "interpscore_parts.png")
run.write_report("interpscore.json", report)
print(f"InterpScore v{scores.VERSION} = {report['interp_score']:.4f}")
for name, w in scores.weighted_parts(report).items():
    print(f"  {name:15s} {report['components'][name]:.4f} x {report['weights'][name]:.2f} = {w:.4f}")
