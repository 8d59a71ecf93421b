"""Held-out validation of trained SAEs: reconstruction, sparsity, and what splicing costs the model.

For each SAE, on tokens the training never saw: FVU / variance explained, L0, latents alive,
and the next-token CE loss with the SAE's reconstruction spliced into the model at its layer,
compared with the clean model and with the layer zero-ablated (CE loss recovered), plus the KL
from the clean next-token distribution. `val_report.json` keeps the originals' shape
(``{"<layer>": {var_expl, l0, alive, dead_pct, ...}}``) and adds these fields.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F

from .capture import token_mask
from .intervene import edit_residual, keep_positions
from .models import model_device

_CHUNK_TOKENS = 4096


@dataclass
class _LayerTally:
    """Running sums for one SAE, so the report is exact over any number of batches."""

    d_sae: int
    tokens: int = 0
    sq_err: float = 0.0
    sum_x: torch.Tensor | None = None
    sum_sq_norm: float = 0.0
    l0_sum: float = 0.0
    fire_counts: torch.Tensor | None = None
    ce_spliced: float = 0.0
    kl_spliced: float = 0.0
    ce_zero: float = 0.0
    predictions: int = 0
    extra: dict = field(default_factory=dict)


def reconstruct(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAE reconstruction of rows x [N, d_in], in chunks; -> (x_hat, L0 per row, firing count per latent)."""
    sae_device = next(sae.parameters()).device
    x_hats, l0s = [], []
    counts = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=sae_device)
    for chunk in x.split(_CHUNK_TOKENS):
        z = sae.encode(chunk.to(sae_device, torch.float32))
        active = z > 0
        counts += active.sum(0)
        l0s.append(active.sum(-1).float())
        x_hats.append(sae.decode(z).to(x.device))
    return torch.cat(x_hats), torch.cat(l0s), counts


def next_token_sums(logits: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor,
                    reference: torch.Tensor | None = None, chunk: int = 128) -> tuple[float, float, int]:
    """(summed CE of predicting token t+1 at t, summed KL(reference || logits), predictions counted)
    over targets `keep` marks; log-softmax runs on `chunk` positions at a time, so a 256k-token
    vocabulary never needs a float32 copy of the whole [batch, seq, vocab] logits."""
    targets, target_keep = input_ids[:, 1:], keep[:, 1:].float()
    ce = kl = 0.0
    for start in range(0, targets.shape[1], chunk):
        end = min(start + chunk, targets.shape[1])
        logp = F.log_softmax(logits[:, start:end].float(), dim=-1)
        mask = target_keep[:, start:end]
        ce += (-logp.gather(-1, targets[:, start:end, None]).squeeze(-1) * mask).sum().item()
        if reference is not None:
            ref = F.log_softmax(reference[:, start:end].float(), dim=-1)
            kl += ((ref.exp() * (ref - logp)).sum(-1) * mask).sum().item()
    return ce, kl, int(target_keep.sum())


