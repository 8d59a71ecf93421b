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
# - How to go from an SAE's weights to a **catalog of what its latents mean**: stream a corpus
#   through the model and the SAE, keep per-latent statistics (how often each fires, how strongly,
#   its histogram and its top activating contexts) in memory that does not grow with the corpus.
# - How to **rank** latents worth reading: mean activation when fired times log(1 + fire count),
#   leaving out dead latents and those on for more than 10% of tokens.
# - How an LLM **judge labels** a latent and how the label is **measured**: it names the latent from
#   its top contexts (explain), then picks the activating ones out of held-out text it never saw
#   (detect): contexts where the latent fires, drawn across its activation range, mixed with contexts
#   where its activation was measured to be 0. `detection_score` is the balanced accuracy of that pick
#   (0.5 chance, 1.0 perfect); `detection_auroc` says how well the judge's picks follow the latent's
#   activation. `fuzzing_score` asks whether the label names the right *token*: the judge sees those
#   activating contexts with tokens marked, in half the ones where the latent fires and in the other
#   half as many other tokens, and says which marks fit the label (balanced accuracy, 0.5 chance, 1.0
#   perfect). With no API key an offline labeller names latents from their top tokens and is scored
#   the same way; it says so in every label.
#
# The default SAE is a published one, Gemma Scope's 16k-latent residual SAE at layer 12 of
# Gemma-2-2B; `SAE` also takes your own export (a local folder, or the Hub repo a tier notebook
# pushed, with `SAE_ID` its subfolder such as `blocks.12.hook_resid_post`).

# %% tags=["parameters"]
MODEL_ID = "google/gemma-2-2b"  # @param {type:"string"}
LAYER = 12  # @param {type:"integer"}
SAE = "gemma-scope-2b-pt-res-canonical"  # @param {type:"string"}
SAE_ID = "layer_12/width_16k/canonical"  # @param {type:"string"}
# SAE: a SAELens release (SAE_ID: the SAE in it), a local export folder or a Hub repo id (SAE_ID: its
# subfolder, "" for the root), or "train-tiny" to train a small SAE here first (a quick try; the smoke run)
# it must read the residual stream after block LAYER (a blocks.L.hook_resid_pre SAE reads block L-1's output:
# LAYER = L - 1); its hook, layer and width are checked in the next cell wherever its files or release say them
DATASET = "hf:HuggingFaceFW/fineweb-edu:sample-10BT:train:text"  # @param {type:"string"}
N_TOKENS = 2_000_000  # @param {type:"integer"}
CONTEXT_LEN = 128  # @param {type:"integer"}
MODEL_BATCH_SIZE = 16  # @param {type:"integer"}
N_FEATURES = 50  # @param {type:"integer"}
DETECTION_TOKENS = 200_000  # @param {type:"integer"}
# held-out tokens (the text after N_TOKENS) the judge's detection test draws its contexts from
JUDGE = "auto"  # @param ["auto", "anthropic", "openai", "offline"]
ANTHROPIC_MODEL = "claude-haiku-4-5"  # @param {type:"string"}
OPENAI_MODEL = "gpt-4.1-mini"  # @param {type:"string"}
# JUDGE "auto": Claude when the ANTHROPIC_API_KEY secret is set, else GPT with OPENAI_API_KEY, else the
# offline labeller (no key, no cost, a heuristic: it says so in each label)
DEVICE = ""  # @param {type:"string"}
HF_REPO = ""  # @param {type:"string"}
HF_PRIVATE = True  # @param {type:"boolean"}
# HF_REPO "<user>/<name>" uploads feature_catalog.json and feature_cards.html there with your HF_TOKEN
# write secret; empty: no upload. A new repo is private unless HF_PRIVATE = False.
OUTPUT_DIR = "outputs/04_discover_features"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
import itertools
import math

from shared import hub
from shared.data import packing, sources
from shared.features import judge, stats
from shared.model import layout
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, data, features, saes
from shared.notebook.run import start
from shared.recipes import sae_source
from shared.views import html, viewer

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, data, saes, features)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs
layer = P.one_layer()  # checked against the model's config, negatives resolved

# %% [markdown]
# ## 1. The model and the SAE
#
# Gated models (Gemma, Llama) need an `HF_TOKEN` secret. The SAE is read into one class whatever
# its format (SAELens / our export, Gemma Scope's `params.npz`, EleutherAI sparsify) and checked
# against the model's width. With `SAE = "train-tiny"` a small TopK SAE is trained here first, on
# 20k tokens of `DATASET`, and exported like any tier notebook's SAE, then read back the same way.

# %%
model, tokenizer = run.load_model()
sae, sae_repo = sae_source.sae_for_notebook(P, model, tokenizer, layer, run.out_dir)

