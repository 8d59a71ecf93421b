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
BUDGET_MINUTES = 60  # @param {type:"number"}
GOAL = "learn"  # @param ["learn", "explore", "paper"]
OUTPUT_DIR = "outputs/07_pick_your_tier"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
import matplotlib.pyplot as plt

from shared import runtime
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, planning
from shared.notebook.run import start
from shared.planning import gpus, memory, recommend, stated_times, throughput

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line
P = check_parameters(globals(), common, planning)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. Detect the GPU
#
# `GPU = "auto"` reads the visible CUDA devices; set it by hand to plan for a machine you do not
# have yet (e.g. `"T4"` before opening Colab, `"2xT4"` for Kaggle).

# %%
visible = runtime.gpu_info()  # listed by the set-up cell above
if not visible:
    print("no CUDA GPU visible")
gpu_name = gpus.detect_gpu_class() if GPU == "auto" else gpus.gpu_class(GPU).name
g = gpus.gpu_class(gpu_name)
print(f"\nplanning for: {g.name} -- {g.n_gpus} x {g.vram_gb:g} GiB ({memory.usable_gib(g):.1f} usable), "
      f"{g.peak_tflops:g} TFLOP/s dense {'bf16' if g.name != 'cpu' and g.bf16 else 'fp16' if g.name != 'cpu' else 'fp32'} "
      f"peak, MFU {g.mfu:.0%} ({g.basis}). {g.note}")

# %% [markdown]
# ## 2. The model behind the recommendation
#
# **Memory** (per GPU): weights (params x 2 bytes in bf16, fp16 on a T4) + the forward's working set
# (one block's activations plus the captured layer outputs; Gemma-2's eager attention adds its
# score matrix) + the SAE in fp32 with its two Adam moments, the gradients and dense pre-activations
# of one SAE step + the fp32 activation buffer + the CUDA context. An option fits when the total stays
# under 90% of the memory torch reports per GPU: a T4 (16 GB on the box, 15360 MiB in nvidia-smi)
# reports 14.56 GiB, so 13.1 GiB is usable. On Kaggle's 2xT4 the model sits on GPU 0 and the SAE with
# its buffer on GPU 1; a 7-8B model that does not fit one T4 is spread over both, GPU 0 filled first and
# GPU 1 holding the rest beside the SAE, with a `max_memory` that keeps the SAE's room free (the
# table's "spread"). A multi-layer recipe (tier 3: three SAEs on Qwen3.6-27B layers 11, 31, 55) keeps
# every SAE's weights and Adam moments, but the SAEs step one after another and free their gradients,
# so gradients and pre-activations count once: the 27B in bf16 plus three 65k-latent SAEs needs a 96 GB
# card. The hybrid Qwen models (Gated-DeltaNet + attention blocks) are weighed like any other, except
# that Qwen3.5-4B's forward was measured at 0.68 of the usual speed (transformers' plain-PyTorch delta rule).
#
# **Throughput**: forward FLOPs per token = 2 x params of the blocks up to the deepest hooked layer
# (+ attention scores); SAE step = 10 x d_in x d_sae per SAE on a bf16 GPU (five dense tensor-core
# matmuls), or ~1.4 fp32 encoder matmuls on a T4 (no bf16 there: the step runs in fp32 on its sparse
# kernels). Time per token = forward + SAE step, in series (the step waits on the host, so two GPUs
# do not overlap them). Setup (install, download, load) is subtracted from the budget first. The
# Hopper MFU is measured: the whole trainer on an H200 ran at 0.26-0.30 of the bf16 peak (BENCHMARKS.md).
# The T4's is an estimate: a T4 capped at 70 W sustains 37% of its fp16 peak in a long matrix multiply,
# and the trainer reached 0.54 of its own matmul floor's rate on the H200, so 0.20 here. Each GPU
# class prints where its number comes from.
#
# The model lives in `shared/planning/`, one concept a module: `memory.py` and `throughput.py` hold
# the arithmetic above, `recommend.py` this notebook's weighing, `stated_times.py` the check against
# the catalog. The cell prints the model's constants (`USABLE_FRACTION`: the share of torch's reported
# memory an option may fill; `CUDA_CONTEXT_GB`; the per-d_model working set of the forward; the FLOPs
# of one SAE step per d_in x d_sae, on a bf16 GPU and in fp32 on a T4; the copies of the SAE's state
# Adam keeps; the buffer's bytes per value; the setup minutes and the download rate subtracted from
# the budget), then checks the model against the catalog: the tier-1 notebook's stated time and this
# model's time for its tokens must agree, since both come from this same arithmetic.

