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
# - How to **read one prompt through an SAE**: the latents at one layer, token by token, and which
#   of them carry the most activation over the whole prompt.
# - How to **test what a feature does**, not only where it fires: add its decoder direction to the
#   residual stream while the model writes, pushed down and up (α = -3, -1, 0, 1, 3), and compare
#   the continuations. α is in units of the feature's own peak on the prompt: α = 1 adds exactly
#   what the feature wrote at its strongest token, α = -1 takes about that away, α = 0 is the
#   plain model.
# - How to package it as **one shareable file**, `trace.json` (the TraceData format), with an HTML
#   heat map, and push both to the Hub when you name a repo.
#
# Feature names come from a `feature_catalog.json` (notebook 04) when you give one in `CATALOG`;
# otherwise features are shown by index. With a catalog each feature also carries how well its label
# was measured: `auroc` (the catalog's `detection_auroc`: how well the feature's activation separates
# the held-out contexts the judge called activating from the others; 1.0 = its calls follow the
# activation, 0.5 = unrelated) and `detection_balanced_accuracy` (0.5 chance, 1.0 perfect).

# %% tags=["parameters"]
MODEL_ID = "google/gemma-2-2b"  # @param {type:"string"}
LAYER = 12  # @param {type:"integer"}
SAE = "gemma-scope-2b-pt-res-canonical"  # @param {type:"string"}
SAE_ID = "layer_12/width_16k/canonical"  # @param {type:"string"}
# SAE: a SAELens release (SAE_ID: the SAE in it), a local export folder or a Hub repo id (SAE_ID: its
# subfolder, "" for the root), or "train-tiny" to train a small SAE here first on DATASET (the smoke run)
# it must read the residual stream after block LAYER (a blocks.L.hook_resid_pre SAE reads block L-1's output:
# LAYER = L - 1); its hook, layer and width are checked in the next cell wherever its files or release say them
PROMPT = "The Eiffel Tower is in Paris, and the Colosseum is in"  # @param {type:"string"}
CATALOG = ""  # @param {type:"string"}
# CATALOG: the path of a feature_catalog.json for this SAE (notebook 04's output) to name the features
N_FEATURES = 10  # @param {type:"integer"}
ALPHAS = [-3, -1, 0, 1, 3]  # @param {type:"raw"}
MAX_NEW_TOKENS = 20  # @param {type:"integer"}
DATASET = "hf:HuggingFaceFW/fineweb-edu:sample-10BT:train:text"  # @param {type:"string"}
# DATASET: only read when SAE = "train-tiny" (the text the small SAE is trained on)
DEVICE = ""  # @param {type:"string"}
HF_REPO = ""  # @param {type:"string"}
HF_PRIVATE = True  # @param {type:"boolean"}
# HF_REPO "<user>/<name>" uploads trace.json and trace.html there with your HF_TOKEN write secret;
# empty: no upload. A new repo is private unless HF_PRIVATE = False.
OUTPUT_DIR = "outputs/05_build_shareable_trace"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
import json

from shared import hub
from shared.features import trace
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
# ## 1. The model, the SAE and (optionally) the catalog
#
# The SAE is read into one class whatever its format and checked against the model's width; a
# catalog must come from an SAE of the same width. With `SAE = "train-tiny"` a small TopK SAE is
# trained here first (20k tokens of `DATASET`) and read back from its export.

# %%
model, tokenizer = run.load_model()
sae, sae_repo = sae_source.sae_for_notebook(P, model, tokenizer, layer, run.out_dir)
catalog = None
if P.CATALOG:
    catalog = json.loads(open(P.CATALOG, encoding="utf-8").read())
    if catalog.get("d_sae") not in (None, sae.cfg.d_sae):
        raise ValueError(f"CATALOG = {CATALOG!r} describes an SAE with d_sae={catalog['d_sae']}, this SAE has "
                         f"{sae.cfg.d_sae}: give the catalog notebook 04 wrote for this SAE")
    print(f"names from {P.CATALOG} ({len(catalog['features'])} labelled features, judge {catalog.get('judge_backend')})")

# %% [markdown]
# ## 2. Trace the prompt
#
# One forward pass reads the residual stream after block `LAYER`; the SAE encodes every token
# (BOS left out: its residual is huge and says nothing about the prompt). The `N_FEATURES` latents
# with the largest activation summed over the prompt are kept, strongest first, and each row is
# divided by its own maximum, so every feature's peak token reads 1. For each feature, greedy
# continuations of the prompt are generated with α x (its peak activation) x (its decoder row)
# added to the residual stream at the layer, at every position.

