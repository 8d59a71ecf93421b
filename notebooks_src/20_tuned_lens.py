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
# - The **tuned lens** (Belrose et al. 2023): one small affine "translator" per layer,
#   `h + A h + b`, trained so that decoding the translated residual with the model's own final norm
#   and unembedding matches the model's final distribution (KL loss). It starts at zero, i.e. equal
#   to the logit lens, and can only learn to read each layer better.
# - How to load a pretrained lens from the public `AlignmentResearch/tuned-lens` space when one
#   exists for your model (GPT-2, Pythia, OPT, GPT-NeoX, ...) and fit a fresh one otherwise.
# - An honest comparison on held-out text: per-layer KL to the final distribution and top-1
#   agreement with the final prediction, tuned lens next to the logit lens baseline.
#
# The lens is saved in the public tuned-lens format (`config.json` + `params.pt`, with the
# package's `unembed_hash` of the model's unembedding, so its model-match check runs), so the
# `tuned-lens` package can load it too, for the architectures that package knows: its loader
# (`tuned_lens.model_surgery.get_final_norm`) takes GPT-2, GPT-Neo, GPT-J, GPT-NeoX, OPT, BLOOM
# and Llama in the 0.2.0 release (GitHub main adds Mistral and Gemma-1), and rejects Gemma-2,
# Qwen3, Qwen3.5 and Phi-3 with `NotImplementedError`. This notebook's own code fits, loads and
# reads lenses for every architecture in the catalog.

# %% tags=["parameters"]
MODEL_ID = "gpt2"  # @param {type:"string"}
TRY_PRETRAINED = True  # @param {type:"boolean"}
DATASET = "hf:HuggingFaceFW/fineweb-edu:sample-10BT:train:text"  # @param {type:"string"}
FIT_STEPS = 250  # @param {type:"integer"}
CONTEXT_LEN = 256  # @param {type:"integer"}
BATCH_SIZE = 8  # @param {type:"integer"}
OPTIMIZER = "adam"  # @param ["adam", "sgd"]
LR = 0.0  # @param {type:"number"}
EVAL_DOCS = 400  # @param {type:"integer"}
EVAL_BATCHES = 16  # @param {type:"integer"}
PROMPT = "The Eiffel Tower is located in the city of"  # @param {type:"string"}
DEVICE = ""  # @param {type:"string"}
OUTPUT_DIR = "outputs/20_tuned_lens"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
import itertools

import matplotlib.pyplot as plt

from shared.data import sources
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, data, readouts, training
from shared.notebook.run import start
from shared.readouts import lens
from shared.views import plots

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, data, training, readouts)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs
out_dir = run.out_dir

# %% [markdown]
# ## 1. Load the model
#
# Gated models (Gemma, Llama) need an `HF_TOKEN` secret. Memory note: fitting decodes one layer
# at a time, `BATCH_SIZE x CONTEXT_LEN x vocab` float32 logits; for Gemma's 256k vocabulary on a
# T4 use `BATCH_SIZE = 2`, `CONTEXT_LEN = 256`.

# %%
model, tokenizer = run.load_model()  # prints blocks, widths, vocabulary, dtype, device

# %% [markdown]
# ## 2. Held-out and training text
#
# The first `EVAL_DOCS` documents of the stream are held out for the comparison; fitting reads
# the documents after them, only as many as `FIT_STEPS x BATCH_SIZE` contexts need.

# %%
stream = sources.text_stream(sources.parse_source(DATASET, seed=SEED))
eval_texts = list(itertools.islice(stream, EVAL_DOCS))
print(f"{len(eval_texts)} held-out docs from {DATASET}; fitting reads on from doc {len(eval_texts)}")

# %% [markdown]
# ## 3. A pretrained lens, or a fresh fit
#
# With `TRY_PRETRAINED`, `lens/<MODEL_ID>/{config.json, params.pt}` is fetched from the
# `AlignmentResearch/tuned-lens` space. When there is none (or no network), a lens is fitted here:
# KL(final || lens) summed over layers, Adam (or the paper's SGD + Nesterov), linear warm-up and
# decay, gradient clipping at 1. `LR = 0` picks the optimizer's default: 1e-3 for Adam, 1.0 for SGD.
#
# The cell prints where the lens came from. With the default GPT-2 and network it is `pretrained` (the
# public space has a lens for GPT-2) and nothing is fitted. A fitted lens also draws `tuned_lens_fit.png`:
# the mean KL over layers of each training batch. Healthy: it falls from its first value (the logit
# lens's KL, since the lens starts at zero) and flattens; a curve that rises or turns NaN is a failed
# fit (lower `LR`).

# %%
fit = lens.TunedLensFitConfig(steps=FIT_STEPS, context_len=CONTEXT_LEN, batch_size=BATCH_SIZE,
                              optimizer=OPTIMIZER, lr=LR, seed=SEED)
tuned, info = lens.load_pretrained_or_fit(MODEL_ID, model, tokenizer, stream, fit, try_pretrained=TRY_PRETRAINED)
print(f"lens source: {info['source']}  {info['message']}")
if info["history"]:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(info["history"])
    ax.set_xlabel("step")
    ax.set_ylabel("mean KL over layers (train batch)")
    ax.set_title("tuned-lens fit")
    run.save_figure(fig, "tuned_lens_fit.png")

