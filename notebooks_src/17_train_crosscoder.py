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
# - Survive a disconnect: training checkpoints every `CHECKPOINT_EVERY_TOKENS` (to Google Drive on
#   Colab); re-run the notebook from the top and it resumes where the last checkpoint left off.
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
RUN_NAME = "gemma-2-2b-crosscoder-L6-12-18"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
from shared import crosscoder, notebook, plots, train

P = notebook.check_parameters(globals())  # a bad value stops here with one line, before any download
run = notebook.start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs
cfg = crosscoder.CrosscoderConfig(layers=P.LAYERS, d_sae=D_SAE, architecture=SPARSITY, k=K,
                                  l1_coefficient=L1_COEFFICIENT, seed=SEED)  # too few layers, K > D_SAE: one line
crosscoder.check_rule(cfg.n_layers, DOMINANT_SHARE, PERSISTENT_SHARE)

# %% [markdown]
# ## 1. Load the model
#
# Gated models (Gemma, Llama) need an `HF_TOKEN` secret.

# %%
model, tokenizer = run.load_model()  # prints blocks, widths, dtype, device
print(f"crosscoder over layers {list(cfg.layers)} ({', '.join(cfg.hook_names)}), {D_SAE} features, {SPARSITY}")

# %% [markdown]
# ## 2. Train
#
# Each model forward yields the residual stream at every layer of `LAYERS`; the rows are shuffled in
# blocks and stacked into batches `[tokens, layers, d_model]`. The first batch sets each layer's scale
# (so its mean norm is `sqrt(d_model)`) and decoder bias. The learning rate warms up, then decays by a
# cosine to `LR_MIN`. The loss is the squared error summed over layers (over the batch's total
# variance: the FVU); with `SPARSITY = "l1"` plus the decoder-norm-weighted L1. With TopK each feature's
# decoder is held at unit norm over all layers together, so its per-layer norms move freely.

#
# A disconnect costs at most `CHECKPOINT_EVERY_TOKENS`: the crosscoder, its Adam moments, the
# position in the data stream (with the rows already forwarded but not yet trained) and the random
# states are saved crash-safe, and a re-run with the same parameters resumes to the weights an
# uninterrupted run would reach (exactly on a CPU; on a GPU equal up to float round-off). A checkpoint of other parameters is refused, never overwritten:
# change `RUN_NAME` (or `CHECKPOINT_DIR`) to start a new run.

# %%
checkpoint_dir = train.resolve_checkpoint_dir(CHECKPOINT_DIR, RUN_NAME)
print(f"checkpoints in {checkpoint_dir}")
trained = crosscoder.train_crosscoder(
    model, tokenizer, cfg, total_tokens=TOTAL_TOKENS, dataset=P.DATASET, context_len=CONTEXT_LEN,
    batch_tokens=BATCH_TOKENS, model_batch_size=MODEL_BATCH_SIZE, block_batches=P.BLOCK_BATCHES, lr=LR,
    lr_min=LR_MIN, warmup_steps=WARMUP_STEPS, seed=SEED, checkpoint_dir=checkpoint_dir,
    checkpoint_every_tokens=CHECKPOINT_EVERY_TOKENS)
xc = trained.crosscoder
print(f"trained on {trained.tokens:,} tokens; last logged: fvu {trained.history[-1]['xc/fvu']:.3f}, "
      f"L0 {trained.history[-1]['xc/l0']:.1f}")
run.save_figure(plots.plot_training_curves(trained.history), "training_curves.png")

# %% [markdown]
# ## 3. Reconstruction per layer, on held-out tokens
#
# `var_expl` = 1 − Σ‖x − x̂‖² / Σ‖x − mean x‖² at each layer, in that layer's own units. A crosscoder
# usually reconstructs each layer a little worse than a per-layer SAE of the same width would: it
# spends one dictionary on all of them.

# %%
held_out = train.validation_batches(trained.run, tokenizer, VAL_TOKENS)
evaluation = crosscoder.evaluate(xc, crosscoder.model_batches(model, tokenizer, held_out, cfg.layers))
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

# %%
norms = xc.decoder_norms()
classes = crosscoder.classify_features(norms, evaluation["fired"], dominant=DOMINANT_SHARE,
                                       persistent=PERSISTENT_SHARE)
counts = crosscoder.count_classes(classes)
print(crosscoder.classification_rule(DOMINANT_SHARE, PERSISTENT_SHARE))
print(counts)
run.save_figure(plots.plot_crosscoder_features(norms, classes, list(cfg.layers), crosscoder.CLASSES),
                "crosscoder_features.png")

# %% [markdown]
# ## 5. Export and report
#
# The folder holds `crosscoder.safetensors` (W_enc [layers, d_model, d_sae], W_dec [d_sae, layers,
# d_model], biases and the per-layer input scales) and `cfg.json` (layers, hook names, widths,
# sparsity, scales). `crosscoder.load(folder, layers=...)` reads it back and refuses another layer set.
# `crosscoder_report.json` holds the per-layer reconstruction, the class counts, the rule, and each
# feature's class and decoder norms.

# %%
folder = crosscoder.save(xc, run.out_dir / "crosscoder", model_name=MODEL_ID, dataset=DATASET,
                         context_size=CONTEXT_LEN, tokens_trained=trained.tokens)
assert crosscoder.load(folder, layers=cfg.layers).cfg == xc.cfg
report = {
    "model": MODEL_ID,
    "layers": list(cfg.layers),
    "hook_names": list(cfg.hook_names),
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
    "final_train": {k: trained.history[-1][k] for k in ("xc/fvu", "xc/l0", "xc/dead_pct")},
}
run.write_report("crosscoder_report.json", report)
