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
# - **The residual stream and hooks**: a forward hook on one decoder block reads the stream the
#   block writes, and the forward stops right after it, so layers you do not need cost nothing.
# - **TopK + AuxK**: each token keeps its k largest latents (Gao et al. 2024); latents that have
#   not fired for millions of tokens are pulled back to life by an auxiliary loss on the residual
#   error.
# - **Geometric-median init** of the decoder bias, and decoder rows held at unit norm.
# - **Crash-safe checkpointing**: checkpoints written atomically with checksums, at least every
#   `CHECKPOINT_EVERY_MINUTES`. If the session dies, *run all cells again*: training resumes from the
#   last checkpoint, proves by a hash that it re-reads the same data, and ends with the SAE an
#   uninterrupted run would have produced (exactly on a CPU; on a GPU equal up to float round-off).
# - **Honest validation** on held-out text: variance explained, L0, dead latents, and how much of
#   the model's next-token loss survives with the SAE spliced in.
# - **SAELens export**: `cfg.json` + `sae_weights.safetensors` + `sparsity.safetensors`, loadable
#   with `sae_lens.SAE.load_from_disk`, with a model card and Neuronpedia metadata; pushed to the
#   Hugging Face repo you name in `HF_REPO` (or `<HF_USERNAME>/<RUN_NAME>` when only `HF_USERNAME` is
#   set; private unless `HF_PRIVATE = False`), and only then.

# %% [markdown] when="MODEL_ID~Qwen3\\.[56]"
# - **Hybrid models** (Qwen3.5 / Qwen3.6): what a Gated-DeltaNet (linear-attention) layer is, and
#   why reading its residual stream is the same hook as for any other block.

# %% [markdown] when="platform=kaggle"
# - **Two GPUs**: the model on one T4 and the SAE on the other (Kaggle's 2xT4), and a run that
#   outlives Kaggle's sessions.

# %% [markdown] when="platform=cloud"
# - **One big GPU**: several SAEs fed by one forward that stops after the deepest layer, with a
#   weighted mix of corpora measured in tokens.