@torch.no_grad()
def evaluate_saes(
    model,
    tokenizer,
    saes: Mapping[int, torch.nn.Module],
    token_batches: Iterable[torch.Tensor],
    *,
    max_batches: int | None = None,
    sparsity: dict | None = None,
    forward_batch_size: int = 2,
) -> dict[str, dict]:
    """Validate each SAE (keyed by layer) on the given held-out token batches; returns the report dict.

    Pass a dict as `sparsity` to receive {layer: log10 firing frequency per latent} (the tensor
    SAELens keeps in sparsity.safetensors and feature dashboards sort by). The model runs on
    `forward_batch_size` contexts at a time (full logits of a 256k vocabulary are large).
    """
    if not saes:
        raise ValueError("no SAEs to evaluate: pass a dict {layer: sae}")
    device = model_device(model)
    tallies = {layer: _LayerTally(d_sae=sae.cfg.d_sae) for layer, sae in saes.items()}
    clean_ce, clean_predictions, n_batches = 0.0, 0, 0
    captured: dict[int, torch.Tensor] = {}

    def recorder(layer):
        def record(hidden):
            captured[layer] = hidden.detach()
            return hidden
        return record

    for batch in token_batches:
        if max_batches is not None and n_batches >= max_batches:
            break
        n_batches += 1
        for input_ids in batch.split(forward_batch_size):
            input_ids = input_ids.to(device)
            keep = token_mask(input_ids, tokenizer)
            with edit_residual(model, {layer: recorder(layer) for layer in saes}):
                clean_logits = model(input_ids).logits
            ce, _, predictions = next_token_sums(clean_logits, input_ids, keep)
            clean_ce += ce
            clean_predictions += predictions

            for layer, sae in saes.items():
                tally = tallies[layer]
                hidden = captured[layer]
                x = hidden[keep].float()
                if not torch.isfinite(x).all():
                    raise ValueError(f"NaN/inf activations at layer {layer}: check the model dtype (try float32)")
                x_hat, l0, counts = reconstruct(sae, x)
                tally.tokens += x.shape[0]
                tally.sq_err += (x - x_hat).pow(2).sum().item()
                sx = x.sum(0).double().cpu()
                tally.sum_x = sx if tally.sum_x is None else tally.sum_x + sx
                tally.sum_sq_norm += x.double().pow(2).sum().item()
                tally.l0_sum += l0.sum().item()
                counts = counts.cpu()
                tally.fire_counts = counts if tally.fire_counts is None else tally.fire_counts + counts

                spliced = hidden.clone()
                spliced[keep] = x_hat.to(spliced.dtype)
                with edit_residual(model, {layer: keep_positions(lambda h, s=spliced: s, keep)}):
                    logits = model(input_ids).logits
                ce, kl, predictions = next_token_sums(logits, input_ids, keep, reference=clean_logits)
                tally.ce_spliced += ce
                tally.kl_spliced += kl
                del logits

                with edit_residual(model, {layer: keep_positions(torch.zeros_like, keep)}):
                    logits = model(input_ids).logits
                tally.ce_zero += next_token_sums(logits, input_ids, keep)[0]
                tally.predictions += predictions
                del logits
            captured.clear()

    if n_batches == 0:
        raise ValueError("evaluation got no token batches: check the validation data source")

    report = {}
    ce_clean = clean_ce / max(clean_predictions, 1)
    for layer, tally in tallies.items():
        total_var = tally.sum_sq_norm - (tally.sum_x.pow(2).sum().item() / max(tally.tokens, 1))
        fvu = tally.sq_err / max(total_var, 1e-12)
        alive = int((tally.fire_counts > 0).sum())
        if sparsity is not None:
            sparsity[layer] = torch.log10(tally.fire_counts.double() / max(tally.tokens, 1) + 1e-10).float()
        ce_spliced = tally.ce_spliced / max(tally.predictions, 1)
        ce_zero = tally.ce_zero / max(tally.predictions, 1)
        denom = ce_zero - ce_clean
        report[str(layer)] = {
            "var_expl": 1.0 - fvu,
            "fvu": fvu,
            "mse": tally.sq_err / max(tally.tokens, 1),
            "l0": tally.l0_sum / max(tally.tokens, 1),
            "alive": alive,
            "dead_pct": 100.0 * (1 - alive / tally.d_sae),
            "d_sae": tally.d_sae,
            "ce_loss_clean": ce_clean,
            "ce_loss_spliced": ce_spliced,
            "ce_loss_zero_ablation": ce_zero,
            "ce_loss_recovered": (ce_zero - ce_spliced) / denom if abs(denom) > 1e-9 else float("nan"),
            "kl_div_spliced": tally.kl_spliced / max(tally.predictions, 1),
            "eval_tokens": tally.tokens,
        }
    return report


def write_val_report(report: dict, path: str | Path, **extra) -> Path:
    """Write val_report.json: layers as the only top-level keys (as the originals' viewer reads it),
    with run details such as the model or tokens trained added to every layer's entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {layer: {**metrics, **extra} for layer, metrics in report.items()}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def summarize(report: dict) -> str:
    """One line per layer, for printing in a notebook."""
    lines = []
    for layer, r in sorted(report.items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"L{layer}: var_expl {r['var_expl']:.3f}  L0 {r['l0']:.1f}  alive {r['alive']}/{r['d_sae']} "
            f"(dead {r['dead_pct']:.1f}%)  CE clean {r['ce_loss_clean']:.3f} spliced {r['ce_loss_spliced']:.3f} "
            f"zero {r['ce_loss_zero_ablation']:.3f}  CE recovered {r['ce_loss_recovered']:.3f}  KL {r['kl_div_spliced']:.4f}"
        )
    return "\n".join(lines)
