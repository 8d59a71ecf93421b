"""The tier notebooks, as a user runs them: killed mid-training (SIGKILL to papermill and its kernel),
run again in the same folder, they end with the same exported SAEs as a run never interrupted.
01 (one layer), 02 (the hybrid qwen3_5 family) and 03 (three layers fed by one forward, a
three-source mix)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import build_notebooks as bn
from conftest import REPO

# notebook id -> smoke parameters changed for this test: tokens enough that the kill lands mid-training
# (a tiny model trains 40k tokens faster than a loaded machine's poll can follow the checkpoints), and 03's
# "auto" buffer would hold the whole short run in one block, leaving no checkpoint to kill between
NOTEBOOKS = {"01_hobbyist_gemma2_2b_colab": {"TOTAL_TOKENS": 80_000},
             "02_explorer_qwen35_4b_kaggle": {"TOTAL_TOKENS": 200_000},
             "03_papergrade_qwen36_27b_cloud": {"TOTAL_TOKENS": 200_000, "BLOCK_BATCHES": 8}}


def _papermill(nb: Path, run_dir: Path, params: dict, env: dict) -> subprocess.Popen:
    args = [sys.executable, "-m", "papermill", str(nb), str(run_dir / "executed.ipynb"), "--cwd", str(run_dir),
            "-k", "python3", "--no-progress-bar"]
    for name, value in params.items():
        args += ["-y", json.dumps({name: value})]
    # A new session, so the kill reaches the kernel papermill started as well.
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _export_weights(run_dir: Path, params: dict) -> dict[str, torch.Tensor]:
    """Every exported SAE's tensors, keyed "<layer>/<tensor>"."""
    layers = params["LAYER"] if isinstance(params["LAYER"], list) else [params["LAYER"]]
    out = {}
    for layer in layers:
        folder = run_dir / params["OUTPUT_DIR"] / "export" / f"blocks.{layer}.hook_resid_post"
        out.update({f"{layer}/{k}": v for k, v in load_file(str(folder / "sae_weights.safetensors")).items()})
    return out


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("notebook_id", list(NOTEBOOKS))
def test_killed_notebook_resumes_to_the_uninterrupted_sae(notebook_id, tmp_path):
    entry = next(e for e in bn.load_catalog(REPO) if e.id == notebook_id)
    nb = tmp_path / f"{notebook_id}.ipynb"  # the rendered notebook, alone, outside the repository
    nb.write_text(bn.render_entry(REPO, entry, bn.load_settings(REPO)), encoding="utf-8")
    params = {**entry.smoke, **NOTEBOOKS[notebook_id]}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", SAE_LADDER_CORE_DIR=str(tmp_path / "core"),
               OMP_NUM_THREADS="1")

    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    clean_dir.mkdir()
    killed_dir.mkdir()
    proc = _papermill(nb, clean_dir, params, env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]

    proc = _papermill(nb, killed_dir, params, env)
    checkpoints = killed_dir / "checkpoints" / params["RUN_NAME"]
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        # the first checkpoint: on a loaded machine this poll can lag by seconds, and the kill must
        # still land well before the run's last checkpoint
        if list(checkpoints.glob("step-*/manifest.json")):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the notebook finished before it could be killed"
    assert not (killed_dir / params["OUTPUT_DIR"] / "run_report.json").exists()

    proc = _papermill(nb, killed_dir, params, env)  # the user's fix: run it again
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    report = json.loads((killed_dir / params["OUTPUT_DIR"] / "run_report.json").read_text())
    assert report["resumed_from"], "the second run did not resume from the checkpoint"
    # The metrics log lives beside the checkpoints, so the curves span the whole run, once each.
    log = [json.loads(line) for line in (checkpoints / "metrics.jsonl").read_text().splitlines()]
    tokens = [entry["tokens"] for entry in log]
    assert tokens == sorted(set(tokens)) and tokens[0] < report["resumed_from"] < tokens[-1]

    clean, resumed = _export_weights(clean_dir, params), _export_weights(killed_dir, params)
    assert clean.keys() == resumed.keys()
    for name in clean:
        assert torch.equal(clean[name], resumed[name]), f"{name} differs between the resumed and the clean run"


@pytest.mark.notebook
@pytest.mark.slow
def test_kaggle_run_with_hf_username_killed_and_resumed_in_a_new_folder(tmp_path):
    """Notebook 01 as on Kaggle (KAGGLE_KERNEL_RUN_TYPE set) with HF_USERNAME and CHECKPOINT_DIR "auto",
    the real huggingface_hub client against a local Hub (HF_ENDPOINT): the checkpoints go to the private
    repo <user>/<RUN_NAME>-checkpoints; killed after the first one lands there, the notebook run again in
    an empty folder (a new session) resumes from the Hub, verifies the replayed stream, ends with the
    SAE of a run never interrupted, and uploads it to <user>/<RUN_NAME> (HF_REPO empty)."""
    from fake_hub import LocalHub

    notebook_id = "01_hobbyist_gemma2_2b_colab"
    entry = next(e for e in bn.load_catalog(REPO) if e.id == notebook_id)
    nb = tmp_path / f"{notebook_id}.ipynb"
    nb.write_text(bn.render_entry(REPO, entry, bn.load_settings(REPO)), encoding="utf-8")
    params = {**entry.smoke, **NOTEBOOKS[notebook_id]}
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base_env.update(MPLBACKEND="Agg", SAE_LADDER_CORE_DIR=str(tmp_path / "core"), OMP_NUM_THREADS="1")
    clean_dir, first, second = tmp_path / "clean", tmp_path / "session1", tmp_path / "session2"
    for d in (clean_dir, first, second):
        d.mkdir()
    proc = _papermill(nb, clean_dir, params, {**base_env, "HF_HUB_OFFLINE": "1"})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]

    token = "hf_aliceWriteTokenNeverPrinted"
    ckpt_repo, export_repo = f"alice/{params['RUN_NAME']}-checkpoints", f"alice/{params['RUN_NAME']}"
    with LocalHub({token: ("alice", "write")}) as hub:
        env = {k: v for k, v in base_env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=token, KAGGLE_KERNEL_RUN_TYPE="Interactive")
        kaggle = {**params, "HF_USERNAME": "alice", "CHECKPOINT_DIR": "auto"}
        proc = _papermill(nb, first, kaggle, env)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if any(p.endswith("/manifest.json") for p in hub.files(ckpt_repo)):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the notebook finished before it could be killed"
        assert hub.repos[ckpt_repo]["private"] is True and not list(first.glob("checkpoints/*"))

        proc = _papermill(nb, second, kaggle, env)  # a new session: an empty folder, the Hub alone
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        uploaded = hub.files(export_repo)
        assert hub.repos[export_repo]["private"] is True
    report = json.loads((second / params["OUTPUT_DIR"] / "run_report.json").read_text())
    assert report["checkpoint_dir"] == f"hf:{ckpt_repo}" and report["resumed_from"]
    assert report["resume"]["replay"]["verified"] is True and report["resume"]["stream_changes"] == []
    assert f"blocks.{params['LAYER']}.hook_resid_post/sae_weights.safetensors" in uploaded
    (entry_report,) = report["hub"].values()
    assert entry_report["ok"] is True and entry_report["repo"] == export_repo
    assert token not in json.dumps(report) and token not in (second / params["OUTPUT_DIR"] / "run_report.json").read_text()

    clean, resumed = _export_weights(clean_dir, params), _export_weights(second, params)
    assert clean.keys() == resumed.keys()
    for name in clean:
        assert torch.equal(clean[name], resumed[name]), f"{name} differs between the resumed and the clean run"