# %% [markdown]
# ## 4. Tuned vs logit lens on held-out text
#
# Per layer: KL(final || lens) in nats (lower is better) and how often the lens's top-1 token
# equals the model's final top-1 (higher is better), averaged over the held-out tokens: every position of
# the packed contexts but the special tokens (each context's start token and the separators between
# documents). Both are exact at the last layer.
#
# `tuned_vs_logit_lens.png` draws the table: KL per layer (left) and top-1 agreement per layer (right),
# one line per lens. **What a healthy run shows**: at the last layer KL 0 and agreement 1 for both lenses,
# by construction; at every other layer the tuned lens's KL at or below the logit lens's and its
# agreement at or above it, the gap widest in the early layers. That is what the fit aims at (the lens
# starts as the logit lens and is trained to lower this KL), and Belrose et al. (2023) find the tuned lens
# more predictive than the logit lens on the models they test, up to 20B parameters. GPT-2 is a
# model the plain logit lens already reads fairly well (nostalgebraist 2020, where it was introduced on
# GPT-2), so the gap here is smaller than on families where it fails. A tuned lens
# worse than the logit lens at early layers means the lens does not belong to this model (a mismatched
# pretrained lens) or the fit failed.

# %%
report = lens.compare_lenses(model, tokenizer, eval_texts, tuned, context_len=CONTEXT_LEN, batch_size=BATCH_SIZE,
                             max_batches=EVAL_BATCHES)
print(f"{report['n_tokens']} held-out tokens (special tokens left out)")
print(f"{'layer':>5} {'KL logit':>9} {'KL tuned':>9} {'top1 logit':>11} {'top1 tuned':>11}")
for block in report["layers"]:
    print(f"{block:5d} {report['logit_lens']['kl'][block]:9.3f} {report['tuned_lens']['kl'][block]:9.3f} "
          f"{report['logit_lens']['top1_agreement'][block]:11.3f} {report['tuned_lens']['top1_agreement'][block]:11.3f}")
run.save_figure(plots.plot_lens_comparison(report), "tuned_vs_logit_lens.png")

# %% [markdown]
# ## 5. One prompt through both lenses
#
# The same token x layer heat map as notebook 19, for the logit lens and the tuned lens:
# `logit_lens_heatmap.png` and `tuned_lens_heatmap.png`. The printed lists are each lens's top-1 guess at
# the prompt's last position, layer by layer; both end with the model's own prediction, by construction,
# and the tuned lens often reaches it at an earlier layer.

# %%
tables = {"logit": lens.lens_table(model, tokenizer, PROMPT, topk=3),
          "tuned": lens.lens_table(model, tokenizer, PROMPT, topk=3, lens=tuned)}
for name, table in tables.items():
    run.save_figure(plots.plot_lens_heatmap(table, value="prob", max_tokens=24), f"{name}_lens_heatmap.png")
    print(f"{name} lens, last position, top-1 by layer:", [row[-1][0] for row in table["top_tokens"]])

# %% [markdown]
# ## 6. Save the lens and the report
#
# The lens folder loads back with `lens.TunedLens.load(path)` for any architecture, or with the
# `tuned-lens` package (`TunedLens.from_model_and_pretrained(model, path)`) for the ones it knows;
# `tuned_lens_report.json` holds the per-layer comparison and how the lens was obtained: `model`,
# `lens_source` and `lens_message`, `lens_dir`, `lens_format`, `dataset`, `fit` (steps, context length,
# batch size, optimizer, learning rate, first and last training loss; steps 0 for a pretrained lens),
# `eval_docs`, `layers`, `n_tokens`, `logit_lens` and `tuned_lens` (each its per-layer `kl` in nats and
# `top1_agreement`), `mean_kl` over layers for each, `tuned_not_worse_at_every_layer` (true in a healthy
# run, see step 4), the `prompt` and each lens's top-1 at its last position by layer, `seed`, and
# `run`, the stamp every JSON report here carries (the notebook, model, seed, parameters, the vendored
# core's hash, when it was written). The lens
# folder holds `config.json` (the base model, `d_model`, `num_hidden_layers`, the unembedding hash) and
# `params.pt` (each layer's translator weight and bias).

# %%
lens_dir = tuned.save(out_dir / "lens" / MODEL_ID.replace(":", "_"))
gain = [a - b for a, b in zip(report["logit_lens"]["kl"], report["tuned_lens"]["kl"])]
summary = {
    "model": MODEL_ID,
    "lens_source": info["source"],
    "lens_message": info["message"],
    "lens_dir": str(lens_dir),
    "lens_format": "tuned-lens package: config.json + params.pt ({i}.weight/.bias; translator i reads hidden_states[i])",
    "dataset": DATASET,
    "fit": {"steps": FIT_STEPS if info["source"] == "fitted" else 0, "context_len": CONTEXT_LEN,
            "batch_size": BATCH_SIZE, "optimizer": OPTIMIZER, "lr": LR,
            "first_loss": info["history"][0] if info["history"] else None,
            "last_loss": info["history"][-1] if info["history"] else None},
    "eval_docs": len(eval_texts),
    **report,
    "mean_kl": {k: sum(report[k]["kl"]) / len(report["layers"]) for k in ("logit_lens", "tuned_lens")},
    "tuned_not_worse_at_every_layer": all(g >= -1e-4 for g in gain),
    "prompt": PROMPT,
    "prompt_top1_last_position": {k: [row[-1][0] for row in t["top_tokens"]] for k, t in tables.items()},
    "seed": SEED,
}
print(f"mean KL: logit {summary['mean_kl']['logit_lens']:.3f} -> tuned {summary['mean_kl']['tuned_lens']:.3f} nats; "
      f"tuned not worse at every layer: {summary['tuned_not_worse_at_every_layer']}")
run.write_report("tuned_lens_report.json", summary)