# %%
traced = trace.trace_prompt(model, tokenizer, sae, layer, PROMPT, top_n=N_FEATURES, catalog=catalog,
                          alphas=P.ALPHAS, max_new_tokens=MAX_NEW_TOKENS, model_id=MODEL_ID, sae_repo=sae_repo,
                          seed=SEED)
print(f"{len(traced['tokens'])} tokens, {len(traced['features'])} features")
for f in traced["features"]:
    auc = "" if f["auroc"] is None else f", label AUROC {f['auroc']:.2f}"  # the judge's calls vs the activation
    print(f"{f['id']:>7}  {f['name'][:50]:<50} peak {f['max_activation']:.2f}, summed {f['summed_activation']:.2f}{auc}")

# %% [markdown]
# Each line above is one feature: its latent id, its name (from `CATALOG`, else "latent <id>"), `peak`
# (its largest activation on one token of the prompt: the unit of α below) and `summed` (its activation
# summed over the prompt, the ranking score), and, with a catalog, how well its label was measured.
#
# **What a healthy run shows** on the default Gemma Scope SAE: `N_FEATURES` (10) features, because far
# more than 10 latents fire on a prompt of a dozen tokens (the release is `average_l0_82`: about 80
# active latents a token on its training text, Lieberum et al. 2024); fewer than `N_FEATURES` means few latents fired at
# all, i.e. the SAE does not read this model's layer. Without `CATALOG` every name is "latent <id>" and
# both label scores are null, by construction.

# %% [markdown]
# ## 3. The heat map and the counterfactuals
#
# Rows are features, columns tokens; the shade is the row-scaled activation. Click a feature to shade
# the prompt by it and read its continuations (the same view as the site's trace viewer): a feature
# whose α = ±3 texts differ from α = 0 in a way its name predicts is doing what its label says; one
# whose texts do not change is read by the model weakly or not at all at this strength.
#
# By construction every row of the heat map reaches exactly 1 at its feature's peak token, and the
# α = 0 continuation is the same text for every feature (the plain model, greedy, no edit): it is the
# model's own completion of the prompt, which names Rome when the model knows the fact. Healthy:
# the α = ±3 texts of at least some features differ from α = 0. Broken: all texts equal at every α for
# every feature (the edit did not reach the model: the wrong layer), or every α ≠ 0 text is the same
# repeated token (the push is far too strong for this model).

# %%
html.show(html.view("trace", traced))
for f in traced["features"][:3]:
    print(f"\n{f['id']} {f['name']}")
    for alpha, text in traced["counterfactuals"][f["id"]].items():
        print(f"  α = {alpha:>3}: {text!r}")

# %% [markdown]
# ## 4. Save and share
#
# `trace.json` is the TraceData file: `prompt`, `model`, `layer` ("L12 residual"), `sae_repo`, `tokens`
# (the prompt's tokens, BOS left out), `features` (per feature: `id` "f<latent>", `name`, `desc`, `auroc`
# and `detection_balanced_accuracy` from the catalog or null, `latent`, `max_activation` = its peak,
# `summed_activation`), `activations` (one row per feature, one value per token, each row divided by its
# own peak so it runs from 0 to 1), `counterfactuals` (`{"f<latent>": {"<α>": continuation}}`),
# `alpha_unit` and `auroc_source` (what α and `auroc` mean, in words) and `run`, the stamp every JSON report
# here carries (the notebook, model, seed, parameters, the vendored core's hash, when it was written).
# `trace.html` is the view above with the trace inside it, self-contained: open it in a browser.
#
# With `HF_REPO` set and an `HF_TOKEN` write secret both go to that repo (created private unless
# `HF_PRIVATE = False`); a failed upload is printed and recorded in `upload.json`, and the files stay in
# `OUTPUT_DIR`. `upload.json`: `hub` (`{}` when `HF_REPO` is empty; else `ok`, `repo`, and on success
# `url`, `files`, `file_urls`, `private`, on failure `error`) and `viewer_url`, the trace's shareable
# address (null without an upload). The last line printed is that address: the site's trace viewer
# opening the uploaded trace.json (it works once the repo is public); without an upload it says where
# to drop the file instead.

# %%
trace_path = run.write_report("trace.json", traced)
page_path = run.out_dir / "trace.html"
page_path.write_text(html.page(html.view("trace", traced), title=f"trace: {PROMPT[:60]}"))
upload = hub.upload_files([trace_path, page_path], hub.hub_repo_id(HF_REPO), private=HF_PRIVATE,
                          path_in_repo="traces")
run.write_report("upload.json", {"hub": upload, "viewer_url": viewer.share(upload, "trace", trace_path)})