# %% tags=["parameters"]
MODEL_ID = "google/gemma-2-2b"  # @param {type:"string"}
# the Hugging Face model whose residual stream the SAE learns (a gated one needs your HF_TOKEN)
LAYER = 12  # @param {type:"raw"}
# the block whose output the SAE reads (-1: the last); one layer, or a list such as [11, 31, 55]: one SAE
# per layer, all fed by the same forward pass
DATASET = "hf:HuggingFaceFW/fineweb-edu:sample-10BT:train:text"  # @param {type:"raw"}
# the training text: one source, or a mix: a list of "<source>@<weight>", e.g. ["hf:...fineweb-edu...@0.7",
# "hf:...@0.3"]; the weights are shares of the tokens (a source of long documents is drawn less often);
# measured and logged
VAL_DATASET = "hf:HuggingFaceFW/fineweb-edu:CC-MAIN-2024-10:train:text"  # @param {type:"string"}
# the validation text; empty: the training sources; either way only documents training never reads (section 5)
CONTEXT_LEN = 1024  # @param {type:"integer"}
# tokens per context the model reads
D_SAE = 16384  # @param {type:"integer"}
# latents per SAE (its width)
K = 64  # @param {type:"integer"}
# latents each token keeps (TopK)
TOTAL_TOKENS = 50_000_000  # @param {type:"integer"}
# tokens to train on (every SAE trains on each of them)
BATCH_TOKENS = 4096  # @param {type:"integer"}
# tokens per Adam step
MODEL_BATCH_SIZE = 8  # @param {type:"integer"}
# contexts per forward pass of the model
BLOCK_BATCHES = 32  # @param {type:"raw"}
# forwards per shuffled block (the activation buffer); "auto": as many as half the free memory holds
# beside what the training steps need
LR = 2e-4  # @param {type:"number"}
# Adam's learning rate after warm-up, before the cosine decay
LR_MIN = 6e-5  # @param {type:"number"}
# the learning rate the cosine decay ends at
WARMUP_STEPS = 1000  # @param {type:"integer"}
# steps of linear learning-rate warm-up
DEAD_TOKENS_THRESHOLD = 10_000_000  # @param {type:"integer"}
# a latent that has not fired for this many tokens is dead, and AuxK trains it back to life
CHECKPOINT_EVERY_TOKENS = 5_000_000  # @param {type:"integer"}
# a checkpoint every this many tokens trained
CHECKPOINT_EVERY_MINUTES = 10  # @param {type:"number"}
# and a checkpoint before this many minutes of training go unsaved
CHECKPOINT_DIR = "auto"  # @param {type:"string"}
# "auto": Google Drive on Colab; elsewhere the private Hub repo <HF_USERNAME>/<RUN_NAME>-checkpoints when
# HF_USERNAME is set, else ./checkpoints; "hf:<user>/<repo>": that private HF repo (HF_TOKEN secret)
RUN_NAME = "gemma-2-2b-L12-topk-16k"  # @param {type:"string"}
# the run's name: its checkpoint folder or repo, and the upload repo under HF_USERNAME
HF_USERNAME = ""  # @param {type:"string"}
# your Hugging Face user name (HF_TOKEN write secret): checkpoints that a later session resumes from
# (Kaggle, a rented GPU) and the SAE's upload to <HF_USERNAME>/<RUN_NAME> when HF_REPO is empty
ALLOW_UNRESUMABLE = False  # @param {type:"boolean"}
# True: on Kaggle, train even when the run outlasts one session and nothing would carry it over
ALLOW_STREAM_CHANGE = False  # @param {type:"boolean"}
# True: resume even when the re-read data differs from what the checkpoint trained on (recorded)
MODEL_DEVICE = "auto"  # @param ["auto", "cuda:0", "spread", "cpu"]
# where the model runs; "auto": cuda:0, else the CPU; "spread": split over every GPU, room kept for the SAE
MODEL_DTYPE = "auto"  # @param ["auto", "bfloat16", "float16", "float32"]
# the model's dtype; "auto": bfloat16 on a GPU that runs it, float16 on older ones (T4), float32 on CPU
SAE_DEVICE = "auto"  # @param ["auto", "cpu", "cuda:0", "cuda:1"]
# where the SAEs train; "auto": the last GPU (with two, the one beside the model's), else the CPU
VAL_TOKENS = 500_000  # @param {type:"integer"}
# held-out tokens the validation reads (section 5)
HF_REPO = ""  # @param {type:"string"}
# "<user>/<name>" (or "<name>" under HF_USERNAME or your account) uploads the SAE there with your HF_TOKEN
# write secret; empty: <HF_USERNAME>/<RUN_NAME> when HF_USERNAME is set, else no upload
HF_PRIVATE = True  # @param {type:"boolean"}
# a repo the upload creates is private unless HF_PRIVATE = False (an existing repo keeps its visibility)
OUTPUT_DIR = "outputs/01_hobbyist_gemma2_2b_colab"  # @param {type:"string"}
# where the reports, figures and the export go
SEED = 0  # @param {type:"integer"}
# seeds the data order, the SAEs' initialisation and everything else random

# %%
import json

import matplotlib.pyplot as plt

from shared.model import capture, layout
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, data, training
from shared.notebook.run import start
from shared.recipes import finish, sessions, tier
from shared.training import stream, trainer
from shared.views import plots

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, data, training)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs
layers = tuple(P.LAYER)  # block indices >= 0: LAYER = -1 is the last block

# %% [markdown]
# ## 1. Where are we running?
#
# The checkpoints need a place that outlives the session. `CHECKPOINT_DIR = "auto"` decides it here,
# before anything is downloaded.

# %% [markdown] when="platform=colab,any"
# On Colab, `"auto"` puts them on Google Drive, which outlives the VM: Colab asks once to authorise
# Drive (if you decline, the run falls back to the Hub repo `HF_USERNAME` names, or stops here and says
# what to set).

# %% [markdown] when="platform=kaggle,any"
# On Kaggle, `"auto"` with `HF_USERNAME` set is a private Hub repo (next section); without it, a local
# folder that dies with the session, so a run the throughput model says cannot finish within one 12 h
# session stops here unless `ALLOW_UNRESUMABLE = True`.

