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
# - **CCS** (Contrast-Consistent Search, Burns et al. 2022): find a direction *without labels* by
#   asking the model each question twice, answered "Yes" and answered "No", and training a probe whose
#   two probabilities are consistent (p(Yes) ≈ 1 - p(No)) and confident.
# - The details that matter: per-side normalisation (so the probe cannot just read which answer word
#   was appended), best of 10 restarts by lowest loss, accuracy credited as max(acc, 1 - acc) because
#   an unsupervised direction has no sign.
# - How to report it **honestly**: beside diff-of-means, the top principal component of the contrast
#   differences, a random-direction floor and the supervised logistic-regression ceiling. Later work
#   (Farquhar et al. 2023, Emmons 2023) found CCS rarely beats these; the verdict below says in plain
#   words whether it does here.

# %% tags=["parameters"]
MODEL_ID = "google/gemma-2-2b"  # @param {type:"string"}
DATASET = "imdb"  # @param ["imdb", "sst2", "truthful_qa", "synthetic:sentiment", "synthetic:truth"]
N_TRAIN = 500  # @param {type:"integer"}
N_TEST = 500  # @param {type:"integer"}
MAX_TEXT_TOKENS = 300  # @param {type:"integer"}
# long reviews are cut to this many tokens before the question, so the answer token always survives
LAYER = "middle"  # @param {type:"string"}
# "middle" or a layer index such as "12" (negative counts from the end)
SWEEP_LAYERS = ""  # @param {type:"string"}
# optional extra layers to compare, e.g. "4,8,12,16,20" or "all"; empty = no sweep
N_RESTARTS = 10  # @param {type:"integer"}
N_EPOCHS = 1000  # @param {type:"integer"}
BATCH_SIZE = 8  # @param {type:"integer"}
DEVICE = ""  # @param {type:"string"}
OUTPUT_DIR = "outputs/22_ccs_probe"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
from shared.data import tasks, templates
from shared.model import capture, layout
from shared.notebook.parameters import check_parameters
from shared.notebook.run import start
from shared.readouts import probes
from shared.views import plots

P = check_parameters(globals())  # a bad value stops here with one line, before any download
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. Load the model and the labelled data
#
# `imdb` / `sst2` ask "Is the sentiment of this review positive?"; `truthful_qa` (one true and one
# false answer per question, split by question) asks "Is this statement true?". Labels are used
# only to score and by the supervised baselines, never by CCS itself.

# %%
model, tokenizer = run.load_model()  # prints blocks, widths, dtype, device
n_layers = layout.n_layers(model)
layer, sweep = P.LAYER[0], P.SWEEP_LAYERS  # checked against the model's config, negatives resolved
task = probes.ccs_task_of(DATASET)
train = tasks.load_task_dataset(DATASET, N_TRAIN, split="train", seed=SEED)
test = tasks.load_task_dataset(DATASET, N_TEST, split="test", seed=SEED)
print(f"CCS at layer {layer} of {n_layers}; sweep {sweep or 'off'}")
print(f"{DATASET} ({task} question): {len(train)} train / {len(test)} test items")

# %% [markdown]
# ## 2. Contrast pairs
#
# Every item becomes two prompts that differ only in the appended answer.

# %%
pos_train, neg_train, y_train = probes.ccs_prompt_pairs(train, task, tokenizer, MAX_TEXT_TOKENS)
pos_test, neg_test, y_test = probes.ccs_prompt_pairs(test, task, tokenizer, MAX_TEXT_TOKENS)
print(pos_train[0][-300:], "\n---\n", neg_train[0][-60:], "\n(label", y_train[0], ")")

# %% [markdown]
# ## 3. Hidden states at the last token
#
# The residual stream at the answer token, for both sides, at the CCS layer and the sweep layers,
# all captured in the same forward passes.

# %%
layers = sorted({layer, *sweep})
states = {name: capture.last_token_states(model, tokenizer, prompts, layers, batch_size=BATCH_SIZE)
          for name, prompts in [("pos_train", pos_train), ("neg_train", neg_train),
                                ("pos_test", pos_test), ("neg_test", neg_test)]}


ccs_cfg = probes.CCSConfig(n_restarts=N_RESTARTS, n_epochs=N_EPOCHS, seed=SEED)


def run_ccs(L):
    return probes.ccs_with_baselines(states["pos_train"][L], states["neg_train"][L], y_train,
                                     states["pos_test"][L], states["neg_test"][L], y_test, ccs_cfg)


# %% [markdown]
# ## 4. CCS beside its baselines
#
# All five are scored on the held-out pairs. Hatched bars are sign-free (max(acc, 1 - acc)).

# %%
ccs = run_ccs(layer)
print(f"{'method':>15} {'accuracy':>9} {'AUROC':>7}  note")
for name, r in ccs.results.items():
    print(f"{name:>15} {r.accuracy:9.3f} {r.auroc:7.3f}  {r.note}")
run.save_figure(plots.plot_ccs_methods(ccs, title=f"CCS on {DATASET}, {MODEL_ID} layer {layer}"), "ccs_methods.png")

# %% [markdown]
# ## 5. The verdict

# %%
print("=" * 100)
print("VERDICT:", ccs.verdict)
print("=" * 100)

# %% [markdown]
# ## 6. Optional: the same comparison across layers
#
# Set `SWEEP_LAYERS` to see whether the verdict depends on the layer.

# %%
sweep_rows = []
for L in sweep:
    rep = ccs if L == layer else run_ccs(L)
    sweep_rows.append({"layer": L, **{k: round(r.accuracy, 4) for k, r in rep.results.items()}})
    print(f"layer {L:3d}: " + "  ".join(f"{k} {v:.3f}" for k, v in sweep_rows[-1].items() if k != "layer"))
if sweep_rows:
    run.save_figure(plots.plot_ccs_sweep(sweep_rows, title=f"CCS and baselines across layers ({DATASET})"),
                    "ccs_sweep.png")

# %% [markdown]
# ## 7. Save the report
#
# `ccs_report.json`: every method's held-out accuracy and AUROC, the verdict, and the sweep.

# %%
report = {
    "model": MODEL_ID,
    "dataset": DATASET,
    "question": templates.CCS_TEMPLATES[task],
    "answers": [" Yes", " No"],
    "layer": layer,
    "n_train": len(y_train),
    "n_test": len(y_test),
    "max_text_tokens": MAX_TEXT_TOKENS,
    "ccs": {"n_restarts": N_RESTARTS, "n_epochs": N_EPOCHS, "normalisation": "per side: mean and std",
            "selection": "lowest training loss"},
    **ccs.to_dict(),
    "sweep": sweep_rows,
    "seed": SEED,
}
run.write_report("ccs_report.json", report)
