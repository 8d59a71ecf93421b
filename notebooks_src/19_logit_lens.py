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
# - What the model "would say" if it stopped after each layer: the **logit lens** decodes the
#   residual stream after every block with the model's own final norm and unembedding.
# - How to do it right: the last layer must reproduce the model's logits exactly (no double final
#   norm: transformers' last hidden state is already normalised), and Gemma-2's final-logit
#   soft-cap (`tanh(x / 30) * 30`) is applied like the model does.
# - How to read a token x layer heat map of top-1 predictions, and KL(final || layer) per layer:
#   where in depth the answer appears.
#
# Plain PyTorch hooks, no TransformerLens; works for Gemma, Llama, Qwen (incl. hybrid Qwen3.5),
# Mistral, Phi, GPT-2 and multimodal wrappers whose decoder sits under `language_model`.

# %% tags=["parameters"]
MODEL_ID = "google/gemma-2-2b"  # @param {type:"string"}
PROMPT = "The Eiffel Tower is located in the city of"  # @param {type:"string"}
TOP_K = 3  # @param {type:"integer"}
MAX_TOKENS_SHOWN = 24  # @param {type:"integer"}
DEVICE = ""  # @param {type:"string"}
OUTPUT_DIR = "outputs/19_logit_lens"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
from shared.model import layout
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, readouts
from shared.notebook.run import start
from shared.readouts import lens
from shared.views import plots

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, readouts)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. Load the model
#
# Gemma-2 is gated on the Hugging Face Hub: accept its licence and set an `HF_TOKEN` secret
# (Colab: the key icon; Kaggle: Add-ons > Secrets). Any causal LM id works, e.g.
# `meta-llama/Llama-3.2-1B`, `Qwen/Qwen3-1.7B`, `gpt2`.

# %%
model, tokenizer = run.load_model()  # prints blocks, widths, final norm, soft-cap, dtype, device

# %% [markdown]
# ## 2. Run the lens
#
# One forward pass with a hook on every block. Layer L is the residual stream *output* of block L;
# each is decoded as `softcap(unembed(final_norm(h_L)))`. The table holds, per layer and input
# position, the top-k next-token guesses with their probabilities and the KL divergence from the
# model's final distribution.
#
# The cell prints the KL at the last layer, then for the prompt's last position each layer's KL and its
# top-k guesses with their probabilities. **What a healthy run shows**: the last layer's KL is 0 up to
# float round-off, by construction (the last block's output decoded this way is the model's own logits;
# the cell stops if it is not), and its top guess is the model's own next token (for this prompt, Paris
# when the model knows the fact). Earlier layers' KL is larger: nostalgebraist (2020) found GPT-2's
# layers gradually refining a guess under this lens, and Belrose et al. (2023) found the logit lens
# brittle on other model families, its early-layer readings far from the final distribution; no
# published per-layer curve exists for Gemma-2-2B on this prompt. Broken: a last-layer KL that is not
# 0 (a final norm applied twice, or a soft-cap missing or doubled).

# %%
table = lens.lens_table(model, tokenizer, PROMPT, topk=TOP_K)
last_kl = max(table["kl"][-1])
print(f"{len(table['tokens'])} tokens; KL at the last layer = {last_kl:.2e} (the lens reproduces the model)")
assert last_kl < 1e-3, "the last-layer lens should equal the model's own logits"

print(f"\nNext-token guesses after {table['tokens'][-1]!r}, layer by layer:")
for block, words, probs, kl in zip(table["layers"], table["top_tokens"], table["top_probs"], table["kl"]):
    guesses = ", ".join(f"{w!r} {p:.2f}" for w, p in zip(words[-1], probs[-1]))
    print(f"  layer {block:3d}  KL {kl[-1]:7.3f}  {guesses}")

# %% [markdown]
# ## 3. Heat map: top-1 prediction per token and layer
#
# Each cell is the lens's most likely next token at that position (written in the cell) coloured
# by its probability. Early layers often echo the input token; the answer tends to crystallise in
# the last third of the network. `logit_lens_heatmap.png` is this map (up to `MAX_TOKENS_SHOWN` positions).

# %%
run.save_figure(plots.plot_lens_heatmap(table, value="prob", max_tokens=MAX_TOKENS_SHOWN), "logit_lens_heatmap.png")

# %% [markdown]
# ## 4. KL to the final distribution per layer
#
# KL(final || layer) in nats, averaged over the prompt's positions but the BOS (whose prediction reads no
# prompt; `kl_mean_positions` says how many were averaged): how far each layer's reading
# is from what the model finally predicts. It reaches 0 at the last layer by construction; a
# steep drop marks the layers where the prediction is formed. `logit_lens_kl.png` draws this mean per
# layer; `logit_lens_kl_heatmap.png` the KL of every position and layer, the last layer's row 0.

# %%
run.save_figure(plots.plot_kl_per_layer(table), "logit_lens_kl.png")
run.save_figure(plots.plot_lens_heatmap(table, value="kl", max_tokens=MAX_TOKENS_SHOWN), "logit_lens_kl_heatmap.png")

# %% [markdown]
# ## 5. Save the report
#
# `logit_lens.json`: `model`, `n_layers` and `d_model` (26 and 2304 for Gemma-2-2B, from its config),
# `final_logit_softcap` (30.0 for Gemma-2, null for models without one), `layer_convention` (layer L is
# block L's output), `top_k`, `tokens` (the prompt's), `layers`, `top_tokens`, `top_ids` and `top_probs`
# (per layer, position and rank), `kl` (per layer and position, nats), `kl_mean` (per layer, over the positions holding no special token)
# and `kl_mean_positions` (how many), `final_top`
# (the model's own top-k per position), `lens` ("logit"), `seed`, and `run`, the stamp every JSON report
# here carries (the notebook, model, seed, parameters, the vendored core's hash, when it was written).
# Notebook 20 fits a **tuned lens**,
# which reads the early layers far better than this raw logit lens.

# %%
report = {
    "model": MODEL_ID,
    "n_layers": layout.n_layers(model),
    "d_model": layout.d_model(model),
    "final_logit_softcap": layout.final_logit_softcap(model),
    "layer_convention": "layer L = residual output of decoder block L (hidden_states[L+1])",
    "top_k": TOP_K,
    **table,
    "seed": SEED,
}
run.write_report("logit_lens.json", report)
