"""What the trainer's memory is sized by, in plain arithmetic (no torch): the share of a GPU's memory a run
may fill, the dense tensors an SAE step holds, and the budget of the activation buffer under
BLOCK_BATCHES = "auto". The trainer's buffer (`buffer`) and the tier planner (`planning.memory`, whose
memory model counts the same terms) read the one copy here."""
from __future__ import annotations

USABLE_FRACTION = 0.90  # of the memory torch reports per GPU; the rest is left to allocator fragmentation and
#                         cuBLAS workspaces (the CUDA context is counted apart, inside the 90 %)
SAE_ACT_COPIES = 3  # dense [batch, d_sae] fp32 tensors alive in an SAE step: pre-acts, their grad, top-k scratch
BUFFER_MEMORY_FRACTION = 0.5  # BLOCK_BATCHES="auto": the share of the free memory (less the step's needs) it takes
AUTO_BLOCK_BATCHES = 128  # BLOCK_BATCHES="auto" never goes above this many forwards per block


def buffer_budget_bytes(free: float, reserve: float, total: float, fraction: float = BUFFER_MEMORY_FRACTION) -> int:
    """Bytes BLOCK_BATCHES = "auto" lets the activation buffer take: `fraction` of the free memory less
    the training steps' `reserve` (step_reserve_gib) and the (1 - USABLE_FRACTION) of the device's `total`
    kept for fragmentation. The one formula buffer.activation_blocks and the tier planner share."""
    return max(0, int(fraction * (free - reserve - (1 - USABLE_FRACTION) * total)))