# %% [markdown] when="platform=cloud"
# On a rented machine `"auto"` is the private Hub repo `<HF_USERNAME>/<RUN_NAME>-checkpoints` when
# `HF_USERNAME` is set (an `HF_TOKEN` write secret; this cell checks the token may write there), else
# `./checkpoints/<RUN_NAME>` on its disk: keep that disk if the machine may be stopped and restarted.

# %%
# The set-up cell listed the GPUs. Resolved by the parameter check: MODEL_DEVICE "auto" is cuda:0
# (or cpu); "spread" splits the model over every GPU; SAE_DEVICE "auto" is the last GPU (with two,
# the SAE trains on the one beside the model's).
model_device, sae_device = P.MODEL_DEVICE, P.SAE_DEVICE
checkpoint_dir = sessions.checkpoint_dir(P)  # "auto" resolved; one line if the run could not resume
print(f"model on {model_device}, SAE on {sae_device}, checkpoints in {checkpoint_dir}")

# %% [markdown] when="platform=kaggle"
# ### Two GPUs, a kill, and the next session
#
# On Kaggle's 2xT4 a model of up to ~6B parameters fits one T4 in fp16 (T4s have no bf16): it runs
# on `cuda:0` and the SAE trains on `cuda:1`, so the forward pass and the SAE step each have a card's
# memory instead of fighting for one (they still run one after the other). Bigger models (7-8B) are
# spread over both cards (`MODEL_DEVICE = "spread"`): cuda:0 is filled first, and cuda:1 takes the rest
# of the weights only up to what leaves room for the SAE, its Adam state and the activation buffer
# beside them (a `max_memory` computed from these parameters); the forward stops before the blocks
# that land there. Kaggle stops a session after 12 hours and a kernel can die earlier;
# whatever killed it, re-running the notebook from the top finds the newest checkpoint and goes on.
# Local folders die with the session, so across Kaggle sessions set `HF_USERNAME` to your Hugging
# Face user name and add your HF token (write access) as the Kaggle secret `HF_TOKEN`: the
# checkpoints then go to the private repo `<HF_USERNAME>/<RUN_NAME>-checkpoints` and the next session
# resumes from it. Nothing is uploaded unless you set `HF_USERNAME` or name a repo.

# %% [markdown]
# ## 2. The model and its residual stream
#
# A decoder-only transformer is a stack of blocks, each adding its output to a running vector per
# token: the **residual stream**. "Layer L" here is the stream as block L leaves it (SAELens calls
# it `blocks.L.hook_resid_post`). A forward hook on block L reads it; the capture raises a stop
# signal from that hook, so blocks after L never run.

# %% [markdown] when="MODEL_ID~Qwen3\\.[56]"
# ### Hybrid models: Gated-DeltaNet layers
#
# Qwen3.5 and Qwen3.6 interleave two kinds of blocks: three **Gated-DeltaNet** blocks, then one
# full-attention block, over and over (layers 3, 7, 11, ... are full attention). A Gated-DeltaNet
# block is *linear attention*: instead of comparing each token with every earlier one (cost
# growing with the square of the context), it carries a fixed-size memory matrix along the
# sequence, decays it by a learned gate and writes each token into it with the delta rule
# (correct what the memory predicts for this key, rather than just add). Both kinds of block read
# and write the same residual stream, so an SAE on "layer L" means the same thing for either kind.
#
# Capture is a forward hook on block L wherever the model exposes its list of blocks (as the
# text-only model transformers loads for Qwen3.5 does); the hook stops the forward there. Where
# the list is not reachable (some multimodal wrappers), the capture asks the model for
# `output_hidden_states` instead: entry L + 1 is block L's output, and the run stays correct, only
# slower (every block runs, every hidden state is kept). The linear-attention kernels come from
# `flash-linear-attention` when it is installed and fall back to plain PyTorch otherwise.

# %%
# on MODEL_DEVICE in MODEL_DTYPE (spread: GPU by GPU, room kept for the SAE); prints blocks, widths, dtype, device
model, tokenizer = run.load_model(max_memory=tier.spread_max_memory(P))

probe = tokenizer("The residual stream carries everything the model knows about a token.",
                  return_tensors="pt").input_ids.to(layout.model_device(model))
