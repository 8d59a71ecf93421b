"""Held-out validation of trained SAEs: reconstruction, sparsity, and what splicing costs the model.

For each SAE, on tokens the training never saw: FVU / variance explained, L0, latents alive,
and the next-token CE loss with the SAE's reconstruction spliced into the model at its layer,
compared with the clean model and with the layer zero-ablated (CE loss recovered), plus the KL
from the clean next-token distribution. `val_report.json` keeps the originals' shape
(``{"<layer>": {var_expl, l0, alive, dead_pct, ...}}``) and adds these fields.

Each layer also carries ``"saelens"``: the same quantities as `sae_lens.evals.run_evals` defines them
(ce_loss_score, kl_div_score, ...), which differ from ours in which positions count and what the
ablation zeroes; METRIC_DEFINITIONS says how each number is computed. The two are two metric sets,
`OurMetrics` and `SAELensMetrics`, fed by one pass over the held-out batches (`measure`: one clean
forward per chunk, edited forwards shared where both ask for the same); `evaluate_saes` runs both and
composes the report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F

from ..model.capture import dtype_advice, token_mask
from ..model.hooks import edit_residual, read_residuals
from ..model.intervene import keep_positions
from ..model.layout import model_device, resolve_layers

_CHUNK_TOKENS = 4096

# What each reported number means; val_report.json and the model card carry these lines. Every number is
# pooled over the evaluation tokens (sums over all batches, then one division), never a mean of batch means.
# "x": the residual rows the SAE reads (minus their mean over d_model for a release trained on TransformerLens'
# centred GPT-2, evaluate_saes(centre_input=True)); losses in nats (natural log).
METRIC_DEFINITIONS = {
    "var_expl": "1 - fvu (= SAELens explained_variance: 1 - E|x - x_hat|^2 / (E|x|^2 - |E x|^2))",
    "fvu": "sum|x - x_hat|^2 / sum|x - mean(x)|^2 over the non-special evaluation tokens (mean(x): their mean "
           "vector; the denominator sums the variance of every dimension)",
    "mse": "sum|x - x_hat|^2 / non-special evaluation tokens: squared error summed over d_in, averaged over "
           "tokens (= SAELens mse), in the residual's own units",
    "l0": "mean number of active latents (> 0) per non-special token",
    "alive": "latents active on at least one non-special evaluation token (over these eval_tokens only, not "
             "training's dead window: a latent rarer than 1 in eval_tokens counts as dead here)",
    "dead_pct": "100 x (1 - alive / d_sae): latents that never fired on the evaluation tokens",
    "freq_over_1_percent": "share of latents (0-1) active on more than 1 % of the non-special evaluation tokens "
                           "(SAEBench core's freq_over_1_percent: dense latents, which TopK SAEs can grow)",
    "freq_over_10_percent": "share of latents (0-1) active on more than 10 % of the non-special evaluation tokens "
                            "(SAEBench core's freq_over_10_percent)",
    "d_sae": "the SAE's number of latents",
    "eval_tokens": "non-special tokens read (BOS/EOS/pad and other special tokens excluded): the count behind "
                   "var_expl, fvu, mse, l0 and alive",
    "ce_loss_clean": "next-token CE (nats) of the clean model, averaged over predictions whose target is not a "
                     "special token",
    "ce_loss_spliced": "the same CE with the SAE's reconstruction in place of the residual at the non-special "
                       "positions (BOS/EOS/pad keep the clean residual)",
    "ce_loss_zero_ablation": "the same CE with the residual zeroed at the non-special positions",
    "ce_loss_recovered": "(CE zero-ablated - CE spliced) / (CE zero-ablated - CE clean); CE of token t+1 averaged "
                         "over targets that are not special tokens; the SAE and the zero-ablation replace only "
                         "non-special positions (BOS/EOS/pad keep the clean residual)",
    "kl_div_spliced": "KL(clean || spliced) next-token distributions in nats, averaged over the same targets as "
                      "the CE",
    "saelens": "as sae_lens.evals.run_evals: CE and KL averaged over source positions whose token is not "
               "BOS/EOS/pad/SEP (KL includes the last position), SAE spliced at those positions, ablation "
               "zeroes the residual at every position incl. BOS; ce_loss_score = (CE ablation - CE with SAE) / "
               "(CE ablation - CE without SAE), kl_div_score = (KL ablation - KL with SAE) / KL ablation",
}
# sae_lens.util.get_special_token_ids: the tokens run_evals leaves out (structural ones only).
_SAELENS_SPECIAL_ATTRS = ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id")


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


def sae_view(x: torch.Tensor, centre: bool) -> torch.Tensor:
    """The residual rows as the SAE was trained to read them: x itself, or x - mean(x) over d_model for a
    release trained on TransformerLens' centred residual stream (saes.releases.centred_input). Its
    reconstruction is compared with this view, and spliced back with the token's mean added
    (x_hat + (x - view)), the residual TransformerLens' centred model would carry."""
    return x - x.mean(-1, keepdim=True) if centre else x


