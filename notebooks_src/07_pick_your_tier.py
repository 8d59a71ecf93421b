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
# - Which GPU you have and what it can hold: model weights, forward activations, the SAE with its
#   gradients and Adam state, the activation buffer.
# - How fast it trains: tokens/s from the FLOPs of the forward up to your layer plus the SAE step.
# - Which notebook of the ladder to open next, with the exact parameter values to paste into it.
#
# Runs on CPU in seconds: nothing is downloaded, nothing is trained.

# %% tags=["parameters"]
GPU = "auto"  # @param ["auto", "T4", "2xT4", "L4", "A10G", "RTX-4090", "A100-40", "A100-80", "H100-80", "RTX-PRO-6000", "H200", "cpu"]
BUDGET_MINUTES = 35  # @param {type:"number"}
GOAL = "learn"  # @param ["learn", "explore", "paper"]
OUTPUT_DIR = "outputs/07_pick_your_tier"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
import matplotlib.pyplot as plt

from shared import notebook, runtime, tiers

P = notebook.check_parameters(globals())  # a bad value stops here with one line
run = notebook.start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. Detect the GPU
#
# `GPU = "auto"` reads the visible CUDA devices; set it by hand to plan for a machine you do not
# have yet (e.g. `"T4"` before opening Colab, `"2xT4"` for Kaggle).

# %%
gpus = runtime.gpu_info()  # listed by the set-up cell above
if not gpus:
    print("no CUDA GPU visible")
gpu_name = tiers.detect_gpu_class() if GPU == "auto" else tiers.gpu_class(GPU).name
g = tiers.gpu_class(gpu_name)
print(f"\nplanning for: {g.name} -- {g.n_gpus} x {g.vram_gb:g} GiB, {g.peak_tflops:g} TFLOP/s dense "
      f"{'bf16' if g.name != 'cpu' and g.bf16 else 'fp16' if g.name != 'cpu' else 'fp32'} peak, assumed MFU {g.mfu:.0%}. {g.note}")

# %% [markdown]
# ## 2. The model behind the recommendation
#
# **Memory** (per GPU): weights (params x 2 bytes in bf16, fp16 on a T4) + the forward's working set
# (one block's activations plus the captured layer outputs; Gemma-2's eager attention adds its
# score matrix) + the SAE in fp32 with its gradients and two Adam moments (4 copies) + the SAE's
# dense pre-activations for one batch + the fp32 activation buffer + the CUDA context. An option fits
# when the total stays under 90% of VRAM. On Kaggle's 2xT4 the model sits on GPU 0 and the SAE with
# its buffer on GPU 1. If the full model does not fit, the blocks after the deepest hooked layer can
# be dropped (the forward stops there anyway) -- the table says when that is needed. A multi-layer
# recipe (tier 3: three SAEs on Qwen3.6-27B layers 11, 31, 55) keeps every SAE's weights and Adam
# moments, but the SAEs step one after another and free their gradients, so gradients and
# pre-activations count once: the 27B in bf16 plus three 65k-latent SAEs needs a 96 GB card.
# The hybrid Qwen models (Gated-DeltaNet + attention blocks) are weighed like any other: their
# blocks are reached by the same hook, and a linear-attention block costs about what its
# parameters say, except that Qwen3.5-4B's forward was measured at 0.68 of the usual speed (its
# small Gated-DeltaNet blocks on transformers' plain-PyTorch delta rule).
#
# **Throughput**: forward FLOPs per token = 2 x params of the blocks up to the deepest hooked layer
# (+ attention scores); SAE step = 10 x d_in x d_sae per SAE (on a bf16 GPU the step runs as five
# dense tensor-core matmuls). Time per token = FLOPs / (peak x MFU), forward and SAE in series on one
# GPU, in parallel on 2xT4. Setup (install, download, load, final validation) is subtracted from
# the budget first. The Hopper MFU (H100, H200) is measured: the whole trainer on an H200 ran at
# 0.26-0.30 of the bf16 peak for the tier-1 and tier-3 shapes (BENCHMARKS.md); the other classes'
# MFUs are still assumptions.