residual = capture.capture_residuals(model, probe, [layers[0]])[layers[0]][0].float()
tokens = tokenizer.convert_ids_to_tokens(probe[0])
plt.figure(figsize=(8, 2.5))
plt.bar(range(len(tokens)), residual.norm(dim=-1).cpu())
plt.xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
plt.title(f"residual-stream norm per token at layer {layers[0]} (BOS is huge: we drop it from training)")
run.save_figure(plt, "residual_norms.png")

# %% [markdown]
# `residual_norms.png`: the norm of the residual stream at the first layer of `LAYER`, token by token
# of one sentence. Healthy: the first token (BOS) stands far above the others, often by ten times or
# more (the "massive activations" of Sun et al. 2024), and the other tokens are of similar size. That
# outlier is why BOS is left out of training; a run where every token is tiny or every token is huge
# read the wrong layer or a broken model.

# %% [markdown]
# ## 3. The recipe
#
# Text streams from the data set (a Hub set is read row group by row group in a seeded shuffled
# order, so the first documents come from all over it), is packed into contexts of `CONTEXT_LEN`
# tokens, documents separated by the model's end-of-text token, and each context begins as the
# model's own inputs do: with its BOS where its tokenizer adds one (Gemma, Llama, Mistral), else with
# that end-of-text token (Qwen has no BOS and its EOS `<|im_end|>` is a chat token; Phi-3's tokenizer
# adds no BOS). Text that spells a special token, like `<|endoftext|>` on a web page, stays text.
# The contexts pass through a seeded shuffle window of 10M tokens (40 MB of token ids) before the
# model reads them, so each forward holds contexts of many documents rather than the consecutive
# contexts of one long document. They run through the model in blocks of `BLOCK_BATCHES` forwards;
# the block's activations (BOS, EOS and padding dropped) are shuffled and cut into batches of
# `BATCH_TOKENS` for Adam; the rows short of a last full batch join the next block, so every token
# the model reads is trained on.
# Warm-up then cosine decay of the learning rate to a non-zero floor. The decoder bias starts at
# the geometric median of the first block. Dead latents are counted in tokens since they last
# fired; once past `DEAD_TOKENS_THRESHOLD`, AuxK (k_aux = d_model/2, weight 1/32) trains them to
# explain the main reconstruction's error.

# %% [markdown] when="LAYER~^\\["
# With several layers in `LAYER`, one forward feeds them all: the forward stops after the deepest
# one, and each SAE trains on its own layer's rows of the same tokens.

# %% [markdown] when="BLOCK_BATCHES=auto"
# With `BLOCK_BATCHES = "auto"` the buffer takes as many forwards as half the free memory holds once
# the training steps' own needs are set aside (Adam's moments, which torch allocates at the first
# step, one SAE's gradients and step tensors), and shrinks its blocks if memory gets tight later, so
# it does not run out.

# %% [markdown] when="DATASET~^\\["
# With a `DATASET` mix the weights are shares of the tokens: the next document comes from a source
# with probability proportional to its weight over its mean document length in tokens so far, so a
# source of long documents is drawn less often and gives its weight's share of the tokens all the
# same; the tokens each source gave are counted and logged beside the loss. Everything is seeded, so
# a resumed run replays exactly the same stream.

# %%
# The parameters become a TrainConfig (a TopK SAE of D_SAE latents, k = K, d_in from the model) by
# the same function `python -m shared.train` uses, so a multi-GPU job resumes these checkpoints.
cfg = tier.config_from_params(P, checkpoint_dir)
print(json.dumps(cfg.resume_key(), indent=1, default=str))

# %% [markdown]
# ## 4. Train (re-run this cell after a disconnect: it resumes)
#
# A checkpoint (SAE, Adam state, step, data position, random states) lands every
# `CHECKPOINT_EVERY_TOKENS` tokens and, whatever the speed, before `CHECKPOINT_EVERY_MINUTES` of
# training would go unsaved (at the end of a block of forwards, the one place a checkpoint is exact).
# It is written to a temporary folder, checksummed, and renamed into place, so a kill mid-write only
# ever loses the newest checkpoint; a damaged one is skipped with a warning.
#
# A resume re-reads the data from the start and skips what was trained (re-tokenizing, no model
# forward; the time it takes is printed). Each checkpoint records a hash of every token batch
# consumed, the data set's Hub revision (pinned by the first session), the `datasets` version and
# the tokenizer: if the re-read batches hash differently (a library upgraded in the next session), the
# run stops and says what changed rather than train some documents twice and others never.

