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
# - Train one **acausal crosscoder** (Lindsey et al. 2024): a single sparse dictionary that reads the
#   residual stream at several layers at once (here three) and reconstructs every one of them. All
#   layers come from the same forward pass, which stops after the deepest.
# - Each feature has one decoder vector **per layer**. Its per-layer decoder norm says where it writes:
#   a feature can live in every layer (**persistent**), only in the first (**early-only**), only in
#   the last (**late-only**), only in a middle layer (**middle-only**), or somewhere in between (**mixed**).
# - Read the per-layer reconstruction on held-out tokens, classify every feature by a stated rule,
#   plot the decoder-norm shares and the class counts, and export the crosscoder (safetensors + a
#   cfg.json naming its layers) with a JSON report.
# - Survive a disconnect: it trains through the same trainer as the tier notebooks' SAEs, which
#   checkpoints every `CHECKPOINT_EVERY_TOKENS` tokens and before `CHECKPOINT_EVERY_MINUTES` of training
#   go unsaved (to Google Drive on Colab); re-run the notebook from the top and it resumes where the last
#   checkpoint left off.
#
# Default: Gemma-2-2B at layers 6, 12 and 18, 8192 features, TopK with k = 64, 20M tokens (about 1.7 h on a T4).
# The layers are scaled to a common norm first, so per-layer norms compare across layers.

# %% tags=["parameters"]
MODEL_ID = "google/gemma-2-2b"  # @param {type:"string"}
LAYERS = [6, 12, 18]  # @param {type:"raw"}
# the block indices to read and write (at least 2; 3 or more for early / middle / late)
SPARSITY = "topk"  # @param ["topk", "l1"]
# topk: each token keeps its K largest features; l1: ReLU + L1 weighted by the sum of per-layer decoder norms
D_SAE = 8192  # @param {type:"integer"}
K = 64  # @param {type:"integer"}
L1_COEFFICIENT = 1e-3  # @param {type:"number"}
# only for SPARSITY = "l1": the penalty's weight against the fraction of variance unexplained
DATASET = "hf:HuggingFaceFW/fineweb-edu:sample-10BT:train:text"  # @param {type:"string"}
TOTAL_TOKENS = 20_000_000  # @param {type:"integer"}
CONTEXT_LEN = 512  # @param {type:"integer"}
MODEL_BATCH_SIZE = 8  # @param {type:"integer"}
BATCH_TOKENS = 2048  # @param {type:"integer"}
BLOCK_BATCHES = "auto"  # @param {type:"raw"}
LR = 2e-4  # @param {type:"number"}
LR_MIN = 6e-5  # @param {type:"number"}
WARMUP_STEPS = 1000  # @param {type:"integer"}
VAL_TOKENS = 200_000  # @param {type:"integer"}
DOMINANT_SHARE = 0.7  # @param {type:"number"}
PERSISTENT_SHARE = 0.2  # @param {type:"number"}
# the classification rule's thresholds (step 4)
DEVICE = ""  # @param {type:"string"}
OUTPUT_DIR = "outputs/17_train_crosscoder"  # @param {type:"string"}
CHECKPOINT_DIR = "auto"  # @param {type:"string"}
# "auto": Google Drive on Colab, ./checkpoints/<RUN_NAME> elsewhere; or a folder, or "hf:<user>/<repo>"
CHECKPOINT_EVERY_TOKENS = 2_000_000  # @param {type:"integer"}
CHECKPOINT_EVERY_MINUTES = 10  # @param {type:"number"}
# a checkpoint every CHECKPOINT_EVERY_TOKENS tokens and before this many minutes of training go unsaved
RUN_NAME = "gemma-2-2b-crosscoder-L6-12-18"  # @param {type:"string"}
ALLOW_STREAM_CHANGE = False  # @param {type:"boolean"}
# True: resume even when the re-read data differs from what the checkpoint trained on, or cannot be checked
# (a checkpoint of this notebook's earlier training loop holds no hash of it); recorded in the report's `resume`
SEED = 0  # @param {type:"integer"}

# %%
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, crosscoders, data, training
from shared.notebook.run import start
from shared.recipes import sessions, tier
from shared.saes import crosscoder
from shared.training import config, stream, trainer
from shared.views import plots

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, data, training, crosscoders)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs
xc_cfg = crosscoder.CrosscoderConfig(layers=P.LAYERS, d_sae=D_SAE, architecture=SPARSITY, k=K,
                                     l1_coefficient=L1_COEFFICIENT)  # too few layers, K > D_SAE: one line
crosscoder.check_rule(xc_cfg.n_layers, DOMINANT_SHARE, PERSISTENT_SHARE)

# %% [markdown]
# ## 1. Load the model
#
# Gated models (Gemma, Llama) need an `HF_TOKEN` secret.