# %%
constants = {k: getattr(tiers, k) for k in ("USABLE_FRACTION", "CUDA_CONTEXT_GB", "ACT_WORKSET_PER_D",
             "SAE_FLOPS_PER_PARAM_PAIR", "SAE_STATE_COPIES", "BUFFER_BYTES", "SETUP_MINUTES", "DOWNLOAD_GB_PER_S")}
for k, v in constants.items():
    print(f"  {k:26s} {v}")
anchor = tiers.catalog_anchor_check()
print(f"\nCatalog headline: {anchor['claim_tokens'] / 1e6:.0f}M tokens on a T4 in ~{anchor['claim_minutes']} min "
      f"({anchor['gflop_per_token']:.2f} GFLOP/token) would need {anchor['implied_mfu']:.0%} MFU; this model "
      f"assumes {anchor['assumed_mfu']:.0%} and predicts {anchor['model_minutes']:.0f} min for it.")

# %% [markdown]
# ## 3. The options weighed
#
# Every candidate model with its tier recipe, on your GPU class and budget: does it fit, how fast,
# how many tokens the budget buys, and why it was not chosen.

# %%
rows = tiers.options_table(gpu_name, BUDGET_MINUTES, GOAL)
header = f"{'notebook':32s} {'layers':>12s} {'d_sae':>6s} {'k':>4s} {'peak GiB':>8s} {'fits':>5s} {'tok/s':>8s} {'tokens':>8s} {'min':>6s}  status"
print(header)
print("-" * len(header))
for r in rows:
    layers = ",".join(map(str, r["layers"]))
    print(f"{r['notebook']:32s} {layers:>12s} {r['d_sae']:>6d} {r['k']:>4d} {r['peak_gb']:>8.1f} "
          f"{str(r['fits']):>5s} {r['tokens_per_s']:>8,d} {r['tokens'] / 1e6:>7.0f}M {r['est_minutes']:>6.1f}  {r['status']}")
    if r["reason"] and r["status"] != "recommended":
        print(f"{'':34s}-> {r['reason']}")

# %%
fig, (ax_mem, ax_tok) = plt.subplots(1, 2, figsize=(12, 0.5 * len(rows) + 1.5), sharey=True)
labels = [f"{r['model_id'].split('/')[-1]} L{','.join(map(str, r['layers']))}" for r in rows]
colors = ["tab:green" if r["status"] == "recommended" else "tab:blue" if r["fits"] else "tab:gray" for r in rows]
ax_mem.barh(labels, [r["peak_gb"] for r in rows], color=colors)
ax_mem.axvline(tiers.USABLE_FRACTION * g.vram_gb, color="red", ls="--", label="usable VRAM per GPU")
ax_mem.set_xlabel("peak GiB on the fullest GPU")
ax_mem.legend(loc="lower right")
ax_tok.barh(labels, [r["tokens"] / 1e6 for r in rows], color=colors)
ax_tok.set_xlabel(f"M tokens trainable in {BUDGET_MINUTES:g} min")
ax_mem.invert_yaxis()
fig.suptitle(f"{g.name}, {BUDGET_MINUTES:g} min, goal {GOAL!r} (green = recommended, gray = does not fit)")
run.save_figure(fig, "tier_options.png")

# %% [markdown]
# ## 4. The recommendation
#
# Open the notebook named below and paste these values into its parameters cell.

# %%
rec = tiers.recommend(gpu_name, BUDGET_MINUTES, GOAL)
print(f"Tier notebook: {rec.tier_notebook}; open now: {rec.run_in}  (on {rec.gpu}; ~{rec.est_minutes:g} of "
      f"{BUDGET_MINUTES:g} min, ~{rec.tokens_per_s:,} tokens/s)")
if rec.note:
    print(f"Note: {rec.note}")
print("\n# parameters to paste")
for k, v in rec.parameters.items():
    print(f"{k} = {v!r}")
print("\nmemory, GiB:")
for dev, parts in rec.memory.items():
    print(f"  {dev}: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))

# %%
report = {"gpu_detected": [g_.name for g_ in gpus], "gpu_class": gpu_name, "budget_minutes": BUDGET_MINUTES,
          "goal": GOAL, "recommendation": rec.to_dict(), "options": rows, "constants": constants,
          "catalog_anchor": anchor}
run.write_report("tier_recommendation.json", report)