# %%
constants = {k: getattr(memory, k) for k in ("USABLE_FRACTION", "CUDA_CONTEXT_GB", "ACT_WORKSET_PER_D",
                                             "SAE_STATE_COPIES", "BUFFER_BYTES")}
constants |= {k: getattr(throughput, k) for k in ("SAE_FLOPS_PER_PARAM_PAIR", "SAE_FP32_FLOPS_PER_PARAM_PAIR",
                                                 "SETUP_MINUTES", "DOWNLOAD_GB_PER_S")}
for k, v in constants.items():
    print(f"  {k:26s} {v}")
anchor = stated_times.catalog_anchor_check()
print(f"\nTier 1 ({anchor['notebook']}): {anchor['tokens'] / 1e6:.0f}M tokens at ~{anchor['model_tokens_per_s']:,.0f} "
      f"tokens/s = ~{anchor['model_minutes'] / 60:.1f} h on a T4 by this model; the catalog says "
      f"\"{anchor['stated']}\".")

# %% [markdown]
# ## 3. The options weighed
#
# Every candidate model with its tier recipe, on your GPU class and budget: does it fit, how fast,
# how many tokens the budget buys, and why it was not chosen. Columns: the notebook, the layers it
# trains, `d_sae`, `k`, `peak GiB` (the fullest GPU's memory by the model above), `fits` (peak under
# the usable memory), `tok/s`, the tokens the budget buys after setup, the minutes it takes, and the
# status (recommended / rejected, with the reason on the next line).
#
# `tier_options.png` draws the same table: left, each option's peak GiB on its fullest GPU, with the
# usable memory per GPU as a red dashed line; right, the tokens it trains in the budget. Green is the
# recommendation, blue fits but was not chosen, gray does not fit. By construction no green or blue
# bar crosses the red line.

# %%
rows = recommend.options_table(gpu_name, BUDGET_MINUTES, GOAL)
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
ax_mem.axvline(memory.USABLE_FRACTION * g.vram_gb, color="red", ls="--", label="usable VRAM per GPU")
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
# Open the notebook named below and paste these values into its parameters cell. Under them, the
# memory the recommendation needs, per GPU and part (the CUDA context, the weights, the forward's
# activations, the SAE's parameters, gradients and Adam state, its step's activations, the buffer,
# and the total).
#
# **What a healthy run shows**, by construction of the model above: the recommended option fits (its
# `total` stays under the usable memory, 13.1 GiB per T4) and its minutes stay within `BUDGET_MINUTES`;
# on a T4 with `GOAL = "learn"` it names tier 1 (`01_hobbyist_gemma2_2b_colab`, Gemma-2-2B). On a
# machine without a GPU (`cpu`) it still recommends a notebook, for a free Colab T4, and says so in
# its note. These are planning numbers from arithmetic, not measurements of your GPU; BENCHMARKS.md
# says which of them were measured where.
#
# `tier_recommendation.json`: `gpu_detected` (the CUDA devices seen), `gpu_class`, `budget_minutes`,
# `goal`, `recommendation` (the notebook to open, `run_in` the one to open now, its model, layers,
# `d_sae`, `k`, tokens, minutes, tokens/s, `placement`, `memory` per GPU as printed, `note`, and the
# `parameters` to paste), `options` (every row of the table in step 3, with its `reason`), `constants`,
# `catalog_anchor` (the check of step 2) and `run`, the stamp every JSON report here carries (the
# notebook, model, seed, parameters, the vendored core's hash, when it was written).

# %%
rec = recommend.recommend(gpu_name, BUDGET_MINUTES, GOAL)
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
report = {"gpu_detected": [g_.name for g_ in visible], "gpu_class": gpu_name, "budget_minutes": BUDGET_MINUTES,
          "goal": GOAL, "recommendation": rec.to_dict(), "options": rows, "constants": constants,
          "catalog_anchor": anchor}
run.write_report("tier_recommendation.json", report)
