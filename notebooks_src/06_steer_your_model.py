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
# - Pick one SAE feature, by id or by searching the labels of a feature catalog (`feature_catalog.json`).
# - **Steer** with it: while the model generates greedily, add `alpha × typical × d` to the residual
#   stream at the SAE's layer, where `d` is what one unit of the feature adds to the SAE's
#   reconstruction (its decoder row) and `typical` is its **mean activation when it fires** on a
#   baseline pass. So `alpha = 1` writes the feature in at its usual strength, `alpha = 0` is the
#   plain model, `alpha < 0` pushes against it.
# - Measure, for each alpha: the feature's activation on the generated tokens (the SAE re-encodes the
#   output's residuals at that layer), the same activation when the unsteered model re-reads the text,
#   and the text's loss under the unsteered model: did it steer, and at what cost in fluency.
#
# Default: Gemma-2-2B with the Gemma Scope residual SAE of layer 12 (16k latents).

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
FEATURE = -1  # @param {type:"raw"}
# a latent id; -1 = the top-ranked latent of the baseline pass; or words to search FEATURE_CATALOG's labels
FEATURE_CATALOG = ""  # @param {type:"string"}
PROMPT = "My favourite thing to do at the weekend is"  # @param {type:"string"}
ALPHAS = [-3, 0, 1, 3]  # @param {type:"raw"}
DATASET = "hf:HuggingFaceFW/fineweb-edu:sample-10BT:train:text"  # @param {type:"string"}
# the baseline text for each feature's typical activation (and the ranking when FEATURE = -1)
BASELINE_TOKENS = 100_000  # @param {type:"integer"}
CONTEXT_LEN = 128  # @param {type:"integer"}
MAX_NEW_TOKENS = 40  # @param {type:"integer"}
DEVICE = ""  # @param {type:"string"}
OUTPUT_DIR = "outputs/06_steer_your_model"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
import textwrap

from shared.data import packing, sources
from shared.features import stats
from shared.model import steer
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, data, features, saes
from shared.notebook.run import start
from shared.recipes import sae_source

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, data, saes, features)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. The model and its SAE
#
# Gated models (Gemma, Llama) need an `HF_TOKEN` secret. The SAE must read the residual stream of
# `LAYER` of this model (its width is checked against the model's).

# %%
model, tokenizer = run.load_model()
layer = P.one_layer()
sae, sae_repo = sae_source.sae_for_notebook(P, model, tokenizer, layer, run.out_dir)

# %% [markdown]
# ## 2. A baseline pass: how strongly does each feature usually fire?
#
# One streaming pass over `BASELINE_TOKENS` tokens of `DATASET` gives each latent's fire count and
# mean activation when fired (`stats.collect`). That mean is the unit of alpha.

# %%
batches = packing.token_batches(sources.text_stream(DATASET), tokenizer, CONTEXT_LEN, 8)
feature_stats = stats.collect(model, tokenizer, sae, layer, batches, BASELINE_TOKENS)
ranked = stats.rank_features(feature_stats, top_n=20)

# %% [markdown]
# ## 3. Pick the feature
#
# An id, the top-ranked latent of the baseline pass (mean when fired × log(1 + fire count), rare and
# near-always-on latents left out), or the first catalog entry whose label holds every word of FEATURE.
# The cell prints the feature's fire rate on the baseline, its typical activation (the unit of alpha)
# and its three strongest baseline contexts, which say what the feature reads before we push it.
# With `FEATURE = -1` the fire rate lies between 5 firings in `BASELINE_TOKENS` and 10 % by
# construction (the ranking leaves out rarer and denser latents).

# %%
if isinstance(FEATURE, str):
    hits = steer.find_features(FEATURE_CATALOG, FEATURE)
    if not hits:
        raise ValueError(f"no label in {FEATURE_CATALOG} holds {FEATURE!r}: try other words or a latent id")
    feature, how = int(hits[0]["id"]), f"catalog search {FEATURE!r}: {hits[0].get('name', '')}"
elif FEATURE == -1:
    if not ranked:
        raise ValueError("no latent fired often enough on the baseline to rank: raise BASELINE_TOKENS")
    feature, how = ranked[0][0], "top-ranked on the baseline pass"
else:
    feature, how = FEATURE, "given id"
typical = steer.typical_activation(feature_stats, feature)  # mean activation when fired
print(f"feature {feature} ({how}): fires on {float(feature_stats.fire_rate[feature]):.2%} of baseline tokens, "
      f"typical activation {typical:.3f}")
for ex in stats.top_examples(feature_stats, feature, tokenizer, n=3):
    print(f"  {ex['activation']:7.3f}  {' '.join(ex['text'].split())[:100]!r}")

