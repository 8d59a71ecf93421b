"""The rules of training an SAE (01-03, 08-10, 12, 17; LR also the tuned lens's, 20): its width and k, the
token budget and batches, the learning-rate schedule, checkpoints and resume, and a k sweep's architectures."""
from __future__ import annotations

import numbers
import re

from ..parameters import NON_NEGATIVE, POSITIVE, Rule, distinct, flag, folder, number, repo_id, text, whole

# the architectures a k sweep trains: sweep.k_architectures(), written out so the parameter check does not
# vendor the SAE classes (tests/test_parameters.py keeps them equal)
SWEEP_ARCHITECTURES = ("batchtopk", "matryoshka_batchtopk", "topk")


def _k(v, ctx):
    k = whole(1)(v, ctx)
    d_sae = ctx.params.get("D_SAE")
    if isinstance(d_sae, int) and k > d_sae:
        raise ValueError(f"must be <= D_SAE ({d_sae}): an SAE cannot keep more latents than it has")
    return k


def _block_batches(v, ctx):
    return v if v == "auto" else whole(1, " or 'auto' (sized from free memory)")(v, ctx)


def _lr(v, ctx):
    if "OPTIMIZER" in ctx.params:  # the tuned lens: 0 picks the optimizer's own default
        return number(0.0, open_low=False, hint=" (0 = the optimizer's default)")(v, ctx)
    return number(0.0, hint=", e.g. 2e-4")(v, ctx)


def _lr_min(v, ctx):
    lr_min = number(0.0, open_low=False)(v, ctx)
    lr = ctx.params.get("LR")
    if isinstance(lr, numbers.Real) and lr_min > lr:
        raise ValueError(f"must be <= LR ({lr:g}): it is the floor the learning rate decays to")
    return lr_min


def _checkpoint_dir(v, ctx):
    text()(v, ctx)
    if v.startswith("hf:"):
        return "hf:" + repo_id(v[3:])
    return v if v == "auto" else folder(v, ctx)


def _run_name(v, ctx):
    text()(v, ctx)
    if "/" in v:
        raise ValueError("is a folder and repo name: leave out '/'")
    return repo_id(v)


def _hf_username(v, ctx):
    """A Hugging Face user (or organisation) name, or '' for none: it names the run's Hub repos."""
    text(empty_ok=True)(v, ctx)
    v = v.strip()
    if not v:
        return ""
    if "/" in v:
        raise ValueError("is your Hugging Face user name alone: leave out '/' (the checkpoints go to "
                         "<HF_USERNAME>/<RUN_NAME>-checkpoints)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
        raise ValueError("must be a Hugging Face user name: letters, digits, '-', '_' or '.', no spaces")
    run_name = ctx.params.get("RUN_NAME")
    if isinstance(run_name, str) and run_name.strip() and "/" not in run_name:
        repo_id(f"{v}/{run_name.strip()}-checkpoints")
    return v


def _architectures(v, ctx):
    if (isinstance(v, str) or not isinstance(v, (list, tuple)) or not v
            or not all(isinstance(s, str) and s.strip() for s in v)):
        raise ValueError("must be a non-empty list of architecture names, e.g. ['topk', 'batchtopk']")
    unknown = [a for a in v if a not in SWEEP_ARCHITECTURES]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not an architecture with a k to sweep: use "
                         f"{', '.join(map(repr, SWEEP_ARCHITECTURES))}")
    return distinct(list(v), "architecture")


def _k_values(v, ctx):
    if isinstance(v, (str, bool)) or not isinstance(v, (list, tuple)) or not v:
        raise ValueError("must be a non-empty list of k values, e.g. [16, 32, 64, 128]")
    return distinct([_k(k, ctx) for k in v], "k")


RULES: dict[str, Rule] = {
    # the SAE and its budget
    "D_SAE": POSITIVE, "K": _k,
    "TOTAL_TOKENS": POSITIVE, "BATCH_TOKENS": POSITIVE, "BLOCK_BATCHES": _block_batches,
    "LR": _lr, "LR_MIN": _lr_min, "WARMUP_STEPS": NON_NEGATIVE,
    "DEAD_TOKENS_THRESHOLD": POSITIVE, "VAL_TOKENS": POSITIVE,
    # checkpoints and resume
    "CHECKPOINT_DIR": _checkpoint_dir, "RUN_NAME": _run_name, "HF_USERNAME": _hf_username,
    "CHECKPOINT_EVERY_TOKENS": POSITIVE,
    "CHECKPOINT_EVERY_MINUTES": number(0.0, hint=" (minutes a crash may lose)"),
    "ALLOW_UNRESUMABLE": flag, "ALLOW_STREAM_CHANGE": flag,
    # a k sweep of SAE architectures at one layer (12)
    "ARCHITECTURES": _architectures, "K_VALUES": _k_values,
}
