"""When things happen in a training run: the learning rate at each step (`lr_at`: linear warm-up, cosine
decay to a floor) and when to checkpoint (`CheckpointClock`: every N tokens, and before M minutes of
training would go unsaved, at block boundaries; under torchrun rank 0's clock decides)."""
from __future__ import annotations

import math
import time

from .config import TrainConfig


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to the non-zero floor cfg.lr_min at the last step."""
    warmup = max(1, min(cfg.warmup_steps, total_steps // 10 or 1))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * progress))



def _clock() -> float:
    """Seconds on a monotonic clock: what the minutes cadence reads (tests replace it)."""
    return time.monotonic()


class CheckpointClock:
    """When to checkpoint: every `checkpoint_every_tokens` tokens, and before `checkpoint_every_minutes`
    of training would go unsaved, whatever the throughput (5.5k tokens/s or 100k).

    A checkpoint can only be exact at a block boundary (the buffer's state there is the forwards
    consumed, the block index and a carry of under one batch: the mid-block alternative would save
    the whole shuffled block). So the time rule saves at the last boundary before the limit: when
    the time since the last checkpoint plus the last block's duration reaches it. A crash then loses
    at most the limit, as long as a block takes less (a one-time notice says when one does not).
    Under torchrun every rank must save at the same step: rank 0's decision is broadcast."""

    def __init__(self, cfg: TrainConfig, tokens: int, *, group=None, speak: bool = True):
        self.every_tokens = cfg.checkpoint_every_tokens
        self.limit_s = None if cfg.checkpoint_every_minutes is None else 60.0 * cfg.checkpoint_every_minutes
        self.group, self.speak, self.warned = group, speak, False
        self.next_tokens = (tokens // self.every_tokens + 1) * self.every_tokens
        self.last_save = self.block_start = _clock()
        self.block_s = 0.0

    def block_started(self) -> None:
        self.block_start = _clock()

    def due(self, tokens: int) -> bool:
        """At a block's end: save now? (the same answer on every rank)"""
        now = _clock()
        self.block_s = now - self.block_start
        due = tokens >= self.next_tokens
        if self.limit_s is not None:
            due = due or now - self.last_save + self.block_s >= self.limit_s
            if self.block_s > self.limit_s and not self.warned and self.speak:
                self.warned = True
                print(f"A block of forwards takes {self.block_s / 60:.1f} min, longer than the "
                      f"{self.limit_s / 60:g} min checkpoint interval: a crash can lose one block; lower "
                      "BLOCK_BATCHES for a tighter bound.")
            if self.group is not None:
                due = bool(self.group.broadcast_object(due))
        return due

    def saved(self, tokens: int) -> None:
        self.next_tokens = (tokens // self.every_tokens + 1) * self.every_tokens
        self.last_save = _clock()
