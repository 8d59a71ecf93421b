"""The command line (`python -m shared.train`) with one rank made to fail, for tests/test_distributed.py: the
fault is injected here, from outside the trainer. Under torchrun (or alone, as rank 0):

    tests/dying_rank.py RANK STEP exit|hang|overflow|diverge --params ... (the rest as for python -m shared.train)

When its loop reaches step STEP, rank RANK exits as a crash would (exit), stalls forever as a wedged GPU
would (hang), runs its forwards from then on through a model that overflows float16 (overflow: its first
decoder block's output times 1e30; the ranks' forwards are shared out, so only that rank's share of each
block overflows), or takes that step with a NaN learning rate (diverge: the SAEs' weights turn NaN there).
Every rank whose training raises writes the error's text to error-rank<R>.txt in the working directory;
an overflow also writes planted.json: the stream index of the first overflowing forward (a fresh run:
rank + world * forwards that rank ran before it) and the steps trained before it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from shared.recipes import cli
from shared.training import trainer

RANK = int(os.environ.get("RANK", "0"))
WORLD = int(os.environ.get("WORLD_SIZE", "1"))


def fail_at(rank: int, step: int, how: str) -> None:
    """Make the trainer's rank `rank` fail as `how` says when its loop reaches `step` (it asks lr_at for every
    step)."""
    lr_at, prepare, train = trainer.lr_at, trainer._prepare_model, trainer.train
    reached = []  # the steps this rank has begun

    def dying(s: int, cfg, total_steps: int) -> float:
        reached.append(s)
        if s == step and RANK == rank:
            if how == "diverge":
                return float("nan")
            while how == "hang":
                time.sleep(60)
            if how == "exit":
                os._exit(1)
        return lr_at(s, cfg, total_steps)

    def overflowing(cfg, model, tokenizer):
        model, tokenizer = prepare(cfg, model, tokenizer)
        forwards = []

        def hook(module, args, out):
            forwards.append(len(reached))
            if reached and reached[-1] >= step:
                if not Path("planted.json").exists():
                    index = RANK + WORLD * (len(forwards) - 1)
                    Path("planted.json").write_text(json.dumps({"source_batch": index, "steps": len(reached)}))
                return (out[0] * 1e30, *out[1:]) if isinstance(out, tuple) else out * 1e30
            return out

        if RANK == rank:
            from shared.model.layout import decoder_layers

            decoder_layers(model)[0].register_forward_hook(hook)
        return model, tokenizer

    def recorded(*args, **kw):
        try:
            return train(*args, **kw)
        except Exception as e:
            Path(f"error-rank{RANK}.txt").write_text(f"{type(e).__name__}: {e}")
            raise

    trainer.lr_at, trainer.train = dying, recorded
    if how == "overflow":
        trainer._prepare_model = overflowing


if __name__ == "__main__":
    rank, step, how, *argv = sys.argv[1:]
    fail_at(int(rank), int(step), how)
    cli.main(argv)
