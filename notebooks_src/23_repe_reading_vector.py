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
# - **Representation engineering** with LAT (Linear Artificial Tomography, Zou et al. 2023): write
#   pairs of prompts that differ only in a concept (honest vs dishonest persona), take the difference
#   of their hidden states at the last token, and use the first principal component of those
#   differences as the concept's **reading vector**.
# - How to check it honestly: reading accuracy (does the positive prompt project higher than its
#   negative twin? 0.5 is chance) per layer on **validation pairs** to choose the layer, and on
#   **test pairs** that neither the fit nor the choice saw for the number reported.
# - Two uses of the vector: **monitoring** (score new prompts by their projection) and **steering**
#   (add ±α times the vector to the residual stream and compare generations side by side), with the
#   steering **measured**: does the concept's reading of the generated text rise with α?
#
# The contrast pairs are the notebook's parameter: swap them for sycophancy, refusal or confidence
# pairs, or leave `CONTRAST_PAIRS` empty to use the built-in generator for `CONCEPT`.

# %% tags=["parameters"]
MODEL_ID = "google/gemma-2-2b"  # @param {type:"string"}
CONCEPT = "honesty"  # @param ["honesty", "sycophancy", "refusal", "confidence", "sentiment", "truth"]
# (positive, negative) prompt pairs: the same scenario with the concept on / off.
# Leave empty ([]) to generate N_PAIRS pairs for CONCEPT with synthetic.contrast_pairs.
CONTRAST_PAIRS = [
    ("Pretend you are an honest person making statements about the world. The Earth orbits the Sun.",
     "Pretend you are a dishonest person making statements about the world. The Earth orbits the Sun."),
    ("Pretend you are an honest person making statements about the world. Water boils at 100 degrees Celsius at sea level.",
     "Pretend you are a dishonest person making statements about the world. Water boils at 100 degrees Celsius at sea level."),
    ("Pretend you are an honest person making statements about the world. Paris is the capital of France.",
     "Pretend you are a dishonest person making statements about the world. Paris is the capital of France."),
    ("Pretend you are an honest person making statements about the world. Spiders have eight legs.",
     "Pretend you are a dishonest person making statements about the world. Spiders have eight legs."),
    ("Pretend you are an honest person making statements about the world. The Pacific is the largest ocean.",
     "Pretend you are a dishonest person making statements about the world. The Pacific is the largest ocean."),
    ("Pretend you are an honest person making statements about the world. A year has twelve months.",
     "Pretend you are a dishonest person making statements about the world. A year has twelve months."),
    ("Pretend you are an honest person making statements about the world. Ice is frozen water.",
     "Pretend you are a dishonest person making statements about the world. Ice is frozen water."),
    ("Pretend you are an honest person making statements about the world. The Moon has no air to breathe.",
     "Pretend you are a dishonest person making statements about the world. The Moon has no air to breathe."),
    ("Pretend you are an honest person making statements about the world. Plants need light to grow.",
     "Pretend you are a dishonest person making statements about the world. Plants need light to grow."),
    ("Pretend you are an honest person making statements about the world. Mount Everest is the tallest mountain on Earth.",
     "Pretend you are a dishonest person making statements about the world. Mount Everest is the tallest mountain on Earth."),
    ("Pretend you are an honest person making statements about the world. Whales are mammals.",
     "Pretend you are a dishonest person making statements about the world. Whales are mammals."),
    ("Pretend you are an honest person making statements about the world. Tokyo is in Japan.",
     "Pretend you are a dishonest person making statements about the world. Tokyo is in Japan."),
    ("Pretend you are an honest person making statements about the world. Two plus two equals four.",
     "Pretend you are a dishonest person making statements about the world. Two plus two equals four."),
    ("Pretend you are an honest person making statements about the world. Humans need sleep to stay healthy.",
     "Pretend you are a dishonest person making statements about the world. Humans need sleep to stay healthy."),
    ("Pretend you are an honest person making statements about the world. The heart pumps blood around the body.",
     "Pretend you are a dishonest person making statements about the world. The heart pumps blood around the body."),
    ("Pretend you are an honest person making statements about the world. Gold is a metal.",
     "Pretend you are a dishonest person making statements about the world. Gold is a metal."),
    ("Pretend you are an honest person making statements about the world. The Sahara is a desert.",
     "Pretend you are a dishonest person making statements about the world. The Sahara is a desert."),
    ("Pretend you are an honest person making statements about the world. Sound travels slower than light.",
     "Pretend you are a dishonest person making statements about the world. Sound travels slower than light."),
    ("Pretend you are an honest person making statements about the world. Bees make honey.",
     "Pretend you are a dishonest person making statements about the world. Bees make honey."),
    ("Pretend you are an honest person making statements about the world. A triangle has three sides.",
     "Pretend you are a dishonest person making statements about the world. A triangle has three sides."),
    ("Pretend you are an honest person making statements about the world. The Amazon river flows through Brazil.",
     "Pretend you are a dishonest person making statements about the world. The Amazon river flows through Brazil."),
    ("Pretend you are an honest person making statements about the world. Penguins cannot fly.",
     "Pretend you are a dishonest person making statements about the world. Penguins cannot fly."),
    ("Pretend you are an honest person making statements about the world. Shakespeare wrote Hamlet.",
     "Pretend you are a dishonest person making statements about the world. Shakespeare wrote Hamlet."),
    ("Pretend you are an honest person making statements about the world. Iron rusts when exposed to water and air.",
     "Pretend you are a dishonest person making statements about the world. Iron rusts when exposed to water and air."),
    ("When my manager asked whether I had finished the report, I told the truth and said",
     "When my manager asked whether I had finished the report, I lied and said"),
    ("When the teacher asked who broke the window, the boy answered honestly:",
     "When the teacher asked who broke the window, the boy answered with a lie:"),
    ("The used-car seller was honest with the buyer about the car's history and said",
     "The used-car seller deceived the buyer about the car's history and said"),
    ("As a truthful assistant, I will tell you exactly what I know about vaccines.",
     "As a deceptive assistant, I will mislead you about what I know about vaccines."),
    ("Asked by the customs officer what was in her bag, she answered truthfully:",
     "Asked by the customs officer what was in her bag, she answered falsely:"),
    ("The witness swore to tell the truth and described the accident accurately:",
     "The witness decided to lie and described the accident misleadingly:"),
    ("When his friend asked if he had read the book, he admitted honestly that",
     "When his friend asked if he had read the book, he pretended dishonestly that"),
    ("The scientist reported the failed experiment honestly in her paper:",
     "The scientist hid the failed experiment and faked the results in her paper:"),
]  # @param {type:"raw"}
N_PAIRS = 0  # @param {type:"integer"}
# 0 = every pair above (or 32 generated pairs when CONTRAST_PAIRS is empty); otherwise use the first N_PAIRS
TEST_FRAC = 0.25  # @param {type:"number"}
VAL_FRAC = 0.25  # @param {type:"number"}
# shares of the pairs held out: VAL_FRAC chooses the layer, TEST_FRAC measures it; the rest fits the vectors
LAYERS = "all"  # @param {type:"string"}
MONITOR_PROMPTS = [
    "I always tell my customers the real price, even when it loses me the sale.",
    "I told the insurance company the damage was there before the storm, although it wasn't.",
    "She admitted to her parents that she had failed the exam.",
    "He said he was stuck in traffic, but he had actually overslept.",
    "The report states the measured values exactly as we recorded them.",
    "We told investors the product was finished when it had not been built yet.",
]  # @param {type:"raw"}
STEER_PROMPTS = [
    "Q: Did you eat the last slice of cake?\nA:",
    "My boss asked me why the project is late. I told her",
]  # @param {type:"raw"}
ALPHAS = [-4, -2, 0, 2, 4]  # @param {type:"raw"}
NORM_FRACTION = 0.1  # @param {type:"number"}
# one unit of alpha = this fraction of the layer's typical last-token residual norm
MAX_NEW_TOKENS = 40  # @param {type:"integer"}
BATCH_SIZE = 16  # @param {type:"integer"}
DEVICE = ""  # @param {type:"string"}
OUTPUT_DIR = "outputs/23_repe_reading_vector"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
import textwrap

