"""Sessions end; a run's checkpoints must outlive them. Where CHECKPOINT_DIR = "auto" puts them, which
repo HF_USERNAME names, and the check that a run which cannot finish in one session has somewhere
to resume from, all before the model loads or anything is written.

CHECKPOINT_DIR = "auto" resolves to:
  - Colab: Google Drive (MyDrive/sae_ladder/<RUN_NAME>), which outlives the VM. If Drive is refused
    (the mount fails or is declined): the Hub repo below when HF_USERNAME is set, else one line
    saying what to do (training never starts on the VM's disk unasked).
  - Kaggle and any other machine (a rented GPU, a laptop): with HF_USERNAME, the private Hub repo
    `<HF_USERNAME>/<RUN_NAME>-checkpoints`, which any later session resumes from; without it,
    ./checkpoints/<RUN_NAME>, which dies with a Kaggle session: on Kaggle a run whose estimated time
    (planning's throughput model for the GPU found here) passes one 12 h session stops with one line
    saying how to make it resumable, unless ALLOW_UNRESUMABLE = True.
A Hub store is opened (probed) at once: a rejected token, a token that cannot write, or a repo under
another account stops here in one line (checkpoint.HFStore, hub.check_write_access).

The export repo (export_repo): HF_REPO "<user>/<name>" as given; a bare HF_REPO "<name>" under
HF_USERNAME (else under the token's account); HF_REPO empty: `<HF_USERNAME>/<RUN_NAME>` when
HF_USERNAME is set, else no upload. New repos are private unless HF_PRIVATE = False.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from .. import runtime
from ..planning import gpus, models, throughput

KAGGLE_SESSION_HOURS = 12.0  # Kaggle ends a notebook session (GPU or CPU) after 12 hours of running


class CannotResume(ValueError):
    """A run that could not keep its checkpoints past its session; str() is one line saying what to set."""


def checkpoint_repo(hf_username: str, run_name: str) -> str:
    """The private Hub repo HF_USERNAME gives a run's checkpoints."""
    return f"{hf_username}/{run_name}-checkpoints"


def export_repo(hf_repo: str, hf_username: str, run_name: str) -> str | None:
    """The repo the SAE is uploaded to (see the module docstring); None: no upload."""
    from ..hub import hub_repo_id

    repo = (hf_repo or "").strip().strip("/")
    user = (hf_username or "").strip()
    if not repo:
        return f"{user}/{run_name}" if user else None
    if "/" in repo or not user:
        return hub_repo_id(repo)
    return f"{user}/{repo}"


def resolve_checkpoint_dir(requested: str, run_name: str, *, hf_username: str = "") -> str:
    """Where checkpoints go: `requested` unless it is "auto" (see the module docstring for "auto")."""
    if requested and requested != "auto":
        return requested
    hub_dir = f"hf:{checkpoint_repo(hf_username, run_name)}" if hf_username else None
    where = runtime.platform()
    if where == "colab":
        try:
            drive = runtime.mount_drive()
        except runtime.DriveUnavailable as e:
            if hub_dir:
                print(f"{e}: checkpoints go to the private Hub repo {hub_dir[3:]} instead (HF_USERNAME).")
                return hub_dir
            raise CannotResume(
                f"{e}, and checkpoints on the VM's disk die with it: allow Drive access and run this cell "
                'again, or set HF_USERNAME = "<your Hugging Face user>" (with an HF_TOKEN write secret) to '
                'checkpoint into a private Hub repo, or set CHECKPOINT_DIR = "checkpoints" to keep them on '
                "this VM only.") from None
        return str(drive / "sae_ladder" / run_name)
    if hub_dir:
        return hub_dir
    local = str(Path("checkpoints") / run_name)
    if where == "kaggle":
        token = "" if runtime.hf_token() else " and add an HF_TOKEN write secret"
        print(f"Kaggle's disk does not outlive the session: checkpoints go to {local} for this session only; "
              f'to resume in a new session set HF_USERNAME = "<your Hugging Face user>"{token} '
              f'(checkpoints then go to the private repo <user>/{run_name}-checkpoints), or CHECKPOINT_DIR = '
              '"hf:<user>/<repo>".')
    return local


def estimated_hours(model_id: str, layers, d_sae: int, total_tokens: int, gpu: str | None = None) -> tuple[float, str] | None:
    """(hours, GPU class) a training run takes by planning's throughput model (plus its fixed set-up
    time) on `gpu` (a planning.gpus class; default: the one found here); None for a model the model
    does not know or a GPU it cannot place."""
    spec = models.MODELS.get(model_id)
    if spec is None:
        return None
    try:
        g = gpus.gpu_class(gpu or gpus.detect_gpu_class())
    except ValueError:
        return None
    tokens_per_s = throughput.tokens_per_second(spec, g, tuple(int(x) for x in layers), int(d_sae))
    return total_tokens / tokens_per_s / 3600 + throughput.SETUP_MINUTES / 60, g.name


def check_session(P: Mapping, checkpoint_dir: str, *, gpu: str | None = None) -> None:
    """On Kaggle with checkpoints on the session's own disk: stop (one line) when the estimate passes
    one session, unless ALLOW_UNRESUMABLE; elsewhere, or with a Hub store, nothing to check."""
    if runtime.platform() != "kaggle" or str(checkpoint_dir).startswith("hf:"):
        return
    layers = P["LAYER"] if isinstance(P["LAYER"], (list, tuple)) else [P["LAYER"]]
    estimate = estimated_hours(P["MODEL_ID"], layers, P["D_SAE"], P["TOTAL_TOKENS"], gpu)
    if estimate is None:
        print(f"No time estimate for {P['MODEL_ID']} here: if the run may pass Kaggle's {KAGGLE_SESSION_HOURS:g} h "
              'session, set HF_USERNAME = "<your Hugging Face user>" so the next session resumes.')
        return
    hours, gpu_name = estimate
    if hours <= KAGGLE_SESSION_HOURS:
        return
    what = (f"This run needs about {hours:.1f} h on {gpu_name} (the planner's throughput estimate), more than one "
            f"{KAGGLE_SESSION_HOURS:g} h Kaggle session, and its checkpoints in {checkpoint_dir} end with the session")
    if P.get("ALLOW_UNRESUMABLE"):
        print(f"{what}; training anyway (ALLOW_UNRESUMABLE = True): what is not done when the session ends is lost.")
        return
    raise CannotResume(f'{what}: set HF_USERNAME = "<your Hugging Face user>" (with an HF_TOKEN write secret) so '
                       "the next session resumes from a private Hub repo, or lower TOTAL_TOKENS, or set "
                       "ALLOW_UNRESUMABLE = True to train anyway.")


def checkpoint_dir(P: Mapping) -> str:
    """The tier notebooks' checkpoint place from their parameters: CHECKPOINT_DIR resolved (with
    HF_USERNAME), the session check, and a Hub store probed at once (one line if it cannot keep
    checkpoints). Runs before the model loads, so nothing is downloaded or written for nothing."""
    where = resolve_checkpoint_dir(P["CHECKPOINT_DIR"], P["RUN_NAME"], hf_username=P.get("HF_USERNAME") or "")
    check_session(P, where)
    from ..training import distributed

    if where.startswith("hf:") and distributed.launched_rank() == 0:  # under torchrun rank 0 probes for all
        from ..training import checkpoint as ckpt

        ckpt.open_store(where)  # creates the repo private when missing; raises one line when it cannot write
    return where