# %%
model, tokenizer = run.load_model()  # prints blocks, widths, dtype, device
print(f"crosscoder over layers {list(xc_cfg.layers)} ({', '.join(xc_cfg.hook_names)}), {D_SAE} features, {SPARSITY}")

# %% [markdown]
# ## 2. Train
#
# The crosscoder trains through the SAE trainer of the tier notebooks (`tier.config_from_params` maps
# these parameters to its run, the crosscoder in place of the SAE). Each model forward yields the
# residual stream at every layer of `LAYERS`; the rows are shuffled in blocks and stacked into batches
# `[tokens, layers, d_model]`. A sample of the first block sets each layer's scale (so its mean norm is
# `sqrt(d_model)`) and decoder bias. The learning rate warms up, then decays by a cosine to `LR_MIN`.
# The loss is the squared error summed over layers (over the batch's total variance: the FVU); with
# `SPARSITY = "l1"` plus the decoder-norm-weighted L1. With TopK each feature's decoder is held at unit
# norm over all layers together, so its per-layer norms move freely.
#
# Checkpoints land every `CHECKPOINT_EVERY_TOKENS` tokens and, whatever the speed, before
# `CHECKPOINT_EVERY_MINUTES` of training would go unsaved (at the end of a block of forwards, where a
# checkpoint is exact): the crosscoder, its Adam moments, the position in the data stream (with the rows
# already forwarded but not yet trained), the stream's hash and the random states, saved crash-safe. A
# re-run with the same parameters resumes to the weights an uninterrupted run would reach (exactly on a
# CPU; on a GPU equal up to float round-off). A checkpoint of other parameters is refused, never
# overwritten: change `RUN_NAME` (or `CHECKPOINT_DIR`) to start a new run. A checkpoint written by this
# notebook's earlier training loop resumes too, once `ALLOW_STREAM_CHANGE = True` (it kept no hash of the
# data stream to check the re-read batches against; the training cell says so in one line).
#
# The cell prints the last logged training FVU (the fraction of variance unexplained, all layers
# together) and L0. `training_curves.png`: FVU, L0, dead %, the AuxK loss and the learning rate against
# tokens, read from the metrics log kept beside the checkpoints (whole across resumes).
# Healthy: FVU falls fast, then slowly; L0 flat at `K` (by construction with TopK: each token keeps
# exactly `K` features, fewer only where fewer pre-activations are positive); dead % near 0. An FVU that
# rises or turns NaN is a failed run (try a lower `LR`).

# %%
checkpoint_dir = sessions.resolve_checkpoint_dir(CHECKPOINT_DIR, RUN_NAME)
print(f"checkpoints in {checkpoint_dir}")
cfg = tier.config_from_params(P, checkpoint_dir, sae=xc_cfg)
trained = trainer.train(cfg, model, tokenizer)
xc = trained.saes[config.CROSSCODER_KEY]  # the run's one model; its metrics are named "xc/fvu", "xc/l0", ...
history = trainer.load_metrics(trained.metrics_path)
last = {name: history[-1][f"{config.CROSSCODER_KEY}/{name}"] for name in ("fvu", "l0", "dead_pct")}
print(f"trained on {trained.tokens:,} tokens; last logged: fvu {last['fvu']:.3f}, L0 {last['l0']:.1f}")
run.save_figure(plots.plot_training_curves(history), "training_curves.png")

# %% [markdown]
# ## 3. Reconstruction per layer, on held-out tokens
#
# `var_expl` = 1 − Σ‖x − x̂‖² / Σ‖x − mean x‖² at each layer, in that layer's own units. A crosscoder
# usually reconstructs each layer a little worse than a per-layer SAE of the same width would: it
# spends one dictionary on all of them.
#
# Printed per layer, then over all layers with L0 and the features that fired on the held-out tokens.
# **What a healthy run shows**: `l0` equal to `K` (64) by construction; `var_expl` well above 0 at every
# layer. No published crosscoder of this shape on Gemma-2-2B gives a range; for scale, a per-layer
# TopK SAE of 16,384 latents at k = 40 trained on 10M tokens of layer 12 reports NMSE 0.299, i.e.
# `var_expl` about 0.70 (huggingface.co/dmanningcoe/diffusion-topk-saes). A layer near 0 or below while
# the others are fine means that layer's scale or hook is wrong.

# %%
held_out = stream.validation_batches(cfg, tokenizer, VAL_TOKENS)
evaluation = crosscoder.evaluate(xc, crosscoder.model_batches(model, tokenizer, held_out, xc.cfg.layers))
for row in evaluation["per_layer"]:
    print(f"layer {row['layer']:3d}: var_expl {row['var_expl']:.3f}")
print(f"all layers: var_expl {evaluation['var_expl']:.3f}, L0 {evaluation['l0']:.1f}, "
      f"{evaluation['alive']} of {D_SAE} features fired on {evaluation['tokens']:,} tokens")

