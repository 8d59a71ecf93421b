"""Write the legacy fixture: a checkpoint and an SAELens export made by the core as it was before the
core's second shape (issue 22), so tests/test_legacy.py can prove a checkpoint and an export written by
that code still resume and load, with the same results. Run once from the repo root (it is committed with
its output; rerunning it with a later core would defeat its purpose):

    PYTHONPATH=. python tests/data/legacy/make_fixture.py

CPU, one thread: the test replays it bitwise under the same conditions."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import torch
from safetensors.torch import save_file

from shared.models import load_model
from shared.train import TrainConfig, train, train_tiny_sae

HERE = Path(__file__).resolve().parent
RUN = dict(model_id="tiny:gpt2", layers=[1, 3], sae=dict(d_sae=128, k=8, dead_tokens_threshold=1500),
           total_tokens=4000, batch_tokens=256, context_len=32, model_batch_size=8, block_batches=4,
           warmup_steps=5, checkpoint_every_tokens=2000, checkpoint_every_minutes=None, keep_checkpoints=10)


def main() -> None:
    torch.set_num_threads(1)
    for old in ("checkpoint", "export", "run.json", "final_saes.safetensors", "encodings.safetensors"):
        target = HERE / old
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    work = HERE / "_work"
    shutil.rmtree(work, ignore_errors=True)
    result = train(TrainConfig(**RUN, checkpoint_dir=str(work / "ck")), progress=False)
    first = sorted(p for p in (work / "ck").iterdir() if p.is_dir() and p.name.startswith("step-"))[0]
    shutil.copytree(first, HERE / "checkpoint" / first.name)
    save_file({f"L{layer}.{name}": t.contiguous() for layer, sae in result.saes.items()
               for name, t in sae.state_dict().items()}, HERE / "final_saes.safetensors")
    model, tok = load_model("tiny:gpt2")
    folder = train_tiny_sae(model, tok, "tiny:gpt2", 1, "synthetic", work / "export", total_tokens=3000, d_sae=64,
                            k=4, context_len=32)
    shutil.copytree(folder, HERE / "export")
    x = torch.randn(16, model.config.n_embd, generator=torch.Generator().manual_seed(0))
    from shared.export import load_sae

    sae = load_sae(HERE / "export")
    save_file({"x": x, "z": sae.encode(x).contiguous(), "x_hat": sae.decode(sae.encode(x)).contiguous()},
              HERE / "encodings.safetensors")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    (HERE / "run.json").write_text(json.dumps({"run": RUN, "checkpoint": first.name, "written_by_commit": commit,
                                               "final_tokens": result.tokens}, indent=1))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
