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
# Stage Gate G1 asks one question of an SAE: **does a pack of its features track whether the model
# gets a math problem right?**
#
# - Let the model answer `N_EVAL` held-out **GSM8K test** problems greedily, and mark each answer right
#   or wrong by the **final-answer rule** (the number after `####`, else in the last `\boxed{}`, else
#   the last number of the response, compared with the gold answer).
# - Score each response with **R_mech** = the mean, over the *response* tokens only, of the "helpful"
#   pack's mean activation minus the "harmful" pack's.
# - **Spearman ρ** between R_mech and correctness: the gate **passes when ρ ≥ 0.30 and p < 0.05**.
#
# The packs come from a feature catalog (label search) or your own latent ids, or are chosen here
# on a **separate selection split** (GSM8K *train* problems) that never shares a problem with the
# evaluation set; the notebook checks that and says so.
#
# Default: Gemma-2-2B-it with the Gemma Scope residual SAE of layer 12 (16k latents). Gemma Scope was
# trained on the base model; its residual SAEs are known to transfer to the instruction-tuned one.

# %% tags=["parameters"]
MODEL_ID = "google/gemma-2-2b-it"  # @param {type:"string"}
LAYER = 12  # @param {type:"integer"}
SAE = "gemma-scope-2b-pt-res-canonical"  # @param {type:"string"}
SAE_ID = "layer_12/width_16k/canonical"  # @param {type:"string"}
# SAE: a SAELens release (SAE_ID: the SAE in it), a local export folder or a Hub repo id (SAE_ID: its
# subfolder, "" for the root), or "train-tiny" to train a small SAE here first (the offline smoke run)
# it must read the residual stream after block LAYER (a blocks.L.hook_resid_pre SAE reads block L-1's output:
# LAYER = L - 1); its hook, layer and width are checked in the next cell wherever its files or release say them
PROBLEMS = "gsm8k"  # @param ["gsm8k", "synthetic:arithmetic"]
RESPONSES = "generate"  # @param ["generate", "dataset"]
# "generate": the model answers each problem; "dataset": score the model-style answers (half of them
# wrong) that synthetic:arithmetic carries, for a model too small to solve anything (the smoke run)
N_EVAL = 100  # @param {type:"integer"}
N_SELECT = 100  # @param {type:"integer"}
PACK_SIZE = 10  # @param {type:"integer"}
HELPFUL_PACK = []  # @param {type:"raw"}
HARMFUL_PACK = []  # @param {type:"raw"}
# latent ids such as [101, 2048], or words to search FEATURE_CATALOG's labels (e.g. "arithmetic"),
# or [] for both: choose PACK_SIZE latents each on N_SELECT problems of the selection split
FEATURE_CATALOG = ""  # @param {type:"string"}
MAX_NEW_TOKENS = 320  # @param {type:"integer"}
BATCH_SIZE = 8  # @param {type:"integer"}
DEVICE = ""  # @param {type:"string"}
HF_REPO = ""  # @param {type:"string"}
HF_PRIVATE = True  # @param {type:"boolean"}
# HF_REPO "<user>/<name>" uploads g1_report.json and g1_scatter.png there with your HF_TOKEN write secret;
# empty: no upload. A new repo is private unless HF_PRIVATE = False.
OUTPUT_DIR = "outputs/11_stage_gate_g1"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
import textwrap

from shared import hub
from shared.evals import gates
from shared.notebook.parameters import check_parameters
from shared.notebook.rules import common, evals, features, saes
from shared.notebook.run import start
from shared.recipes import sae_source
from shared.views import plots

# checked by these rule families (shared/notebook/rules/); a bad value stops here with one line, before any download
P = check_parameters(globals(), common, saes, features, evals)
run = start(P)  # makes OUTPUT_DIR, seeds everything, says where it runs

# %% [markdown]
# ## 1. The problems
#
# `N_EVAL` problems of the held-out split (GSM8K *test*, shuffled with `SEED`); when the packs are
# chosen here, `N_SELECT` more from the other split (GSM8K *train*). The two must share no question.

# %%
eval_problems = gates.load_problems(PROBLEMS, N_EVAL, split="test", seed=SEED)
choose_packs = HELPFUL_PACK == [] and HARMFUL_PACK == []
select_problems = gates.load_problems(PROBLEMS, N_SELECT, split="train", seed=SEED) if choose_packs else []
disjoint = gates.check_disjoint(select_problems, eval_problems) if choose_packs else None
print(f"{len(eval_problems)} evaluation problems ({PROBLEMS} test)"
      + (f", {len(select_problems)} selection problems ({PROBLEMS} train): no question in both, checked"
         if choose_packs else "; packs given, no selection split"))
