"""One optimiser step of one SAE (`sae_step`: forward, backward, the architecture's constraints, Adam,
dead-latent tracking), the trainer's optimiser (`adam`, fused) and loading its state from a checkpoint."""
from __future__ import annotations

import contextlib

import torch


def adam(params, lr: float, betas=(0.9, 0.999), device=None, eps: float = 1e-8) -> torch.optim.Adam:
    """The trainer's optimiser: Adam, fused on CPU / CUDA (one kernel per parameter; same update up to
    float rounding as torch's default for-loop Adam, about 2x faster on CPU, deterministic)."""
    device = torch.device(device) if device is not None else None
    fused = device is not None and device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=fused or None)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """optimizer.load_state_dict plus a shape check torch does not make (fused Adam would walk a
    transposed moment as flat memory without complaint). Checkpoints written before the encoder
    was held latent-major carry its Adam moments as [d_in, d_sae]: those are transposed in place."""
    optimizer.load_state_dict(state)
    for param, param_state in optimizer.state.items():
        for key, value in param_state.items():
            if not torch.is_tensor(value) or value.ndim == 0 or value.shape == param.shape:
                continue
            if value.ndim == 2 and value.shape == param.shape[::-1]:
                param_state[key] = value.t().contiguous()
            else:
                raise ValueError(f"The checkpoint's optimizer state {key!r} has shape {tuple(value.shape)} for a "
                                 f"parameter of shape {tuple(param.shape)}: it belongs to another SAE; resume with "
                                 "the same settings or start in a new checkpoint_dir.")



def _autocast(device: torch.device, enabled: bool):
    """bf16 autocast on GPUs that have bf16 (the matmuls run in bf16, weights and Adam stay fp32);
    off on CPU and on fp16-only GPUs such as the T4, where fp16 would need loss scaling. (torch's plain
    is_bf16_supported() says True on a T4 too, counting its slow emulated bf16: not counted here.)"""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sae_step(sae, optimizer, x: torch.Tensor, lr: float | None = None, *, autocast: bool = True,
             dead_mask: torch.Tensor | None = None, check_finite: bool = True) -> dict[str, torch.Tensor]:
    """One optimiser step of one SAE on rows x: forward (AuxK on dead_mask, default the SAE's own
    tokens-since-fired tracking), backward, the architecture's gradient constraint (decoder-parallel
    part removed), Adam, its weight constraint (decoder rows back to unit norm), dead tracking
    updated. Logs each named loss term of the architecture beside fvu and aux as "<name>_loss". Returns 0-dim metric tensors (read them only when
    logging: turning them into floats every step would stall a GPU on each one). check_finite=False for
    rows checked already (the trainer's, at capture): the NaN/inf check is a host sync."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    with _autocast(x.device, autocast):
        out = sae(x, dead_mask=sae.dead_mask() if dead_mask is None else dead_mask, check_finite=check_finite)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if sae.reducer is not None:
        sae.reducer.sum_grads(sae)  # every rank's share of the batch's gradient
    sae.constrain_grads()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # free the gradients now: with several SAEs only one holds them at a time
    sae.constrain_weights()
    dead = sae.update_dead_tracking(out.latent_idx, x.shape[0], out.latent_vals)
    named = {f"{name}_loss": term.detach() for name, term in out.losses.items() if name not in ("fvu", "aux")}
    return {"loss": out.loss.detach(), "fvu": out.fvu.detach(), "l0": out.l0, "aux_loss": out.aux_loss.detach(),
            **named, "dead_pct": 100.0 * dead.float().mean()}
