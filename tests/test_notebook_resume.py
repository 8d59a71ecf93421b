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
