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
# ## What you'll learn
#
# - How linearly a concept (here IMDB sentiment) is written in the residual stream, layer by layer:
#   a **logistic-regression probe** per layer, scored by AUROC on a held-out split.
# - Why every probe needs a **baseline next to it**: the diff-of-means direction (class means
#   subtracted, no training at all) often matches the probe; when it does, the "probe" found nothing
#   a mean could not. A **shuffled-label control** shows how much a probe can fit noise.
# - How to pick the best layer honestly: on a validation split carved from the training data,
#   never on the test set you report.
#
# This is the supervised baseline that an SAE feature claiming "this latent is sentiment" has to beat.

# %% tags=["parameters"]
MODEL_ID = "google/gemma-2-2b"  # @param {type:"string"}
DATASET = "imdb"  # @param ["imdb", "sst2", "truthful_qa", "synthetic:sentiment", "synthetic:truth"]
N_TRAIN = 1000  # @param {type:"integer"}
N_TEST = 500  # @param {type:"integer"}
LAYERS = "all"  # @param {type:"string"}
# "all", "middle" or comma-separated layer indices such as "4,8,12,16,20"
POOL = "mean"  # @param ["mean", "last"]
MAX_LEN = 256  # @param {type:"integer"}
BATCH_SIZE = 8  # @param {type:"integer"}
PROBE_C = 1.0  # @param {type:"number"}
DEVICE = ""  # @param {type:"string"}
OUTPUT_DIR = "outputs/21_linear_probe"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
import numpy as np

from shared.data import tasks
from shared.model import capture
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, data, readouts
from shared.notebook.run import start
from shared.readouts import probes
from shared.views import plots

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, data, readouts)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. Load the labelled data
#
# `train` and `test` come from disjoint splits, each label-balanced. Real datasets download from
# the Hugging Face hub; `synthetic:<task>` uses the built-in offline corpus. The cell prints each split's
# size and share of label 1 (50 % by construction) and one example with its label.

# %%
train = tasks.load_task_dataset(DATASET, N_TRAIN, split="train", seed=SEED)
test = tasks.load_task_dataset(DATASET, N_TEST, split="test", seed=SEED)
y_train = np.array([it["label"] for it in train])
y_test = np.array([it["label"] for it in test])
print(f"{DATASET}: {len(train)} train ({y_train.mean():.0%} label 1), {len(test)} test ({y_test.mean():.0%} label 1)")
print("example:", train[0]["text"][:200].replace("\n", " "), "->", train[0]["label"])

# %% [markdown]
# ## 2. Load the model
#
# Gated models (Gemma, Llama) need an `HF_TOKEN` secret.

# %%
model, tokenizer = run.load_model()  # prints blocks, widths, dtype, device
layers = P.LAYERS  # checked against the model's config, negatives resolved
print(f"probing layers {layers}")

# %% [markdown]
# ## 3. Residual states per layer
#
# One forward pass per batch captures every layer at once. Each text becomes one vector per layer:
# the mean over its tokens (`POOL = "mean"`, BOS and padding excluded) or its last token. Texts
# longer than `MAX_LEN` tokens are cut.

# %%
kw = dict(batch_size=BATCH_SIZE, pool=POOL, max_length=MAX_LEN, progress=True)
X_train = capture.sequence_states(model, tokenizer, [it["text"] for it in train], layers, **kw)
X_test = capture.sequence_states(model, tokenizer, [it["text"] for it in test], layers, **kw)
print({L: X_train[L].shape for L in layers[:3]}, "...")

# %% [markdown]
# ## 4. Choose the layer on a validation split
#
# A quarter of the training set is held out for validation. The best layer is the one with the
# highest validation AUROC of the probe; the test set stays untouched until step 5.

# %%
fit_idx, val_idx = probes.train_test_indices(y_train, test_frac=0.25, seed=SEED)
val_table = probes.probe_layers({L: (X_train[L][fit_idx], X_train[L][val_idx]) for L in layers},
                                y_train[fit_idx], y_train[val_idx], C=PROBE_C, seed=SEED)
best_layer = max(val_table, key=lambda r: r["lr_auroc"])["layer"]
print(f"best layer by validation AUROC: {best_layer}")

