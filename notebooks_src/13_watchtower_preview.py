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
# - Keep a **watch-list** of SAE features (ids you choose, or the top-ranked ones of a baseline pass).
# - **Calibrate** on what gets flagged: a prompt is flagged when any of its tokens runs any watched
#   feature over its threshold, so the thresholds are set on each baseline document's per-feature
#   maximum, such that only 1 - `PERCENTILE`/100 of baseline documents are flagged ("flagged" means
#   "unusual for a document like the baseline's", not "one unusual token among thousands").
# - **Stream** prompts (a list, a text file or a dataset) through the model, forward only, and flag the
#   prompts and the token positions where a watched feature exceeds its threshold.
# - Use the same monitor as a **hook during `generate`**: flags arrive token by token as the model writes.
#
# Outputs: `watchtower_report.json`, `watchtower_flags.csv` (one row per flag) and a plot.

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
WATCH_FEATURES = []  # @param {type:"raw"}
# latent ids to watch; [] = the TOP_K top-ranked latents of the baseline pass
TOP_K = 8  # @param {type:"integer"}
PERCENTILE = 99.5  # @param {type:"number"}
DATASET = "hf:HuggingFaceFW/fineweb-edu:sample-10BT:train:text"  # @param {type:"string"}
# the baseline corpus: thresholds come from it
BASELINE_TOKENS = 200_000  # @param {type:"integer"}
# the baseline's documents, CONTEXT_LEN tokens each: 4/5 set the thresholds, 1/5 is held out to check them
PROMPTS = [
    "The recipe calls for two cups of flour and a pinch of salt.",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Le chat est assis sur le tapis.",
    "BREAKING: markets fall sharply after the announcement.",
]  # @param {type:"raw"}
# a list of prompts, or a source: a .txt/.jsonl file, "synthetic", or "hf:<path>[:<config>[:<split>[:<field>]]]"
N_PROMPTS = 100  # @param {type:"integer"}
PROMPT = "Write a short story about a robot who"  # @param {type:"string"}
MAX_NEW_TOKENS = 30  # @param {type:"integer"}
CONTEXT_LEN = 128  # @param {type:"integer"}
DEVICE = ""  # @param {type:"string"}
OUTPUT_DIR = "outputs/13_watchtower_preview"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
from itertools import islice

import matplotlib.pyplot as plt

from shared.data import packing, sources
from shared.features import stats, watch
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, data, features, saes
from shared.notebook.run import start
from shared.recipes import sae_source

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, data, saes, features)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. The model and its SAE

# %%
model, tokenizer = run.load_model()
layer = P.one_layer()
sae, sae_repo = sae_source.sae_for_notebook(P, model, tokenizer, layer, run.out_dir)

# %% [markdown]
# ## 2. The watch-list
#
# Given ids, or the `TOP_K` latents that rank highest (mean when fired × log(1 + fire count), rare and
# near-always-on ones left out) on a streaming pass over the calibration documents (the first four fifths
# of the baseline, up to `BASELINE_TOKENS` tokens): the held-out fifth that checks the thresholds in step 3
# plays no part in choosing what to watch.