# %% [markdown] when="platform=cloud"
# A checkpoint here is large: three SAEs of 65,536 latents over d_model 5,120 with Adam's two moments
# are 3 SAEs x 3 copies (weights, two moments) x 2 matrices x 65,536 x 5,120 x 4 bytes, about 24 GB
# (computed, not measured), and training waits while it is written and, to a Hub repo, uploaded. So
# this notebook saves every 30 minutes rather than 10 (`CHECKPOINT_EVERY_MINUTES`); lower it on a fast
# disk you trust, raise it on a slow uplink.

# %%
result = trainer.train(cfg, model, tokenizer)
print(f"trained on {result.tokens:,} tokens in {result.steps:,} steps"
      + (f" (resumed at {result.resumed_from:,})" if result.resumed_from else ""))

# %%
mix = stream.mix_shares(result.tokens_by_source)  # the tokens each source gave, as shares (one source: 1.0)
print("data mix, measured in tokens: " + ", ".join(f"{name} {share:.1%}" for name, share in mix.items()))
history = trainer.load_metrics(result.metrics_path)  # kept beside the checkpoints: whole across resumes
run.save_figure(plots.plot_training_curves(history), "training_curves.png")

# %% [markdown]
# `training_curves.png`, one line per layer against tokens trained (the metrics are kept beside the
# checkpoints, so a resumed run's curves are whole): **FVU**, the fraction of the variance the SAE
# leaves unexplained on its training batches, falls steeply over the first few million tokens and then
# slowly (it should end near 1 - var_expl of the validation below); **L0** is K on every step (TopK
# keeps exactly K latents a token); **dead latents** (none fired for `DEAD_TOKENS_THRESHOLD` tokens)
# should fall back towards 0 % once AuxK starts; the **AuxK loss** is 0 while no latent is dead; the
# **learning rate** warms up, then decays along a cosine to `LR_MIN`. A loss that stalls high, or
# dead latents that keep climbing, mean a learning rate too high or an SAE too wide for the tokens.

# %% [markdown]
# ## 5. Validate, export and report
#
# One call ends the run: `finish.validate_and_export` validates every SAE on held-out text, exports each
# for SAELens and Neuronpedia, loads each export back to check it, uploads when asked and writes the
# run report. `python -m shared.train` ends its jobs with the same call, so a notebook and a job write
# the same files. What it does, step by step:
#
# ### Validation on held-out text
#
# Documents the SAE never saw. Every document is routed by a hash of its text: one in five is held
# out, training skips those and validation reads only them, so the two never share a document. That
# matters even with `VAL_DATASET` set: its default, FineWeb-Edu's CC-MAIN-2024-10 crawl, is not
# disjoint from the training set, sample-10BT, a random ~10B-token sample of all of FineWeb-Edu's
# ~1.3T tokens, that crawl included. Without the routing a validation document would be in the
# sample with probability ~10B/1.3T ≈ 0.8 %, and among the documents a run trains on with that times
# the share of the sample it reads: ~4e-5 for tier 1's 50M tokens, ~1e-4 for tier 3's 140M tokens of
# FineWeb-Edu. (Copies with different text, such as a page crawled twice with an edit, are not
# caught by the hash.) We report the fraction of variance explained, L0, latents alive, and the
# next-token loss with the SAE's reconstruction spliced into the model at its layer, between the
# clean model (100% recovered) and the layer zero-ablated (0%).
#
# `val_report.json`, one entry per layer: `var_expl` (1 - the fraction of variance unexplained, over
# the held-out tokens), `l0` (active latents a token), `alive` and `dead_pct` (latents that never
# fired on them), `ce_loss_clean` / `ce_loss_spliced` / `ce_loss_zero_ablation` and
# `ce_loss_recovered` = (zero - spliced) / (zero - clean), `kl_div_spliced` (the KL divergence of the
# spliced model's next-token distribution from the clean one's), and the same scores in SAELens'
# `run_evals` terms; its `definitions` say how each is computed.