# %% [markdown]
# ## 2. Stream activations and keep statistics
#
# Text is packed into contexts of `CONTEXT_LEN` tokens, each starting as the model's own inputs do
# (its BOS, or its end-of-text token where the tokenizer adds none, as Qwen's). The residual
# stream after block `LAYER` goes through the SAE; BOS, padding and special tokens are left out
# (BOS's residual is huge and would top every list). For each latent we keep its fire count, the
# sum and max of its activation, a log-binned histogram, and its 20 strongest contexts (the 17
# tokens around each peak, one per sequence).

# %%
n_batches = math.ceil(N_TOKENS / (MODEL_BATCH_SIZE * (CONTEXT_LEN - 1))) + 1
stream = packing.token_batches(sources.text_stream(DATASET), tokenizer, CONTEXT_LEN, MODEL_BATCH_SIZE)
batches = list(itertools.islice(stream, n_batches))
feature_stats = stats.collect(model, tokenizer, sae, layer, batches, N_TOKENS, progress=True)
alive = int((feature_stats.fire_count > 0).sum())
l0 = float(feature_stats.fire_count.sum()) / max(feature_stats.n_tokens, 1)
print(f"{feature_stats.n_tokens:,} tokens analysed: {alive:,} of {sae.cfg.d_sae:,} latents fired at least once, "
      f"mean L0 {l0:.1f}")

# %% [markdown]
# Healthy: the mean L0 is near the SAE's own (the default Gemma Scope SAE is the release's
# `average_l0_82`, so about 80 on web text), and most latents fire at least once in 2M tokens. An L0
# of 0 or of thousands means the SAE does not read this model's layer.

# %% [markdown]
# ## 3. Rank the latents
#
# Score = mean activation when fired x log(1 + fire count): strong and not too rare. Latents that
# fired fewer than 5 times or on more than 10% of tokens are left out (dead, or dense "always on"
# directions that rarely mean one thing).

# %%
ranked = stats.rank_features(feature_stats, top_n=N_FEATURES)
print(f"top {len(ranked)} latents:", ", ".join(f"{j} ({s:.2f})" for j, s in ranked[:10]), "...")

# %% [markdown]
# ## 4. Label them with a judge, and measure each label
#
# For every latent the judge sees its 10 strongest top contexts (activating tokens marked) and names
# it. The detection test then reads `DETECTION_TOKENS` tokens of held-out text (the stream after the
# analysed tokens), cut into 17-token windows, with the top latents' activations measured on every
# token in its full context. For each latent the judge gets 10 windows where it fires, one from each
# tenth of their activation ranking (strong to weak, as Delphi samples them), and 10 windows where its
# activation is 0 on every token, shuffled, and says which activate. No context shows a special token
# (BOS, EOS), and no text appears twice or both in the explanation and the test. A latent with too
# few held-out windows of either kind gets no score (`held_out` in the catalog counts them). Then the
# fuzzing test (Delphi's): the same held-out activating windows, each with some tokens marked, half at
# the tokens where the latent fires (activation at least 0.3 of that window's peak) and half at as
# many other tokens of the window drawn at random; the judge says in which the marks fit its label.
# `fuzzing_score` is the balanced accuracy of that call (0.5 chance, 1.0 perfect; `fuzzing_items`
# counts the windows of each kind): a label can pick the right contexts yet name the wrong token, and
# only this test sees it. One more request per latent. A cost
# estimate is printed before any request; completions are cached in `OUTPUT_DIR/judge_cache`, so a
# re-run costs nothing. Keys come from secrets (Colab: the key icon; Kaggle: Add-ons > Secrets) and
# are never printed.

# %%
backend = judge.pick_backend(None if JUDGE == "auto" else JUDGE, anthropic_model=ANTHROPIC_MODEL,
                             openai_model=OPENAI_MODEL)
if isinstance(backend, judge.OfflineLabeller):
    print("No ANTHROPIC_API_KEY or OPENAI_API_KEY secret (or JUDGE = 'offline'): labelling with the offline "
          "heuristic (top tokens), not an LLM. Set a key for real labels.")
held_out = itertools.islice(stream, math.ceil(DETECTION_TOKENS / (MODEL_BATCH_SIZE * (CONTEXT_LEN - 1))))
contexts = stats.detection_contexts(model, tokenizer, sae, layer, held_out, [j for j, _ in ranked], DETECTION_TOKENS)
print(f"detection test: {len(contexts.ids):,} held-out windows of {contexts.ids.shape[1]} tokens")
evidence = stats.judge_evidence(feature_stats, ranked, tokenizer, contexts, seed=SEED)
labels = judge.Judge(backend, cache_dir=run.out_dir / "judge_cache", seed=SEED).label_features(evidence)
by_id = {e["id"]: e for e in labels["features"]}

