"""The command line (`python -m shared.train`) with one rank made to fail, for tests/test_distributed.py: the
fault is injected here, from outside the trainer. Under torchrun:

    tests/dying_rank.py RANK STEP exit|hang --params ... (the rest as for python -m shared.train)

Rank RANK exits at step STEP as a crash would (exit), or stalls there forever as a wedged GPU would (hang).
"""
from __future__ import annotations

import os
import sys
import time

from shared.recipes import cli
from shared.training import trainer


def fail_at(rank: int, step: int, how: str) -> None:
    """Make the trainer's rank `rank` exit or stall when its loop reaches `step` (it asks lr_at for every step)."""
    lr_at = trainer.lr_at

    def dying(s: int, cfg, total_steps: int) -> float:
        if s == step and int(os.environ.get("RANK", "0")) == rank:
            while how == "hang":
                time.sleep(60)
            os._exit(1)
        return lr_at(s, cfg, total_steps)

    trainer.lr_at = dying


if __name__ == "__main__":
    rank, step, how, *argv = sys.argv[1:]
    fail_at(int(rank), int(step), how)
    cli.main(argv)