# %% [markdown] when="MODEL_ID=google/gemma-2-2b"
# **What a healthy run shows here** (TopK, k = 64, 16k latents, Gemma-2-2B layer 12, 50M tokens):
#
# - `l0` is 64: TopK keeps exactly k latents a token, fewer only where fewer than k pre-activations
#   are positive.
# - `var_expl` about 0.75-0.85. Public SAEs on this very layer set the range: a TopK SAE of 16k latents
#   at k = 100 trained on 200M Pile tokens reports 0.85 (huggingface.co/senator1/sae-gemma2-2b-layer12-v9c),
#   Matryoshka BatchTopK SAEs of 32k latents at k = 40 on 750M tokens 0.73
#   (huggingface.co/chanind/gemma-2-2b-batch-topk-matryoshka-saes-w-32k-l0-40); with k = 64 and 50M
#   tokens, expect the lower half.
# - `saelens.ce_loss_score` about 0.90-0.99: published SAEs of this size and sparsity on Gemma-2 residual
#   streams (Gemma Scope, Lieberum et al. 2024; SAEBench's suite on this layer, Karvonen et al. 2025) score
#   in that band in SAELens' definition, higher on longer contexts. Below 0.9 something is wrong (too few
#   tokens, the wrong layer, a dtype problem). Our `ce_loss_recovered` is not that number and runs lower:
#   its zero-ablation spares BOS/EOS, where SAELens zeroes them too (a far worse baseline), so the same
#   SAE scores e.g. 0.77 ours vs 0.88 SAELens' on a tiny Llama, 0.98 vs 0.99 for a better one.
# - `dead_pct` near 0 (below a few per cent): AuxK keeps latents alive (Gao et al. 2024 keep dead
#   latents to 7 % even at 16M latents).
#
# These ranges come from other people's runs on more tokens; a run of 50M tokens that lands a little
# below them is normal, one far below is not.

# %% [markdown] when="MODEL_ID!=google/gemma-2-2b"
# **What a healthy run shows here**: `l0` equal to K (TopK keeps exactly K latents a token), `dead_pct`
# near 0 (AuxK keeps latents alive), `saelens.ce_loss_score` above about 0.9 (our `ce_loss_recovered`
# runs lower: its ablation spares BOS) and `var_expl` above about 0.7 at this sparsity. No published SAE
# of this shape on this model and layer gives a narrower reference; for Gemma-2-2B at layer 12 with k = 64
# the published range is var_expl 0.75-0.85 and SAELens' CE loss score 0.90-0.99 (notebook 01 cites the
# sources).

# %% [markdown]
# ### Export for SAELens and Neuronpedia, and upload
#
# The folder holds `cfg.json`, `sae_weights.safetensors` (W_enc, b_enc, W_dec, b_dec),
# `sparsity.safetensors` (log10 firing frequency per latent), a model card with the validation
# numbers, and `neuronpedia.json`. Load it back with
# `sae_lens.SAE.load_from_disk(folder)` or `shared.saes.load.load_sae(folder)`. It goes to the Hub
# only when asked: to `HF_REPO` (a bare name goes under `HF_USERNAME`), or with `HF_REPO` empty to
# `<HF_USERNAME>/<RUN_NAME>` when `HF_USERNAME` is set; a new repo is private unless `HF_PRIVATE = False`. If the
# upload fails (no network, token rejected, no write access) the run still ends: the export stays
# here and the run report records why. The call loads each export back and checks that it encodes
# the model's activations as the trained SAE does.
#
# ### The run report
#
# `run_report.json`: the model, layers and SAE shape, the data (the mix's sources and the share of
# tokens each gave), tokens and steps trained (`resumed_from` when this run picked up a checkpoint),
# where the checkpoints are, the validation above, the export folders and whether each reloads
# identically, and the upload (`hub`: empty when nothing was asked).

# %%
finished = finish.validate_and_export(P, run, cfg, model, tokenizer, result)  # never raises on a Hub fault

# %% [markdown]
# The summary above is `val_report.json`: compare it with the healthy ranges. `export/blocks.<layer>.hook_resid_post/`
# holds one folder per layer. Healthy: each export line says the reloaded SAE encodes identically (True); the
# upload line names the repo and says private, or says why it did not upload (and nothing was asked when
# `HF_REPO` is empty); in `run_report.json`, `tokens_trained` is `TOTAL_TOKENS` (rounded up to a whole batch)
# and every `export_reloads_identically` is true.