# %% [markdown]
# ## 5. The catalog and the cards
#
# Each latent also gets `nearest`: the 5 latents whose decoder directions are closest to its own by
# cosine, among all of the SAE's latents. The cards are the site's catalog viewer with the catalog
# inside it: search the labels, and follow a neighbour to its card.
#
# `feature_catalog.json` keeps the originals' fields (`score` is the ranking score of step 3) and
# adds `detection_score` (step 4's balanced accuracy: 0.5 chance, 1.0 perfect), `detection_auroc`
# (the AUROC of the latent's peak activation in each scored context separating the ones the judge
# called activating from the others: 1.0 when its picks follow the activation, 0.5 unrelated),
# `held_out` (how many contexts of each kind scored it), `fuzzing_score` and `fuzzing_items` (step 4's
# fuzzing test: 0.5 chance, 1.0 perfect), the `detection_protocol` (how those contexts
# were drawn), the fire count, the max activation, the histogram and the logit effects (the tokens
# each latent's decoder direction pushes up and down through the final norm's weight and the unembedding,
# as SAELens and Neuronpedia compute them); `judge_failed` counts
# the features whose labelling failed (their names are blank) and `judge_error` says why.
# `feature_cards.html` is one card per latent, self-contained: open it in a browser. Healthy: every
# feature named (`judge_failed` 0) and detection and fuzzing scores above 0.5, the chance level; 0.8 or
# more is a label that picks out the feature's contexts (detection) or tokens (fuzzing) reliably.

# %%
effects = stats.logit_effects(model, sae, [j for j, _ in ranked], k=10, tokenizer=tokenizer)
entries = stats.catalog_entries(feature_stats, ranked, tokenizer, labels=by_id, effects=effects)
nearest = stats.decoder_neighbours(sae.W_dec, [j for j, _ in ranked], n=5)
for e in entries:
    e["detection_score"], e["detection_auroc"] = by_id[e["id"]]["score"], by_id[e["id"]]["auroc"]
    e["held_out"] = by_id[e["id"]]["held_out"]
    e["fuzzing_score"], e["fuzzing_items"] = by_id[e["id"]]["fuzzing_score"], by_id[e["id"]]["fuzzing_items"]
    e["nearest"] = nearest[e["id"]]
catalog = {
    "sae_repo": sae_repo, "base_model": MODEL_ID, "layer": layer, "d_model": layout.d_model(model),
    "d_sae": sae.cfg.d_sae, "k": getattr(sae.cfg, "k", None), "context_tokens_analyzed": feature_stats.n_tokens,
    "judge_backend": labels["judge_backend"], "judge_model": labels["judge_model"],
    "judge_failed": labels["judge_failed"], "judge_error": labels["judge_error"],
    "detection_metric": labels["score_metric"], "detection_auroc_metric": labels["auroc_metric"],
    "fuzzing_metric": labels["fuzzing_metric"],
    "detection_protocol": {**stats.DETECTION_PROTOCOL, "held_out_tokens": DETECTION_TOKENS,
                           "windows": len(contexts.ids)},
    "ranking": "mean_when_fired * log1p(fire_count)",
    "mean_l0": round(l0, 3), "dataset": DATASET, "features": entries,
}
catalog_path = run.write_report("feature_catalog.json", catalog)
cards_path = run.out_dir / "feature_cards.html"
cards_path.write_text(html.page(html.view("catalog", catalog), title=f"{sae_repo}: top features"))
print(f"wrote {cards_path}")
for e in entries[:5]:
    score = "n/a" if e["detection_score"] is None else f"{e['detection_score']:.2f}"
    auc = "n/a" if e["detection_auroc"] is None else f"{e['detection_auroc']:.2f}"
    fuzz = "n/a" if e["fuzzing_score"] is None else f"{e['fuzzing_score']:.2f}"
    print(f"#{e['rank']:>3} latent {e['id']:>6}: {e['name'][:60]:<60} detection {score} (balanced accuracy), "
          f"AUROC {auc}, fuzzing {fuzz}")
html.show(html.view("catalog", {**catalog, "features": entries[:3]}))

# %% [markdown]
# ## 6. Upload (only when you name a repo)
#
# With `HF_REPO` set and an `HF_TOKEN` write secret, the catalog and the cards go to that repo
# (created private unless `HF_PRIVATE = False`). A failed upload (no network, token rejected, no
# write access) is printed and recorded in `upload.json`; the files stay in `OUTPUT_DIR`. The last
# line is the catalog's shareable address: the site's catalog viewer opening the uploaded file (it
# works once the repo is public); without an upload it says where to drop the file instead.

# %%
upload = hub.upload_files([catalog_path, cards_path], hub.hub_repo_id(HF_REPO), private=HF_PRIVATE,
                          path_in_repo=f"feature_catalog/{layer}")
run.write_report("upload.json", {"hub": upload, "viewer_url": viewer.share(upload, "catalog", catalog_path)})

# %% [markdown]
# ## 7. In one line
#
# How the labelling went: every feature labelled, or how many the judge failed on and why; then the
# mean detection and fuzzing scores (0.5 chance, 1.0 perfect).

# %%
print(judge.summary(labels))