import numpy as np

from shared.data import synthetic
from shared.model import capture, steer
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, readouts
from shared.notebook.run import start
from shared.readouts import probes
from shared.views import plots

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, readouts)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. The contrast pairs
#
# Each pair must differ only in the concept; everything else (the fact, the scenario) is shared,
# so the difference of hidden states isolates the concept.

# %%
pairs = [tuple(p) for p in CONTRAST_PAIRS] or synthetic.contrast_pairs(CONCEPT, N_PAIRS or 32, seed=SEED)
pairs = pairs[:N_PAIRS] if N_PAIRS else pairs
if len(pairs) < 8 or any(len(p) != 2 for p in pairs):
    raise ValueError(f"need at least 8 (positive, negative) pairs, got {len(pairs)}; add pairs or raise N_PAIRS")
positives, negatives = [p[0] for p in pairs], [p[1] for p in pairs]
print(f"{len(pairs)} pairs for {CONCEPT!r}; e.g.\n  + {positives[0]}\n  - {negatives[0]}")

# %% [markdown]
# ## 2. Load the model and read the last-token states
#
# Gated models (Gemma, Llama) need an `HF_TOKEN` secret. One forward pass per batch captures all
# layers; only the last token of each prompt is kept.

# %%
model, tokenizer = run.load_model()  # prints blocks, widths, dtype, device
layers = P.LAYERS  # checked against the model's config, negatives resolved
pos = capture.last_token_states(model, tokenizer, positives, layers, batch_size=BATCH_SIZE)
neg = capture.last_token_states(model, tokenizer, negatives, layers, batch_size=BATCH_SIZE)
print(f"states for layers {layers}")

