"""Write the legacy crosscoder fixture: a checkpoint written mid-run by the crosscoder's own training loop
(`crosscoder.train_crosscoder`, which notebook 17 called until the crosscoder trained through the one
trainer, issue 22 item 3) and the weights that same run ends with, uninterrupted, so tests/test_legacy.py
can prove today's trainer resumes what notebook 17's users hold. Run once from the repo root (committed
with its output; the old loop is gone from today's core, so it runs the core as it was at COMMIT):

    PYTHONPATH=. python tests/data/legacy/make_crosscoder_fixture.py

It unpacks `shared/` at COMMIT (git archive) into a temporary folder and runs this file again there
(`--old`), with that folder first on PYTHONPATH, so `shared` is the old core. CPU, one thread: the test
replays it bitwise under the same conditions.

Writes crosscoder/checkpoint/step-*/ (the run's first checkpoint, mid-run), crosscoder/run.json (the
settings, the commit, the checkpoints the run wrote and its logged history) and crosscoder_final.safetensors
(the crosscoder's state_dict at the run's end)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMIT = "35ac0ae1b22a67f96f39ddbe4ef18185814429de"  # main before the package move: train_crosscoder in shared/crosscoder.py
MODEL_ID = "tiny:gpt2"
CROSSCODER = dict(layers=[1, 2, 3], d_sae=64, k=4, dead_tokens_threshold=1500)
RUN = dict(total_tokens=4000, dataset="synthetic", context_len=32, batch_tokens=256, model_batch_size=8,
           block_batches=4, warmup_steps=5, seed=0, log_every=2, checkpoint_every_tokens=2000, keep_checkpoints=10)


def train_with_old_core(work: Path) -> None:
    """(Run under the old core.) Train with checkpoints in work/ck; the final weights to work/final.safetensors."""
    import random

    import numpy
    import torch
    from safetensors.torch import save_file

    from shared.crosscoder import CrosscoderConfig, train_crosscoder
    from shared.models import load_model

    torch.set_num_threads(1)
    random.seed(0)  # as notebook 17 seeds every generator, so the checkpoint's saved RNG states are the same each time
    numpy.random.seed(0)
    model, tokenizer = load_model(MODEL_ID)
    result = train_crosscoder(model, tokenizer, CrosscoderConfig(**CROSSCODER), **RUN,
                              checkpoint_dir=str(work / "ck"), progress=False)
    save_file({name: t.contiguous() for name, t in result.crosscoder.state_dict().items()},
              work / "final.safetensors")
    (work / "result.json").write_text(json.dumps({"final_tokens": result.tokens, "history": result.history}))


def main() -> None:
    for old in ("crosscoder", "crosscoder_final.safetensors"):
        target = HERE / old
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = subprocess.run(["git", "archive", COMMIT, "shared"], capture_output=True, check=True, cwd=HERE.parents[2]).stdout
        (tmp / "old.tar").write_bytes(archive)
        with tarfile.open(tmp / "old.tar") as tar:
            tar.extractall(tmp / "core", filter="data")
        env = {**os.environ, "PYTHONPATH": str(tmp / "core")}
        subprocess.run([sys.executable, __file__, "--old", str(tmp / "work")], check=True, env=env, cwd=tmp)
        work = tmp / "work"
        steps = sorted(p for p in (work / "ck").iterdir() if p.is_dir() and p.name.startswith("step-"))
        middle = steps[0]  # the first checkpoint, mid-run (the last one is the run's end)
        shutil.copytree(middle, HERE / "crosscoder" / "checkpoint" / middle.name)
        shutil.copy(work / "final.safetensors", HERE / "crosscoder_final.safetensors")
        result = json.loads((work / "result.json").read_text())
    (HERE / "crosscoder" / "run.json").write_text(json.dumps(
        {"model_id": MODEL_ID, "crosscoder": CROSSCODER, "run": RUN, "checkpoint": middle.name,
         "checkpoints_written": [p.name for p in steps], "written_by_commit": COMMIT,
         "final_tokens": result["final_tokens"], "history": result["history"]}, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--old"]:
        train_with_old_core(Path(sys.argv[2]))
    else:
        main()