# %% [markdown]
# ## 5. Probe vs diff-of-means on the test set, every layer
#
# Fitted on the full training set, scored on the held-out test set. If the two curves lie on top of
# each other, the concept is a mean shift and the probe's extra capacity buys nothing.
#
# The table and `auroc_by_layer.png` give, per layer, the probe's and diff-of-means' test AUROC (and
# accuracy), chance at 0.5 and the layer chosen on validation marked. **What a healthy run shows** on
# IMDB: both curves far above 0.5 from the first layers on (sentiment is carried largely by the words
# themselves: a probe reads it even from a model's input embeddings, mikkeyboi.github.io/posts/
# 04-h001-depth-profile on Gemma 3 1B), highest around the middle layers, as Di Palma et al. (2025)
# find for binary sentiment, IMDB included, across Llama models. For scale, a
# logistic regression on a frozen 66M-parameter DistilBERT reaches 0.86 accuracy on IMDB
# (luisgasparschroeder.com/blog/linear-probes.html); a 2B model's middle layers should not do worse.
# Every layer near 0.5 means the labels or the pooled states are wrong, not that the model lacks the
# concept.

# %%
table = probes.probe_layers({L: (X_train[L], X_test[L]) for L in layers}, y_train, y_test, C=PROBE_C, seed=SEED)
print(f"{'layer':>5} {'LR AUROC':>9} {'DoM AUROC':>10} {'LR acc':>7} {'DoM acc':>8}")
for r in table:
    mark = "  <- best (validation)" if r["layer"] == best_layer else ""
    print(f"{r['layer']:5d} {r['lr_auroc']:9.3f} {r['dom_auroc']:10.3f} {r['lr_accuracy']:7.3f} {r['dom_accuracy']:8.3f}{mark}")
run.save_figure(plots.plot_layer_auroc(table, best_layer=best_layer, title=f"{DATASET} on {MODEL_ID}: held-out AUROC"),
                 "auroc_by_layer.png")

# %% [markdown]
# ## 6. Controls at the best layer
#
# - **Shuffled labels**: the same probe trained on permuted training labels. Its test AUROC should
#   sit near 0.5; if it does not, the probe is fitting something other than the concept.
# - **Majority class**: the accuracy of always guessing the commoner label.
#
# Healthy, by construction: the shuffled-label control within about 0.05 of 0.5 (two standard errors of
# the AUROC of a probe unrelated to the labels, on 250 + 250 test items), and the majority-class accuracy
# 0.5 (balanced splits). A shuffled control far from 0.5 means the test split shares something with the
# training items beyond their labels (duplicates, or an ordering leak).

# %%
rng = np.random.default_rng(SEED)
shuffled = probes.linear_probe(X_train[best_layer], rng.permutation(y_train), X_test[best_layer], y_test,
                               C=PROBE_C, seed=SEED)
best = next(r for r in table if r["layer"] == best_layer)
majority = float(max(y_test.mean(), 1 - y_test.mean()))
print(f"layer {best_layer}: probe AUROC {best['lr_auroc']:.3f} | diff-of-means {best['dom_auroc']:.3f} | "
      f"shuffled-label control {shuffled.auroc:.3f} | chance 0.5 | majority-class accuracy {majority:.3f}")

# %% [markdown]
# ## 7. Save the report
#
# `linear_probe_report.json`: `model`, `dataset`, `n_train`, `n_test`, `pool`, `max_len`, `layers`, `probe`
# (its method, C, standardised), `per_layer` (step 5's test table: per layer `lr_auroc`, `lr_accuracy`,
# `dom_auroc`, `dom_accuracy`, the split sizes and the width), `validation_per_layer` (step 4's table that
# chose the layer), `best_layer` (the layer, how it was chosen, and its four test numbers), `baselines`
# at that layer (diff-of-means, shuffled-label control, chance 0.5, majority class),
# `probe_minus_diff_of_means_auroc` (what the trained probe adds over the class means: near 0 when the
# concept is a mean shift), `seed`, and `run`, the stamp every JSON report here carries (the notebook,
# model, seed, parameters, the vendored core's hash, when it was written).

# %%
report = {
    "model": MODEL_ID,
    "dataset": DATASET,
    "n_train": len(train),
    "n_test": len(test),
    "pool": POOL,
    "max_len": MAX_LEN,
    "layers": layers,
    "probe": {"method": "logistic_regression", "C": PROBE_C, "standardised": True},
    "per_layer": table,
    "validation_per_layer": val_table,
    "best_layer": {"layer": best_layer, "selected_on": "validation split (25% of train)",
                   "lr_auroc": best["lr_auroc"], "lr_accuracy": best["lr_accuracy"],
                   "dom_auroc": best["dom_auroc"], "dom_accuracy": best["dom_accuracy"]},
    "baselines": {"diff_of_means_auroc": best["dom_auroc"], "shuffled_label_auroc": round(shuffled.auroc, 4),
                  "chance_auroc": 0.5, "majority_class_accuracy": round(majority, 4)},
    "probe_minus_diff_of_means_auroc": round(best["lr_auroc"] - best["dom_auroc"], 4),
    "seed": SEED,
}
run.write_report("linear_probe_report.json", report)