# %% [markdown]
# ## 3. Reading vector per layer: fitted on training pairs, chosen on validation, scored on test
#
# The pairs are split three ways: `VAL_FRAC` for validation, `TEST_FRAC` for test, the rest for
# training. Per layer, on the training pairs: differences h(+) - h(-), each randomly flipped, first
# principal component, sign set so most training differences project positive. Reading accuracy =
# share of pairs whose positive prompt projects higher. The best layer is the one with the highest
# **validation** accuracy; its **test** accuracy is the number to report (choosing the layer on the
# test pairs would report the luckiest of many layers, not what the vector does on new pairs).
#
# The table gives per layer the training, validation and test reading accuracy;
# `reading_accuracy_by_layer.png`
# draws the test and training curves, chance at 0.5, the chosen layer marked. By construction, with the
# 32 default pairs: 16 fit the vectors, 8 choose the layer and 8 test it, so validation and test
# accuracies move in steps of 1/8 (one pair is 0.125), and training accuracy is at least 0.5 at every
# layer (the vector's sign is set so most training pairs read positive). **What a healthy run shows**:
# test accuracy well above 0.5 at the chosen layer; 24 of the 32 pairs differ only in "honest" vs
# "dishonest", so much of what the vector reads is that contrast, and high accuracy from early layers
# on is expected, not a discovery. Zou et al. (2023) measured their honesty vector in other ways (on
# TruthfulQA, and as a lie detector on generated text); no published reading accuracy exists for these
# pairs on Gemma-2-2B. Broken: test accuracy near 0.5 at every layer (the pairs carry
# no consistent difference at the last token, or the wrong token is read).

# %%
lat = probes.lat_layers(pos, neg, test_frac=TEST_FRAC, val_frac=VAL_FRAC, seed=SEED)
best = lat.best_layer
direction = lat.directions[best]
print(f"{'layer':>5} {'train acc':>9} {'val acc':>8} {'test acc':>8}")
for r in lat.table:
    mark = "  <- best (validation)" if r["layer"] == best else ""
    print(f"{r['layer']:5d} {r['train_accuracy']:9.3f} {r['val_accuracy']:8.3f} {r['test_accuracy']:8.3f}{mark}")
print(f"layer {best}: held-out test accuracy {lat.test_accuracy:.3f} on {len(lat.split['test'])} pairs (0.5 = chance)")
run.save_figure(plots.plot_reading_accuracy(lat.table, best_layer=best, title=f"{CONCEPT} reading vector, {MODEL_ID}"),
                 "reading_accuracy_by_layer.png")

# %% [markdown]
# ## 4. Monitor new prompts
#
# Each new prompt's last-token state at the best layer is projected on the reading vector, centred
# at the mean projection of all the pair prompts: positive = reads as the concept (here: honest).
# Only the test accuracy above says how far to trust these numbers. The cell prints the prompts sorted
# by score. The default list alternates honest (1st, 3rd, 5th) and dishonest (2nd, 4th, 6th) statements
# by design: a vector that reads honesty ranks the three honest ones above the three dishonest ones.

# %%
center = float(probes.monitor_scores(np.concatenate([pos[best], neg[best]]), direction).mean())
mon_states = capture.last_token_states(model, tokenizer, MONITOR_PROMPTS, [best], batch_size=BATCH_SIZE)[best]
scores = probes.monitor_scores(mon_states, direction, center=center)
monitor = [{"prompt": p, "score": round(float(s), 4)} for p, s in zip(MONITOR_PROMPTS, scores)]
print(f"{'score':>8}  prompt (layer {best}, positive = {CONCEPT})")
for row in sorted(monitor, key=lambda r: -r["score"]):
    print(f"{row['score']:8.2f}  {row['prompt']}")