# %%
n_docs = max(5, BASELINE_TOKENS // CONTEXT_LEN)
baseline = list(islice(sources.text_stream(DATASET), n_docs))
calibration, held_out = baseline[:len(baseline) * 4 // 5], baseline[len(baseline) * 4 // 5:]
if WATCH_FEATURES:
    watched = list(WATCH_FEATURES)
else:
    batches = packing.token_batches(calibration, tokenizer, CONTEXT_LEN, 8)
    feature_stats = stats.collect(model, tokenizer, sae, layer, batches, BASELINE_TOKENS)
    watched = [j for j, _ in stats.rank_features(feature_stats, top_n=TOP_K)]
if not watched:
    raise ValueError("no latent to watch: list WATCH_FEATURES or raise BASELINE_TOKENS")
print(f"watching {len(watched)} features: {watched}")

# %% [markdown]
# ## 3. Calibrate on the baseline, and check on documents it did not see
#
# The baseline is cut into documents of at most `CONTEXT_LEN` tokens (BOS and other special tokens
# left out). For each document and watched feature we take the feature's maximum over the document:
# the document is flagged exactly when one of these maxima is over its feature's threshold. Every
# feature's threshold sits at the same quantile of its own per-document maxima, the quantile at which
# 1 - `PERCENTILE`/100 of the calibration documents are flagged (with one feature: the `PERCENTILE`-th
# percentile of its per-document maximum; a feature that never fires there gets 0, so any firing flags).
# The last fifth of the baseline documents is held out and scanned: its flagged share is the measured
# false-alarm rate per prompt, which should be near 1 - `PERCENTILE`/100. Per token the rate is far
# lower (a flagged document has one or a few flagged tokens). Prompts much shorter than `CONTEXT_LEN`
# tokens are flagged less often than that, longer ones more often.
#
# The cell prints each watched feature's threshold (in the SAE's activation units) and the held-out
# check. **What a healthy run shows**, by construction: with the defaults the baseline is 1,562
# documents (`BASELINE_TOKENS` / `CONTEXT_LEN`), 1,249 to calibrate and 313 held out, and the held-out
# documents are drawn from the same stream as the calibration ones, so each is flagged with probability
# about 1 − `PERCENTILE`/100 = 0.5 %: 1.6 of 313 expected, and 0 to 4 documents (0-1.3 %) in 98 % of
# runs by the binomial law (a little more spread, since the thresholds themselves are estimated from
# about 6 calibration documents above them). Several times that rate means the held-out text is not
# like the calibration text. Healthy too: `token_flag_rate` far below `prompt_flag_rate`. A feature with threshold 0
# never fired on the calibration documents, so any firing flags.

# %%
thresholds = watch.calibrate(model, tokenizer, sae, layer, calibration, watched, percentile=PERCENTILE,
                             max_length=CONTEXT_LEN)
for f, t in thresholds.items():
    print(f"  feature {f:>6}: threshold {t:.4f}")
check = watch.Watchtower(model, tokenizer, sae, layer, thresholds, max_length=CONTEXT_LEN)
check.scan(held_out)
held_out_rates = check.summary()
print(f"held-out baseline: {held_out_rates['n_flagged']} of {held_out_rates['n_prompts']} documents flagged "
      f"({held_out_rates['prompt_flag_rate']:.2%} per prompt; target {1 - PERCENTILE / 100:.2%}), "
      f"{held_out_rates['token_flag_rate']:.3%} of their tokens")
tower = watch.Watchtower(model, tokenizer, sae, layer, thresholds, max_length=CONTEXT_LEN)

# %% [markdown]
# ## 4. Stream the prompts
#
# One forward per prompt (no generation); each flag names the prompt, the token position, the token,
# the feature and by how much it exceeded its threshold. Each printed line is one prompt: `FLAG` when any
# of its tokens ran a watched feature over its threshold, then up to six flags as `'token'@position:feature`.
# The four default prompts are a dozen or a few dozen tokens each, far shorter than the 128-token
# baseline documents, so by the argument above each is flagged less often than 0.5 % of the time
# *if* it is like the baseline text (educational web pages); the code and French prompts are not, and
# a watched feature that reads code or French can flag them. Which of them flag depends on the
# watch-list; no published number says which.

# %%
results = tower.scan(PROMPTS, limit=N_PROMPTS)
for r in results:
    mark = "FLAG" if r["flagged"] else "    "
    tokens = ", ".join(f"{fl['token']!r}@{fl['position']}:{fl['feature']}" for fl in r["flags"][:6])
    print(f"{mark} {' '.join(r['prompt'].split())[:70]!r} {tokens}")

# %% [markdown]
# ## 5. The same monitor during `generate`
#
# `tower.during_generate()` hooks the layer's residual stream (shared/hooks.read_residuals), so each
# forward of `model.generate` is encoded and flagged as it runs, token by token. The printed flags use
# the same `'token'@position:feature` form, positions counted over the prompt and the generated text
# together; the same thresholds apply as in step 4.

# %%
enc = tokenizer(PROMPT, return_tensors="pt").to(next(model.parameters()).device)
pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
with tower.during_generate() as live:
    out = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=pad_id)
live_flags = live.flags(out[0])
generated = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
print(f"generated: {' '.join(generated.split())!r}")
print(f"{len(live_flags)} flags while generating: "
      + ", ".join(f"{fl['token']!r}@{fl['position']}:{fl['feature']}" for fl in live_flags[:12]))

# %% [markdown]
# ## 6. Report and plot
#
# `watchtower_flags.png` shows, per watched feature, how many prompt tokens it flagged (step 4's
# prompts). The report keeps the two rates apart: `prompt_flag_rate` (share of prompts with any flag)
# and `token_flag_rate` (share of their kept tokens flagged for any feature), for the prompts and for
# the held-out baseline documents.
#
# `watchtower_report.json`: `model`, `layer`, `sae`, `watched` (the latent ids), `percentile`;
# `calibration` (the baseline dataset, how many documents of how many tokens, what was calibrated on,
# and `target_prompt_flag_rate` = 1 − `PERCENTILE`/100); `held_out_baseline` (its documents, flagged
# documents and `prompt_flag_rate`, tokens, flagged tokens and `token_flag_rate`: the measured false-alarm
# rates of step 3); `thresholds` per feature; `summary` over the prompts (`n_prompts`, `n_flagged`,
# `prompt_flag_rate`, `n_tokens`, `n_flagged_tokens`, `token_flag_rate`, `flags_per_feature`); `prompts`,
# one entry per prompt (`index`, `prompt`, `flagged`, `n_tokens` kept, `max_activation` per feature, and
# its `flags`: `position`, `token`, `feature`, `activation`, `threshold`); `generate` (the prompt,
# the generated text and its live flags); and `run`, the stamp every JSON report here carries (the notebook,
# model, seed, parameters, the vendored core's hash, when it was written). `watchtower_flags.csv` has one
# row per prompt flag: `prompt_index`, `position`, `token`, `feature`, `activation`, `threshold`, `prompt`.

# %%
summary = tower.summary()
print(f"prompts: {summary['n_flagged']} of {summary['n_prompts']} flagged ({summary['prompt_flag_rate']:.1%} per "
      f"prompt), {summary['n_flagged_tokens']} of {summary['n_tokens']} tokens ({summary['token_flag_rate']:.2%} per token)")
fig, ax = plt.subplots(figsize=(7, 3))
ax.bar([str(f) for f in watched], [summary["flags_per_feature"][str(f)] for f in watched])
ax.set_xlabel("feature"), ax.set_ylabel("flagged tokens"), ax.set_title(f"flags over {len(results)} prompts")
run.save_figure(fig, "watchtower_flags.png")
payload = tower.write_report(None, run.out_dir / "watchtower_flags.csv")
run.write_report("watchtower_report.json", {
    "model": MODEL_ID, "layer": layer, "sae": sae_repo, "watched": watched, "percentile": PERCENTILE,
    "calibration": {"dataset": DATASET, "documents": len(calibration), "document_tokens": CONTEXT_LEN,
                    "quantity": "each document's per-feature maximum; one common quantile level over features",
                    "target_prompt_flag_rate": 1 - PERCENTILE / 100},
    "held_out_baseline": {"documents": len(held_out), **{k: held_out_rates[k] for k in (
        "n_flagged", "prompt_flag_rate", "n_tokens", "n_flagged_tokens", "token_flag_rate")}},
    "thresholds": payload["thresholds"],
    "summary": summary, "prompts": results,
    "generate": {"prompt": PROMPT, "text": generated, "flags": live_flags},
})