print("example:", textwrap.shorten(eval_problems[0]["question"], 150), "->", eval_problems[0]["gold"])

# %% [markdown]
# ## 2. The model and its SAE
#
# Gated models (Gemma, Llama) need an `HF_TOKEN` secret. The SAE must read the residual stream of
# `LAYER` of this model (its width is checked against the model's).

# %%
model, tokenizer = run.load_model()
layer = P.one_layer()
sae, sae_repo = sae_source.sae_for_notebook(P, model, tokenizer, layer, run.out_dir)

# %% [markdown]
# ## 3. The feature packs
#
# Given ids or catalog labels are used as they are. Otherwise the model answers the selection
# problems, each response is read by the SAE, and per latent Welch's t compares its mean activation
# on right vs wrong responses: the `PACK_SIZE` most positive t form the helpful pack, the most
# negative the harmful one.

# %%
selection = {}
if choose_packs:
    _, sel_right, sel_means, _ = gates.answer_and_read(model, tokenizer, sae, layer, select_problems, source=RESPONSES,
                                                       max_new_tokens=MAX_NEW_TOKENS, batch_size=BATCH_SIZE)
    helpful, harmful, selection = gates.select_packs(sel_means, sel_right, PACK_SIZE)
    pack_source = f"selected on {N_SELECT} {PROBLEMS} train problems (disjoint from the evaluation set)"
    print(f"selection split: {sum(sel_right)}/{len(sel_right)} right")
else:
    helpful, harmful, pack_source = gates.given_packs(HELPFUL_PACK, HARMFUL_PACK, FEATURE_CATALOG, PACK_SIZE)
helpful, harmful = gates.check_packs(helpful, harmful, sae.cfg.d_sae)
print(f"helpful pack {helpful}\nharmful pack {harmful}\n({pack_source})")

# %% [markdown]
# ## 4. Answer the evaluation problems and score them
#
# Greedy responses, the final-answer rule, and R_mech over each response's own tokens (the prompt is
# read as context but not scored).

# %%
scored, _, means, counts = gates.answer_and_read(model, tokenizer, sae, layer, eval_problems, source=RESPONSES,
                                                 max_new_tokens=MAX_NEW_TOKENS, batch_size=BATCH_SIZE)
rows = gates.g1_rows(eval_problems, scored, gates.r_mech(means, helpful, harmful), counts)
for r in rows[:5]:
    print(f"{'right' if r['correct'] else 'wrong'} | gold {r['gold']} | predicted {r['predicted']} | "
          f"R_mech {r['r_mech']} | {textwrap.shorten(' '.join(r['response'].split()), 80)}")

# %% [markdown]
# ## 5. The verdict
#
# Spearman ρ between R_mech and correctness (1 right, 0 wrong). PASS when ρ ≥ 0.30 and p < 0.05 (the
# two-sided p-value of ρ = 0, `p_value_test` in the report).
# When every answer is right, or every one wrong, ρ is undefined: the gate fails and says why.

# %%
report = gates.g1_report(rows, model=MODEL_ID, layer=layer, sae=sae_repo, helpful_pack=helpful,
                         harmful_pack=harmful, pack_source=pack_source, selection_split_disjoint=disjoint,
                         dataset=PROBLEMS, eval_split="test", selection_split="train" if choose_packs else None,
                         n_select=len(select_problems), selection=selection, responses=RESPONSES,
                         prompt_format=scored[0]["prompt_format"], max_new_tokens=MAX_NEW_TOKENS)
print(f"accuracy {report['accuracy']:.0%} on {report['n_eval']} problems | {report['reason']}")
scatter_path = run.save_figure(plots.plot_g1_scatter(rows, report["rho"], report["p_value"], report["pass"],
                                                     title=f"Stage Gate G1: {MODEL_ID} L{layer}"), "g1_scatter.png")

# %% [markdown]
# ## 6. The report
#
# `g1_report.json`: the verdict, the packs and where they came from, and every problem's row
# (question, gold, response, predicted answer, right or wrong, R_mech). With `HF_REPO` set and an
# `HF_TOKEN` write secret, the report and the scatter plot go to that repo (created private unless
# `HF_PRIVATE = False`); a failed upload is printed and recorded in `upload.json`, and the files stay
# in `OUTPUT_DIR`. Nothing is uploaded when `HF_REPO` is empty.

# %%
report_path = run.write_report("g1_report.json", report)
upload = hub.upload_files([report_path, scatter_path], hub.hub_repo_id(HF_REPO), private=HF_PRIVATE,
                          path_in_repo="stage_gate_g1")
run.write_report("upload.json", {"hub": upload})