# %% [markdown]
# ## 4. Where does each feature live?
#
# For feature i, its share at layer l is r_l = ‖W_dec[i, l]‖ / Σ_l ‖W_dec[i, l]‖. The rule, applied in
# this order: **dead** if it never fired on the held-out tokens; **early-only** / **middle-only** /
# **late-only** if the first / a middle / the last layer holds a share ≥ `DOMINANT_SHARE`;
# **persistent** if every layer's share is ≥ `PERSISTENT_SHARE`; **mixed** otherwise.
#
# Every feature starts with about an even share in each layer (a random decoder), which the rule reads
# as persistent: a feature only moves to another class by training. A short run (the smoke test's
# 20k tokens) leaves nearly all live features "persistent"; its counts say nothing about the model.
#
# The cell prints the rule and the count per class. `crosscoder_features.png`: left, each live feature's
# decoder-norm share per layer (one row per feature, grouped by class); right, the count per class.
# **What a healthy run shows**: no published share under this rule exists. Lindsey et al. (2024), with
# acausal crosscoders over many layers of a larger model, see many features whose decoder norms spread
# over many layers, typically peaking at one and decaying away from it; expect a mix of persistent and
# single-layer classes here, not one class alone. Broken: after 20M tokens nearly every live feature
# still "persistent" with shares near 1/3 each (the decoders did not move from their start), or most
# features dead.

# %%
norms = xc.decoder_norms()
classes = crosscoder.classify_features(norms, evaluation["fired"], dominant=DOMINANT_SHARE,
                                       persistent=PERSISTENT_SHARE)
counts = crosscoder.count_classes(classes)
print(crosscoder.classification_rule(DOMINANT_SHARE, PERSISTENT_SHARE))
print(counts)
run.save_figure(plots.plot_crosscoder_features(norms, classes, list(xc.cfg.layers), crosscoder.CLASSES),
                "crosscoder_features.png")

# %% [markdown]
# ## 5. Export and report
#
# The folder holds `crosscoder.safetensors` (W_enc [layers, d_model, d_sae], W_dec [d_sae, layers,
# d_model], biases and the per-layer input scales) and `cfg.json` (layers, hook names, widths,
# sparsity, scales). `crosscoder.load(folder, layers=...)` reads it back and refuses another layer set.
# `crosscoder_report.json`: `model`, `layers`, `hook_names`, `d_in`, `d_sae`, `sparsity` (the architecture
# and its `k` or L1 coefficient), `tokens_trained`, `scales` (each layer's input scale, set so its mean
# norm is √d_model: √2304 = 48 for Gemma-2-2B, by construction), `per_layer` (`layer`, `hook_name`, `fvu`,
# `var_expl` on the held-out tokens), `var_expl`, `l0` and `alive` over all layers, `eval_tokens`, `rule`
# and `thresholds` (step 4), `class_counts`, `features` (each feature's `class` and its `decoder_norms`,
# one per layer), `export_dir`, `final_train` (the last logged training FVU, L0 and dead %), `resume` (how
# training resumed: the stream's identity, the last replay and whether it hashed as recorded, stream
# changes allowed by `ALLOW_STREAM_CHANGE`, the model dtypes), and `run`, the stamp every JSON report here carries (the notebook, model, seed, parameters, the vendored
# core's hash, when it was written).

# %%
folder = crosscoder.save(xc, run.out_dir / "crosscoder", model_name=MODEL_ID, dataset=DATASET,
                         context_size=CONTEXT_LEN, tokens_trained=trained.tokens)
assert crosscoder.load(folder, layers=xc.cfg.layers).cfg == xc.cfg
report = {
    "model": MODEL_ID,
    "layers": list(xc.cfg.layers),
    "hook_names": list(xc.cfg.hook_names),
    "d_in": xc.cfg.d_in,
    "d_sae": D_SAE,
    "sparsity": {"architecture": SPARSITY, **({"k": K} if SPARSITY == "topk" else {"l1_coefficient": L1_COEFFICIENT})},
    "tokens_trained": trained.tokens,
    "scales": [round(float(s), 6) for s in xc.scales],
    "per_layer": evaluation["per_layer"],
    "var_expl": evaluation["var_expl"],
    "l0": evaluation["l0"],
    "alive": evaluation["alive"],
    "eval_tokens": evaluation["tokens"],
    "rule": crosscoder.classification_rule(DOMINANT_SHARE, PERSISTENT_SHARE),
    "thresholds": {"dominant_share": DOMINANT_SHARE, "persistent_share": PERSISTENT_SHARE},
    "class_counts": counts,
    "features": {"class": classes, "decoder_norms": [[round(float(v), 5) for v in row] for row in norms]},
    "export_dir": str(folder),
    "final_train": {f"{config.CROSSCODER_KEY}/{name}": value for name, value in last.items()},
    "resume": trained.resume,
}
run.write_report("crosscoder_report.json", report)