# %% [markdown]
# ## 5. Steer along the vector
#
# At the best layer, `alpha * NORM_FRACTION * typical_norm * v` is added to the residual stream at
# every position while the model generates greedily; alpha = 0 is the unsteered model. The last
# column measures whether the steering took: the **unsteered** model re-reads the prompt and its
# continuation, and its residual at the layer over the generated tokens is projected on v (mean; the
# concept's reading of the text itself). If the text came to carry the concept, it rises with alpha.
#
# Per prompt the cell prints one row per alpha: the continuation and its reading; then for how many
# prompts the reading rose from the lowest alpha to the highest. By construction alpha = 0 is the plain
# model's greedy continuation. Healthy: the reading rises with alpha for both prompts, and the texts at
# alpha = +4 and −4 lean honest and dishonest. No published number gives their size on this model.
# Broken: every alpha gives the same text (the push is too small: raise `NORM_FRACTION`), or the
# extreme alphas give repeated tokens (too large: lower it).

# %%
scale = NORM_FRACTION * lat.norms[best]
steered, steered_scores = {}, {}
for prompt in STEER_PROMPTS:
    rows = steer.steer_and_read(model, tokenizer, prompt, best, direction, ALPHAS, scale=scale,
                                max_new_tokens=MAX_NEW_TOKENS, seed=SEED)
    steered[prompt] = {f"{r['alpha']:g}": r["text"] for r in rows}
    steered_scores[prompt] = {f"{r['alpha']:g}": round(r["reading"], 4) for r in rows}
    print("\n" + "=" * 100 + f"\nPROMPT: {prompt!r}  (layer {best}, 1 alpha = {scale:.2f} in residual norm)")
    print(f"{'alpha':>6} | {'continuation':<80} | reading")
    for r in rows:
        lines = textwrap.wrap(" ".join(r["text"].split()), 80) or [""]
        print(f"{r['alpha']:6.1f} | {lines[0]:<80} | {r['reading']:.3f}")
        for line in lines[1:3]:
            print(f"{'':6} | {line:<80} |")
lo, hi = min(ALPHAS), max(ALPHAS)
rises = {p: bool(r[f"{hi:g}"] > r[f"{lo:g}"]) for p, r in steered_scores.items()}
print(f"\nthe reading of the text rose from alpha={lo:g} to alpha={hi:g} for {sum(rises.values())} of {len(rises)} "
      "prompts (re-read by the unsteered model)")

# %% [markdown]
# ## 6. Save the report
#
# `repe_report.json`: the per-layer table (train, validation and test accuracy), the best layer (chosen
# on validation) with its test accuracy, its vector's scale, monitor scores, and the steered texts with
# their readings (keyed by prompt, then alpha) and whether each reading rose from the lowest alpha to
# the highest. Its keys: `model`, `concept`, `n_pairs`, `pairs_source`, `pairs_example`, `method`,
# `test_frac`, `val_frac`, `per_layer` (per layer the three accuracies and the split sizes), `best_layer`,
# `best_layer_selected_on`, `best_layer_test_accuracy`, `split` (which pairs went where), `typical_norm`
# (the layer's typical last-token residual norm), `monitor_center` and `monitor` (step 4), `steering`
# (`layer`, `alphas`, `norm_fraction`, `scale` = one alpha in residual units, `max_new_tokens`, `texts`,
# `readings`, `reading_definition`, `reading_rose`), `seed`, and `run`, the stamp every JSON report here
# carries (the notebook, model, seed, parameters, the vendored core's hash, when it was written).

# %%
report = {
    "model": MODEL_ID,
    "concept": CONCEPT,
    "n_pairs": len(pairs),
    "pairs_source": "parameter CONTRAST_PAIRS" if CONTRAST_PAIRS else "synthetic.contrast_pairs",
    "pairs_example": list(pairs[0]),
    "method": "LAT: PCA of randomly flipped last-token differences, sign by majority",
    "test_frac": TEST_FRAC,
    "val_frac": VAL_FRAC,
    "per_layer": lat.table,
    "best_layer": best,
    "best_layer_selected_on": "validation pairs (highest val_accuracy)",
    "best_layer_test_accuracy": lat.test_accuracy,  # on test pairs neither the fit nor the choice saw
    "split": {k: v.tolist() for k, v in lat.split.items()},
    "typical_norm": round(lat.norms[best], 4),
    "monitor_center": round(center, 4),
    "monitor": monitor,
    "steering": {"layer": best, "alphas": list(ALPHAS), "norm_fraction": NORM_FRACTION, "scale": round(scale, 4),
                 "max_new_tokens": MAX_NEW_TOKENS, "texts": steered, "readings": steered_scores,
                 "reading_definition": "mean projection on the unit vector of the unsteered model's residual at the "
                                       "layer over the generated tokens",
                 "reading_rose": rises},
    "seed": SEED,
}
run.write_report("repe_report.json", report)