def next_token_losses(logits: torch.Tensor, input_ids: torch.Tensor, reference: torch.Tensor | None = None,
                      chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per position: (CE of predicting token t+1 at t [batch, seq-1], KL(reference || logits) at t
    [batch, seq] or None); log-softmax runs on `chunk` positions at a time, so a 256k-token
    vocabulary never needs a float32 copy of the whole [batch, seq, vocab] logits."""
    seq = input_ids.shape[1]
    nll, kl = [], []
    for start in range(0, seq, chunk):
        end = min(start + chunk, seq)
        logp = F.log_softmax(logits[:, start:end].float(), dim=-1)
        stop = min(end, seq - 1) - start  # the last position has no next token
        nll.append(-logp[:, :stop].gather(-1, input_ids[:, start + 1:start + 1 + stop, None]).squeeze(-1))
        if reference is not None:
            ref = F.log_softmax(reference[:, start:end].float(), dim=-1)
            kl.append((ref.exp() * (ref - logp)).sum(-1))
    return torch.cat(nll, 1), (torch.cat(kl, 1) if reference is not None else None)


def _target_sums(nll, kl, keep) -> tuple[float, float, int]:
    """Ours: the prediction at t counts when its target t+1 is kept."""
    target_keep = keep[:, 1:].float()
    kl_sum = (kl[:, :-1] * target_keep).sum().item() if kl is not None else 0.0
    return (nll * target_keep).sum().item(), kl_sum, int(target_keep.sum())


def _source_sums(nll, kl, keep) -> tuple[float, float, int, int]:
    """SAELens': the prediction at t counts when token t is kept; KL also at the last position."""
    source_keep = keep.float()
    kl_sum = (kl * source_keep).sum().item() if kl is not None else 0.0
    return ((nll * source_keep[:, :-1]).sum().item(), kl_sum, int(source_keep[:, :-1].sum()),
            int(source_keep.sum()))


def saelens_keep(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """The positions sae_lens' run_evals keeps: tokens other than BOS/EOS/pad/SEP/decoder-start
    (unlike token_mask, other registered special tokens such as chat markers stay in)."""
    special = [i for i in (getattr(tokenizer, a, None) for a in _SAELENS_SPECIAL_ATTRS) if i is not None]
    return ~torch.isin(input_ids, torch.tensor(special, dtype=input_ids.dtype, device=input_ids.device))


class _Chunk:
    """One forward's worth of held-out contexts, read once by every metric set: the positions each definition
    keeps, the clean logits and next-token losses, and the residual at each SAE's block; the forwards with an
    edit (an SAE spliced in, a layer ablated) are run on demand and kept, so two sets asking for the same one
    share it."""

    def __init__(self, model, tokenizer, input_ids: torch.Tensor, blocks: list[int], batch: int):
        self.model, self.input_ids, self.batch = model, input_ids, batch
        self.keep = token_mask(input_ids, tokenizer)
        self.saelens_keep = saelens_keep(input_ids, tokenizer)
        self.same_keep = torch.equal(self.keep, self.saelens_keep)
        with read_residuals(model, blocks) as captured:
            self.clean_logits = self.finite(model(input_ids).logits, "the clean model")
        self.residuals = dict(captured)
        self.clean_nll, _ = next_token_losses(self.clean_logits, input_ids)
        self._kept: dict = {}

    def finite(self, logits: torch.Tensor, what: str) -> torch.Tensor:
        """The logits, once shown finite: a NaN/inf here would become a NaN CE in val_report.json."""
        # one float32 reduction first (a NaN/inf makes the sum non-finite): no [batch, seq, vocab] bool copy
        if not bool(torch.isfinite(logits.sum(dtype=torch.float32))) and not bool(torch.isfinite(logits).all()):
            bad = "NaN" if torch.isnan(logits).any() else "inf"
            raise FloatingPointError(f"{bad} logits in validation ({what}, batch {self.batch}): "
                                     f"{dtype_advice(self.model)}.")
        return logits

    def run(self, edits, reference=None, what="SAE spliced in"):
        """Next-token losses (and the KL to `reference`) of a forward with `edits` on the residual stream."""
        with edit_residual(self.model, edits):
            logits = self.finite(self.model(self.input_ids).logits, what)
        return next_token_losses(logits, self.input_ids, reference)

    def once(self, key, compute):
        """compute(), the first time `key` is asked for in this chunk."""
        if key not in self._kept:
            self._kept[key] = compute()
        return self._kept[key]

    def kept_rows(self, block: int) -> torch.Tensor:
        """The residual rows at `block` of the tokens ours keeps, as float32, once shown finite."""
        def rows():
            x = self.residuals[block][self.keep].float()
            if not torch.isfinite(x).all():
                bad = "NaN" if torch.isnan(x).any() else "inf"
                raise FloatingPointError(f"{bad} activations at layer {block} in validation: "
                                         f"{dtype_advice(self.model)}.")
            return x
        return self.once(("rows", block), rows)

    def spliced(self, key, sae, block: int, saelens: bool, centre: bool = False,
                rows: torch.Tensor | None = None):
        """Next-token losses and KL to the clean run with `sae`'s reconstruction in place of the residual at
        `block` on the positions ours keeps (or SAELens' keeps); centre: the SAE reads the centred residual
        (sae_view); rows: the kept rows' reconstruction in the model's residual, if already made. One
        forward where both definitions keep the same positions."""
        keep = self.saelens_keep if saelens and not self.same_keep else self.keep

        def losses():
            hidden = self.residuals[block]
            rec = rows
            if rec is None:
                x = hidden[keep].float()
                view = sae_view(x, centre)
                rec = reconstruct(sae, view)[0] + (x - view)
            spliced = hidden.clone()
            spliced[keep] = rec.to(spliced.dtype)
            return self.run({block: keep_positions(lambda h, s=spliced: s, keep)}, self.clean_logits)
        return self.once(("spliced", key, keep is self.saelens_keep, centre), losses)


@dataclass
class _OurTally:
    """Our running sums for one SAE, so the report is exact over any number of batches."""

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


class OurMetrics:
    """Ours (METRIC_DEFINITIONS): FVU / variance explained, L0, latents alive over the kept tokens; CE and KL
    with the SAE spliced in and CE with the layer zero-ablated (both on the kept positions only), counted
    by target token. centre_input: the SAEs read the centred residual (sae_view; a release's
    saes.releases.centred_input), so the reconstruction is measured against that."""

    def __init__(self, saes: Mapping, centre_input: bool = False):
        self.tallies = {key: _OurTally(d_sae=sae.cfg.d_sae) for key, sae in saes.items()}
        self.clean_ce, self.clean_predictions = 0.0, 0
        self.centre_input = centre_input

    def add_clean(self, chunk: _Chunk) -> None:
        ce, _, predictions = _target_sums(chunk.clean_nll, None, chunk.keep)
        self.clean_ce += ce
        self.clean_predictions += predictions

    def add(self, chunk: _Chunk, key, sae, block: int) -> None:
        tally = self.tallies[key]
        raw = chunk.kept_rows(block)
        x = sae_view(raw, self.centre_input)
        x_hat, l0, counts = reconstruct(sae, x)
        tally.tokens += x.shape[0]
        tally.sq_err += (x - x_hat).pow(2).sum().item()
        sx = x.sum(0).double().cpu()
        tally.sum_x = sx if tally.sum_x is None else tally.sum_x + sx
        tally.sum_sq_norm += x.double().pow(2).sum().item()
        tally.l0_sum += l0.sum().item()
        counts = counts.cpu()
        tally.fire_counts = counts if tally.fire_counts is None else tally.fire_counts + counts

        spliced = chunk.spliced(key, sae, block, saelens=False, centre=self.centre_input, rows=x_hat + (raw - x))
        ce, kl, predictions = _target_sums(*spliced, chunk.keep)
        tally.ce_spliced += ce
        tally.kl_spliced += kl
        tally.ce_zero += chunk.once(("ours: zero-ablated", block), lambda: _target_sums(
            chunk.run({block: keep_positions(torch.zeros_like, chunk.keep)}, what=f"layer {block} zero-ablated")[0],
            None, chunk.keep)[0])
        tally.predictions += predictions

    def report(self, sparsity: dict | None = None) -> dict:
        """{key: our numbers}; `sparsity`, when a dict, receives {key: log10 firing frequency per latent}."""
        ce_clean = self.clean_ce / max(self.clean_predictions, 1)
        out = {}
        for key, tally in self.tallies.items():
            total_var = tally.sum_sq_norm - (tally.sum_x.pow(2).sum().item() / max(tally.tokens, 1))
            fvu = tally.sq_err / max(total_var, 1e-12)
            alive = int((tally.fire_counts > 0).sum())
            density = tally.fire_counts.double() / max(tally.tokens, 1)
            if sparsity is not None:
                sparsity[key] = torch.log10(density + 1e-10).float()
            ce_spliced = tally.ce_spliced / max(tally.predictions, 1)
            ce_zero = tally.ce_zero / max(tally.predictions, 1)
            out[key] = {
                "var_expl": 1.0 - fvu,
                "fvu": fvu,
                "mse": tally.sq_err / max(tally.tokens, 1),
                "l0": tally.l0_sum / max(tally.tokens, 1),
                "alive": alive,
                "dead_pct": 100.0 * (1 - alive / tally.d_sae),
                "freq_over_1_percent": float((density > 0.01).double().mean()),
                "freq_over_10_percent": float((density > 0.1).double().mean()),
                "d_sae": tally.d_sae,
                "ce_loss_clean": ce_clean,
                "ce_loss_spliced": ce_spliced,
                "ce_loss_zero_ablation": ce_zero,
                "ce_loss_recovered": _score(ce_zero, ce_spliced, ce_clean),
                "kl_div_spliced": tally.kl_spliced / max(tally.predictions, 1),
                "eval_tokens": tally.tokens,
            }
        return out


_SAELENS_SUMS = ("ce_with_sae", "ce_with_ablation", "kl_with_sae", "kl_with_ablation")


class SAELensMetrics:
    """The same quantities as sae_lens.evals.run_evals names and defines them (METRIC_DEFINITIONS["saelens"]):
    counted by source position (SAELens' mask), KL at the last position too, the ablation zeroing every
    position."""

    def __init__(self, saes: Mapping, centre_input: bool = False):
        self.sums = {key: dict.fromkeys(_SAELENS_SUMS, 0.0) for key in saes}
        self.clean_ce, self.predictions, self.positions = 0.0, 0, 0  # ce_loss_without_sae and its counts
        self.centre_input = centre_input  # as OurMetrics: SAELens runs such a release on the centred model

    def add_clean(self, chunk: _Chunk) -> None:
        ce, _, predictions, positions = _source_sums(chunk.clean_nll, None, chunk.saelens_keep)
        self.clean_ce += ce
        self.predictions += predictions
        self.positions += positions

    def add(self, chunk: _Chunk, key, sae, block: int) -> None:
        sums = self.sums[key]
        ce, kl, _, _ = _source_sums(*chunk.spliced(key, sae, block, saelens=True, centre=self.centre_input),
                                  chunk.saelens_keep)
        sums["ce_with_sae"] += ce
        sums["kl_with_sae"] += kl
        ce, kl = chunk.once(("saelens: ablated", block), lambda: _source_sums(
            *chunk.run({block: torch.zeros_like}, chunk.clean_logits, what=f"layer {block} zero-ablated"),
            chunk.saelens_keep)[:2])
        sums["ce_with_ablation"] += ce
        sums["kl_with_ablation"] += kl

    def report(self) -> dict:
        """{key: the numbers under run_evals' names}."""
        ce_clean = self.clean_ce / max(self.predictions, 1)
        return {key: _saelens_metrics(sums, ce_clean, self.predictions, self.positions)
                for key, sums in self.sums.items()}


@torch.no_grad()
def measure(model, tokenizer, saes: Mapping[int, torch.nn.Module], token_batches: Iterable[torch.Tensor],
            metric_sets, *, max_batches: int | None = None, forward_batch_size: int = 2,
            layer_of: Mapping | None = None) -> None:
    """Feed the held-out token batches to each metric set (`OurMetrics`, `SAELensMetrics`): one clean
    forward per `forward_batch_size` contexts reads every SAE's block, and each SAE's edited forwards are
    shared by the sets that ask for the same one. Several SAEs at one layer: key them by name and pass
    `layer_of` {key: layer} (TrainResult.layer_of)."""
    if not saes:
        raise ValueError("no SAEs to evaluate: pass a dict {layer: sae}")
    layer_of = layer_of or {}
    missing = [key for key in saes if not isinstance(key, int) and key not in layer_of]
    if missing:
        raise ValueError(f"SAE keys {missing} are not layers: pass layer_of={{key: layer}} (TrainResult.layer_of)")
    block_of = {key: resolve_layers(layer_of.get(key, key), model)[0] for key in saes}  # keys as given, hooks resolve
    device = model_device(model)
    n_batches = 0
    for batch in token_batches:
        if max_batches is not None and n_batches >= max_batches:
            break
        n_batches += 1
        for input_ids in batch.split(forward_batch_size):
            chunk = _Chunk(model, tokenizer, input_ids.to(device), list(block_of.values()), n_batches)
            for metric_set in metric_sets:
                metric_set.add_clean(chunk)
            for key, sae in saes.items():
                for metric_set in metric_sets:
                    metric_set.add(chunk, key, sae, block_of[key])
            del chunk
    if n_batches == 0:
        raise ValueError("evaluation got no token batches: check the validation data source")


def evaluate_saes(
    model,
    tokenizer,
    saes: Mapping[int, torch.nn.Module],
    token_batches: Iterable[torch.Tensor],
    *,
    max_batches: int | None = None,
    sparsity: dict | None = None,
    forward_batch_size: int = 2,
    layer_of: Mapping | None = None,
    centre_input: bool = False,
) -> dict[str, dict]:
    """Validate each SAE (keyed by layer) on the given held-out token batches; returns the report dict:
    {"<key>": {our numbers..., "saelens": {SAELens' numbers}}}.

    Pass a dict as `sparsity` to receive {layer: log10 firing frequency per latent} (the tensor
    SAELens keeps in sparsity.safetensors and feature dashboards sort by). The model runs on
    `forward_batch_size` contexts at a time (full logits of a 256k vocabulary are large).
    Several SAEs at one layer (train's variants): key them by name and pass `layer_of` {key: layer}
    (TrainResult.layer_of); they share each clean forward and the layer's zero-ablation runs.
    centre_input: the SAEs read the residual minus its mean over d_model, as a release trained on
    TransformerLens' centred GPT-2 does (saes.releases.centred_input(SAE)): the reconstruction is then
    compared with that centred residual (as SAELens measures it on its centred model), not the raw one.
    """
    ours, theirs = OurMetrics(saes, centre_input), SAELensMetrics(saes, centre_input)
    measure(model, tokenizer, saes, token_batches, (ours, theirs), max_batches=max_batches,
            forward_batch_size=forward_batch_size, layer_of=layer_of)
    return compose_report(ours.report(sparsity), theirs.report())


def compose_report(ours: dict, saelens: dict) -> dict[str, dict]:
    """val_report's shape: each SAE's numbers by its key as a string, SAELens' under "saelens"."""
    return {str(key): {**ours[key], "saelens": saelens[key]} for key in ours}


def _score(ablated: float, spliced: float, clean: float) -> float:
    """(ablated - spliced) / (ablated - clean): 1 when splicing costs nothing, 0 when it is as bad as ablation."""
    denom = ablated - clean
    return (ablated - spliced) / denom if abs(denom) > 1e-9 else float("nan")


def _saelens_metrics(sl: dict, ce_clean: float, predictions: int, positions: int) -> dict:
    """The layer's numbers under sae_lens.evals.run_evals' names and definitions (METRIC_DEFINITIONS)."""
    ce_sae, ce_abl = sl["ce_with_sae"] / max(predictions, 1), sl["ce_with_ablation"] / max(predictions, 1)
    kl_sae, kl_abl = sl["kl_with_sae"] / max(positions, 1), sl["kl_with_ablation"] / max(positions, 1)
    return {
        "ce_loss_score": _score(ce_abl, ce_sae, ce_clean),
        "ce_loss_with_sae": ce_sae,
        "ce_loss_without_sae": ce_clean,
        "ce_loss_with_ablation": ce_abl,
        "kl_div_score": _score(kl_abl, kl_sae, 0.0),
        "kl_div_with_sae": kl_sae,
        "kl_div_with_ablation": kl_abl,
    }


def write_val_report(report: dict, path: str | Path, **extra) -> Path:
    """Write val_report.json: layers as the only top-level keys (as the originals' viewer reads it),
    with run details such as the model or tokens trained, and the metric definitions, added to every
    layer's entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {layer: {**metrics, "definitions": METRIC_DEFINITIONS, **extra} for layer, metrics in report.items()}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def summarize(report: dict) -> str:
    """Two lines per layer, for printing in a notebook: ours, then the SAELens-style scores."""
    lines = []
    layer_keyed = all(key.lstrip("-").isdigit() for key in report)  # else variant keys "L<layer>/<name>"
    for layer, r in sorted(report.items(), key=lambda kv: int(kv[0]) if layer_keyed else kv[0]):
        lines.append(
            f"{'L' * layer_keyed}{layer}: var_expl {r['var_expl']:.3f}  L0 {r['l0']:.1f}  alive {r['alive']}/{r['d_sae']} "
            f"(dead {r['dead_pct']:.1f}%)  CE clean {r['ce_loss_clean']:.3f} spliced {r['ce_loss_spliced']:.3f} "
            f"zero {r['ce_loss_zero_ablation']:.3f}  CE recovered {r['ce_loss_recovered']:.3f}  KL {r['kl_div_spliced']:.4f}"
        )
        sl = r.get("saelens")
        if sl:
            lines.append(
                f"    as SAELens run_evals: ce_loss_score {sl['ce_loss_score']:.3f}  "
                f"kl_div_score {sl['kl_div_score']:.3f}  kl_div_with_sae {sl['kl_div_with_sae']:.4f}"
            )
    return "\n".join(lines)