# %% [markdown]
# ## 4. Steer, side by side
#
# For each alpha: a greedy continuation with `alpha × typical × d` added at every position, then
# (a) the feature's mean activation on the generated tokens as the steered model writes them,
# (b) the same when the unsteered model re-reads the text, (c) the text's mean next-token loss under
# the unsteered model. Strong steering raises (a) and usually the loss too.
#
# The table has one row per alpha: `act` (a), `reread` (b), `loss` (c, mean next-token loss in nats)
# and the continuation. By construction the alpha = 0 row is the plain model: `act` equals `reread`
# there (no edit), and each of its tokens is the plain model's own most likely choice, so its loss is
# low and the other rows are read against it. **Healthy**: `act` rises with alpha (almost by
# construction: the SAE reads the very residual the edit was added to); the alpha = 3 text turns toward
# what the feature's top contexts above are about, with a higher loss than alpha = 0; at alpha = -3
# `act` drops toward 0 (a latent cannot go below 0, so pushing further shows in the text only).
# **Broken**: every row the same text (the edit does not reach the model: the wrong layer), or the
# alpha = 3 text a single repeated token with a loss of many nats (far too strong for this feature:
# lower the largest alpha). No published range gives the size of these numbers for one Gemma Scope
# feature; they depend on the feature.

# %%
rows = steer.steer_feature(model, tokenizer, sae, layer, feature, PROMPT, ALPHAS, typical=typical,
                           max_new_tokens=MAX_NEW_TOKENS, seed=SEED)
print(f"PROMPT: {PROMPT!r}")
print(f"{'alpha':>6} | {'act':>6} | {'reread':>6} | {'loss':>6} | continuation")
for r in rows:
    text = textwrap.shorten(" ".join(r["text"].split()), 90) or "(empty)"
    print(f"{r['alpha']:6.1f} | {r['feature_activation']:6.3f} | {r['feature_activation_reread']:6.3f} | "
          f"{r['loss']:6.3f} | {text}")

# %% [markdown]
# ## 5. The report
#
# `interventions.json`: `model`, `layer`, `sae`, `d_sae`, `feature` and `chosen_by` (how it was picked),
# `typical_activation` with its definition, `baseline` (the dataset, tokens read and the feature's fire
# rate there), `prompt`, `max_new_tokens`, and `interventions`, one row per alpha: `alpha`, `text`,
# `n_tokens` generated, `feature_activation` (a), `feature_activation_reread` (b) and `loss` (c);
# `counterfactuals` holds the same texts in trace.json's shape
# (`{"f<id>": {alpha: text}}`, notebook 05), so viewers of traces read it too. `steered_up` says whether the largest alpha raised the
# feature's activation on the generated tokens above alpha = 0 (as the steered model writes them);
# `reread_up` says the same of the unsteered model re-reading the text, the stricter test that the
# text itself came to carry the feature (large models usually pass it; tiny ones rarely do).
# Healthy on the default model: `steered_up` true (see above: nearly by construction); `reread_up`
# true when the steered text is about the feature. `steered_up` false means the edit did not move the
# feature the SAE reads, i.e. the SAE and the edit are not at the same layer. The report also holds
# `run`, the stamp every JSON report here carries (the notebook, model, seed, parameters, the vendored
# core's hash, when it was written).

# %%
by_alpha = {r["alpha"]: r for r in rows}
top, base = max(by_alpha), by_alpha.get(0.0)
steered_up = bool(base is not None and by_alpha[top]["feature_activation"] > base["feature_activation"])
reread_up = bool(base is not None and by_alpha[top]["feature_activation_reread"] > base["feature_activation_reread"])
report = {
    "model": MODEL_ID, "layer": layer, "sae": sae_repo, "d_sae": sae.cfg.d_sae,
    "feature": feature, "chosen_by": how, "typical_activation": typical,
    "typical_activation_definition": "mean activation when fired over the baseline pass",
    "baseline": {"dataset": DATASET, "tokens": feature_stats.n_tokens, "fire_rate": float(feature_stats.fire_rate[feature])},
    "prompt": PROMPT, "max_new_tokens": MAX_NEW_TOKENS,
    "interventions": [{k: v for k, v in r.items() if k != "token_ids"} for r in rows],
    "counterfactuals": steer.counterfactuals(feature, rows),
    "steered_up": steered_up, "reread_up": reread_up,
}
run.write_report("interventions.json", report)
print(f"alpha={top:g} raised the feature's activation over alpha=0: {steered_up} as written, "
      f"{reread_up} when the unsteered model re-reads the text")
