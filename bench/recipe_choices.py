"""Three recipe choices of the trainer, measured: Adam's eps, the LR's dependence on width, input normalisation.

Every arm trains a TopK + AuxK SAE with the project's own trainer (`shared.training.trainer.train`) on the
`synthetic` corpus through `tiny-trained:llama` (d_model 64, residual stream after block 2), and is
scored on held-out tokens with `shared.evals.metrics.evaluate_saes` (FVU, L0, dead %, CE loss recovered).
The studies (`--study`):

- `eps`: Adam eps 6.25e-10 (OpenAI) / 1e-8 (torch, ours) / 3e-7 / 1e-6, at 1024 latents (16x). What
  eps competes with is a latent's gradient per weight (Adam's sqrt(v_hat)); at a given firing
  frequency it falls about as 1/d_in (`eps-scale` below: 9x (decoder) and 16x (encoder) from d_in 64
  to 512), so eps 3e-7 / 1e-6 here do to this model's latents what eps 1e-8 does at d_in ~2300 /
  ~6400. Besides the metrics it records the share of latents whose step eps cuts by >= 10 %, the
  dead % over training, the latents that died and came back (AuxK revivals) and the low tail of the
  held-out firing frequencies.
- `lr`: LR 1e-4 ... 1.6e-3 (factors of 2) at 512 and 2048 latents (8x and 32x d_in). sparsify's
  rule lr = 2e-4 / sqrt(d_sae / 2**14) anchors 2e-4 at 16k latents; here the anchor is 512 (about the
  same expansion), so the rule says 1e-4 at 2048 where ours keeps 2e-4: does the best LR fall ~2x
  when the width grows 4x? lr_min stays 0.3 x lr (the recipe's 6e-5 / 2e-4).
- `norm`: normalize_activations "none" vs "expected_average_only_in" (inputs scaled so the mean
  norm is sqrt(d_in), folded into the weights at export), two SAEs on the same batches, at three
  scales of the residual stream: the model rescaled exactly (embedding, every o_proj and down_proj
  times s, RMSNorm's eps times s^2, so every RMSNorm removes the scale again and the logits are
  unchanged) to per-dimension RMS 0.18 (Llama-3.1-8B's layer-16 residual: mean squared norm ~139 at
  d 4096), the model's own 0.42, and 4.3 (a large-norm model).
- `eps-scale`: no trainer and no model: the trainer's step (`train.sae_step`, `train.adam`) for 150
  steps on a planted sparse code of width 64 / 256 / 512 (16x latents); Adam's sqrt(v_hat) per
  latent row, fitted against the latent's firing frequency.

Results go to a JSONL file, one line per (arm, seed); a rerun skips the pairs already there, so the
studies can be run piecewise. `--summary` prints the Markdown tables of BENCHMARKS.md from it.

    nice -n 10 python bench/recipe_choices.py --study eps --seeds 0,1,2
    python bench/recipe_choices.py --summary
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shared.training.trainer as trainer_module  # noqa: E402
from shared.evals.metrics import evaluate_saes  # noqa: E402
from shared.model.capture import token_mask  # noqa: E402
from shared.model.hooks import read_residuals  # noqa: E402
from shared.model.loading import load_model  # noqa: E402
from shared.saes.architectures import build_sae  # noqa: E402
from shared.saes.topk import TopKConfig  # noqa: E402
from shared.training.config import TrainConfig, sae_label, variant_of  # noqa: E402
from shared.training.step import adam, sae_step  # noqa: E402
from shared.training.stream import validation_batches  # noqa: E402
from shared.training.trainer import train  # noqa: E402

MODEL = "tiny-trained:llama"
LAYER = 2
RESULTS = Path(__file__).resolve().parent / "results" / "recipe_choices.jsonl"
EPS_PROBED = (6.25e-10, 1e-8, 3e-7, 1e-6)  # the eps values whose cut of each latent's step is recorded
LLAMA_8B_L16_RMS = 0.18  # sqrt(139.5 / 4096): mean squared norm of Llama-3.1-8B's layer-16 residual


@dataclass(frozen=True)
class Arm:
    """One setting of the studied knobs (everything else is the shared base below)."""

    study: str
    name: str
    d_sae: int = 1024
    lr: float = 2e-4
    adam_eps: float = 1e-8
    residual_rms: float | None = None  # rescale the residual stream to this per-dim RMS (None: as is)
    normalize: tuple[str, ...] = ("none",)  # one SAE per entry, trained on the same batches (variants)


ARMS = [
    Arm("eps", "eps=6.25e-10", d_sae=1024, adam_eps=6.25e-10),
    Arm("eps", "eps=1e-8", d_sae=1024, adam_eps=1e-8),
    Arm("eps", "eps=3e-7", d_sae=1024, adam_eps=3e-7),
    Arm("eps", "eps=1e-6", d_sae=1024, adam_eps=1e-6),
    *[Arm("lr", f"w={w} lr={lr:g}", d_sae=w, lr=lr) for w in (512, 2048) for lr in (1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3)],
    *[Arm("norm", f"rms={r}", d_sae=1024, residual_rms=r, normalize=("none", "expected_average_only_in"))
      for r in (LLAMA_8B_L16_RMS, None, 4.3)],
]


@dataclass
class Base:
    """What every arm shares (set from the command line)."""

    tokens: int = 2_000_000
    k: int = 8
    batch_tokens: int = 4096
    context_len: int = 128
    model_batch_size: int = 16
    val_tokens: int = 32_768
    dead_fraction: float = 0.1  # dead_tokens_threshold as a share of the run (10M of a 100M run)
    warmup_fraction: float = 0.1  # the trainer caps warm-up at a tenth of the steps
    threads: int = 1
    probe_every: int = 50  # steps between the Adam-state probes


def rescaled_llama(model, tokenizer, rms_now: float, rms_wanted: float):
    """A copy of a pre-norm Llama whose residual stream is rms_wanted / rms_now times the original at
    every layer, with the same logits: embedding and every write into the residual (o_proj, down_proj)
    are scaled, and each RMSNorm (its eps times s^2) divides the scale out again."""
    s = rms_wanted / rms_now
    out = copy.deepcopy(model)
    if out.config.tie_word_embeddings:
        raise ValueError("rescaled_llama needs untied embeddings (scaling them would scale the logits)")
    with torch.no_grad():
        out.model.embed_tokens.weight.mul_(s)
        for block in out.model.layers:
            block.self_attn.o_proj.weight.mul_(s)
            block.mlp.down_proj.weight.mul_(s)
    for module in out.modules():  # RMSNorm's eps scaled by s^2 too, so the model is the same function
        if hasattr(module, "variance_epsilon"):
            module.variance_epsilon *= s * s
    text = "The chef stirred the soup. The rocket lifted off into the night sky."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(out(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)
    return out


def residual_rms(model, tokenizer, batches) -> float:
    """Per-dimension RMS of the kept tokens' residual at LAYER over the given token batches."""
    total, n = 0.0, 0
    with torch.no_grad():
        for ids in batches:
            with read_residuals(model, [LAYER]) as cap:
                model(ids)
            x = cap[LAYER][token_mask(ids, tokenizer)].double()
            total, n = total + x.pow(2).sum().item(), n + x.numel()
    return math.sqrt(total / n)


class Probe:
    """Wraps the trainer's sae_step (bench-only instrumentation): per SAE, the latents ever counted dead,
    and every `every` steps Adam's per-row sqrt(v_hat) of the decoder and encoder (median over the row)."""

    def __init__(self, every: int):
        self.every = every
        self.ever_dead: dict[int, torch.Tensor] = {}
        self.steps: dict[int, int] = {}
        self.samples: dict[int, list] = {}
        self.inner = trainer_module.sae_step

    def __enter__(self):
        trainer_module.sae_step = self
        return self

    def __exit__(self, *exc):
        trainer_module.sae_step = self.inner

    def __call__(self, sae, optimizer, x, lr=None, **kw):
        out = self.inner(sae, optimizer, x, lr, **kw)
        key = id(sae)
        dead = sae.dead_mask()
        self.ever_dead[key] = dead if key not in self.ever_dead else self.ever_dead[key] | dead
        step = self.steps[key] = self.steps.get(key, 0) + 1
        if step % self.every == 0:
            self.samples.setdefault(key, []).append((step, adam_row_scale(sae, optimizer)))
        return out


def adam_row_scale(sae, optimizer) -> dict[str, torch.Tensor]:
    """{param: [d_sae] median over each latent's row of sqrt(v_hat)}: the gradient scale eps competes with."""
    out = {}
    for name in ("W_dec", "W_enc_T", "b_enc"):
        param = getattr(sae, name)
        state = optimizer.state[param]
        beta2 = optimizer.param_groups[0]["betas"][1]
        v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
        s = v_hat.sqrt()
        out[name] = s.median(dim=1).values if s.ndim == 2 else s
    return {k: v.clone() for k, v in out.items()}


def eps_damping(scale: torch.Tensor, eps: float) -> dict:
    """How much eps shortens the steps: the share of latents whose step is cut >= 10 % / >= 50 %."""
    keep = scale / (scale + eps)
    return {"cut10": float((keep < 0.9).float().mean()), "cut50": float((keep < 0.5).float().mean())}


def tail_bins(log10_freq: torch.Tensor) -> dict:
    """Shares of latents by held-out firing frequency (log10; -10 = never fired)."""
    f = log10_freq
    return {"never": float((f <= -9).float().mean()),
            "<1e-4": float(((f > -9) & (f < -4)).float().mean()),
            "1e-4..1e-3": float(((f >= -4) & (f < -3)).float().mean()),
            "1e-3..1e-2": float(((f >= -3) & (f < -2)).float().mean()),
            ">=1e-2": float((f >= -2).float().mean())}


def run_arm(arm: Arm, seed: int, base: Base, model, tokenizer, native_rms: float) -> dict:
    """Train and score one arm at one seed; -> the JSONL record."""
    torch.set_num_threads(base.threads)
    if arm.residual_rms is not None:
        model = rescaled_llama(model, tokenizer, native_rms, arm.residual_rms)
    steps = math.ceil(base.tokens / base.batch_tokens)
    sae_cfgs = {norm: TopKConfig(d_sae=arm.d_sae, k=base.k, normalize_activations=norm,
                                 dead_tokens_threshold=int(base.dead_fraction * base.tokens))
                for norm in arm.normalize}
    with tempfile.TemporaryDirectory() as folder:
        cfg = TrainConfig(
            model_id=MODEL, layers=(LAYER,), dataset=("synthetic",), context_len=base.context_len,
            sae=next(iter(sae_cfgs.values())), variants=sae_cfgs if len(sae_cfgs) > 1 else None,
            total_tokens=base.tokens, batch_tokens=base.batch_tokens, model_batch_size=base.model_batch_size,
            block_batches=16, lr=arm.lr, lr_min=0.3 * arm.lr, warmup_steps=max(1, int(base.warmup_fraction * steps)),
            adam_eps=arm.adam_eps, checkpoint_every_tokens=10 * base.tokens, checkpoint_dir=folder,
            log_every=10, seed=seed)
        started = time.perf_counter()
        with Probe(base.probe_every) as probe:
            result = train(cfg, model, tokenizer, progress=False)
        train_s = time.perf_counter() - started
    val = validation_batches(cfg, tokenizer, base.val_tokens)
    rms = residual_rms(model, tokenizer, val[:2])
    sparsity: dict = {}
    report = evaluate_saes(model, tokenizer, result.saes, val, sparsity=sparsity, layer_of=result.layer_of)
    saes = {}
    for key, sae in result.saes.items():
        label = sae_label(key)
        norm = variant_of(key) or arm.normalize[0]
        rep = report[str(key)]
        alive_val = sparsity[key] > -9
        ever_dead = probe.ever_dead[id(sae)]
        probes = probe.samples.get(id(sae), [])
        last = probes[-1][1] if probes else {}
        saes[norm] = {
            "val": {m: rep[m] for m in ("var_expl", "fvu", "l0", "dead_pct", "ce_loss_recovered", "kl_div_spliced")},
            "train_dead_pct": [(e["tokens"], e[f"{label}/dead_pct"]) for e in result.history],
            "train_fvu_last": result.history[-1][f"{label}/fvu"],
            "ever_dead_pct": 100 * float(ever_dead.float().mean()),
            "revived_pct": 100 * float((ever_dead & alive_val).float().mean()),
            "dead_at_end_pct": 100 * float(sae.dead_mask().float().mean()),
            "freq_tail": tail_bins(sparsity[key]),
            "norm_scale": float(sae.norm_scale),
            "adam": {name: {"median": float(s.median()),
                            "q10": float(s.quantile(0.1)),
                            "eps_cut": {f"{e:g}": eps_damping(s, e) for e in EPS_PROBED},
                            "eps_cut_alive": {f"{e:g}": eps_damping(s[alive_val], e) for e in EPS_PROBED},
                            "eps_cut_revived": ({f"{e:g}": eps_damping(s[ever_dead & alive_val], e)
                                                 for e in EPS_PROBED}
                                                if bool((ever_dead & alive_val).any()) else None)}
                     for name, s in last.items()},
            "adam_median_over_time": [(step, {n: float(s.median()) for n, s in sample.items()})
                                      for step, sample in probes],
        }
    return {"study": arm.study, "arm": arm.name, "seed": seed, "d_sae": arm.d_sae, "lr": arm.lr,
            "adam_eps": arm.adam_eps, "residual_rms": rms, "tokens": result.tokens, "steps": result.steps,
            "train_s": round(train_s, 1), "base": vars(base),
            "saes": saes, "torch": torch.__version__}


# ----------------------------------------------------------------------------- eps at other widths

def sparse_dictionary_batches(d_in: int, k: int, n: int, seed: int):
    """Endless [n, d_in] batches of a planted sparse code: 4 d_in random unit atoms with Zipf firing
    rates (about k active per token, the rarest ~100x rarer than the commonest), magnitudes 0.5 + |N(0,1)|,
    plus 5 % noise. A stand-in residual stream whose width can be raised beyond the tiny models'."""
    gen = torch.Generator().manual_seed(seed)
    n_atoms = 4 * d_in
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d_in, generator=gen), dim=1)
    rate = 1.0 / (torch.arange(n_atoms) + n_atoms / 100)
    rate = (rate * k / rate.sum()).clamp(max=1.0)
    while True:
        on = torch.rand(n, n_atoms, generator=gen) < rate
        mag = 0.5 + torch.randn(n, n_atoms, generator=gen).abs()
        x = (on * mag) @ atoms
        yield x + 0.05 * x.norm(dim=1, keepdim=True) / math.sqrt(d_in) * torch.randn(n, d_in, generator=gen)


EPS_SCALE_SHAPES = ((64, 8), (256, 8), (512, 8), (256, 32))  # (d_in, k) of the planted-code runs


def eps_scale(d_in: int, k: int, *, steps: int, batch: int, seed: int = 0) -> dict:
    """Adam's per-latent gradient scale (sqrt(v_hat), median over each decoder / encoder row) after
    `steps` steps of the trainer's own step (step.sae_step, step.adam) on a planted sparse code of
    width d_in; by firing-frequency class: common (>= 1e-2), mid, rare (< 1e-3) and AuxK-only (dead)."""
    torch.manual_seed(seed)
    cfg = TopKConfig(d_in=d_in, d_sae=16 * d_in, k=k, dead_tokens_threshold=25 * batch, seed=seed)
    sae = build_sae(cfg)
    opt = adam(sae.parameters(), lr=2e-4, device="cpu")
    data = sparse_dictionary_batches(d_in, k, batch, seed)
    fired = torch.zeros(cfg.d_sae)
    started = time.perf_counter()
    for step in range(steps):
        x = next(data)
        if step == 0:
            sae.init_b_dec(x)
        lr = 2e-4 * min(1.0, (step + 1) / 20)
        sae_step(sae, opt, x, lr, autocast=False)
        if step >= steps // 2:  # firing frequencies over the second half
            vals, idx = sae.encode_sparse(x)
            fired += torch.bincount(idx[vals > 0], minlength=cfg.d_sae).float()
    freq = fired / ((steps - steps // 2) * batch)
    scale = adam_row_scale(sae, opt)
    dead = sae.dead_mask()
    alive = (freq > 0) & ~dead
    fits = {}
    for name, s in scale.items():  # log sqrt(v_hat) = a log p + c over the live latents
        lp, ls = freq[alive].log10(), s[alive].log10()
        a = float(((lp - lp.mean()) * (ls - ls.mean())).sum() / (lp - lp.mean()).pow(2).sum())
        c = float(ls.mean() - a * lp.mean())
        fits[name] = {"slope": a, "at_1e-2": 10 ** (c - 2 * a), "at_1e-3": 10 ** (c - 3 * a),
                      "at_1e-4": 10 ** (c - 4 * a),
                      "dead_median": float(s[dead].median()) if dead.any() else None}
    return {"d_in": d_in, "k": k, "d_sae": cfg.d_sae, "steps": steps, "batch": batch, "seed": seed,
            "seconds": round(time.perf_counter() - started, 1), "alive": int(alive.sum()), "dead": int(dead.sum()),
            "freq_range": [float(freq[alive].min()), float(freq[alive].max())], "fits": fits}


# ----------------------------------------------------------------------------- summary

def _ms(values, fmt="{:.3f}") -> str:
    """mean +- sample std (n >= 2), or the one value."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def summary(records: list[dict]) -> str:
    """The Markdown tables: per study, one row per arm (and normalisation), mean ± std over its seeds."""
    lines = []
    order = {a.name: i for i, a in enumerate(ARMS)}
    for study in ("eps", "lr", "norm"):
        rows = [r for r in records if r.get("study") == study]
        if not rows:
            continue
        groups: dict[tuple, list] = {}
        for r in rows:
            for norm, s in r["saes"].items():
                groups.setdefault((r["base"]["tokens"], r["arm"], norm), []).append((r, s))
        head = ["tokens", "arm", "normalize", "seeds", "var_expl", "CE recovered", "KL", "dead % (held-out)", "ever dead %",
                "revived %", "freq < 1e-4 %"]
        if study == "eps":
            head += [f"steps cut >= 10 % by eps {e:g}: W_dec / W_enc %" for e in EPS_PROBED[1:]]
        head += ["resid RMS", "train s"]
        lines += [f"\n### {study}\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for (tokens, arm, norm), items in sorted(groups.items(),
                                                 key=lambda kv: (kv[0][0], order.get(kv[0][1], 99), kv[0][2])):
            ss = [s for _, s in items]
            rs = [r for r, _ in items]

            def cut(param, eps):
                return [100 * s["adam"][param]["eps_cut"][eps]["cut10"]
                        if s["adam"] and eps in s["adam"][param]["eps_cut"] else None for s in ss]

            cells = [f"{tokens / 1e6:g}M", arm, norm, ",".join(str(r["seed"]) for r in rs),
                     _ms([s["val"]["var_expl"] for s in ss]), _ms([s["val"]["ce_loss_recovered"] for s in ss]),
                     _ms([s["val"]["kl_div_spliced"] for s in ss]),
                     _ms([s["val"]["dead_pct"] for s in ss], "{:.1f}"), _ms([s["ever_dead_pct"] for s in ss], "{:.1f}"),
                     _ms([s["revived_pct"] for s in ss], "{:.1f}"),
                     _ms([100 * (s["freq_tail"]["never"] + s["freq_tail"]["<1e-4"]) for s in ss], "{:.1f}")]
            if study == "eps":
                cells += [f"{_ms(cut('W_dec', f'{e:g}'), '{:.0f}')} / {_ms(cut('W_enc_T', f'{e:g}'), '{:.0f}')}"
                          for e in EPS_PROBED[1:]]
            cells += [_ms([r["residual_rms"] for r in rs], "{:.2f}"), _ms([r["train_s"] for r in rs], "{:.0f}")]
            lines.append("| " + " | ".join(cells) + " |")
    scale = [r for r in records if r.get("study") == "eps-scale"]
    if scale:
        lines.append("\n### eps-scale (Adam sqrt(v_hat) per latent row, fitted at firing frequency p; planted code)\n")
        head = ("| d_in | k | d_sae | W_dec @p=1e-2 | @1e-3 | @1e-4 | slope | W_enc @1e-2 | @1e-3 | @1e-4 | slope "
                "| dead W_dec | dead W_enc | s |")
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in scale:
            f = r["fits"]
            g = lambda v: "-" if v is None else f"{v:.2e}"  # noqa: E731
            lines.append("| " + " | ".join([
                str(r["d_in"]), str(r["k"]), str(r["d_sae"]),
                g(f["W_dec"]["at_1e-2"]), g(f["W_dec"]["at_1e-3"]), g(f["W_dec"]["at_1e-4"]), f"{f['W_dec']['slope']:.2f}",
                g(f["W_enc_T"]["at_1e-2"]), g(f["W_enc_T"]["at_1e-3"]), g(f["W_enc_T"]["at_1e-4"]),
                f"{f['W_enc_T']['slope']:.2f}", g(f["W_dec"]["dead_median"]), g(f["W_enc_T"]["dead_median"]),
                f"{r['seconds']:.0f}"]) + " |")
    return "\n".join(lines)


def load_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", default="eps", help="eps | lr | norm | all, or a comma list")
    ap.add_argument("--arms", default="", help="only these arm names (comma list), e.g. 'eps=1e-8'")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tokens", type=int, default=Base.tokens)
    ap.add_argument("--threads", type=int, default=Base.threads)
    ap.add_argument("--out", type=Path, default=RESULTS, help="JSONL of results (appended; done pairs skipped)")
    ap.add_argument("--summary", action="store_true", help="print the tables from --out and stop")
    args = ap.parse_args(argv)
    if args.summary:
        print(summary(load_records(args.out)))
        return
    studies = {"eps", "lr", "norm", "eps-scale"} if args.study == "all" else set(args.study.split(","))
    if "eps-scale" in studies:
        done = {(r["d_in"], r["k"]) for r in load_records(args.out) if r.get("study") == "eps-scale"}
        for d_in, k in EPS_SCALE_SHAPES:
            if (d_in, k) in done:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] eps-scale d_in={d_in} k={k} ...", flush=True)
            record = {"study": "eps-scale", **eps_scale(d_in, k, steps=150, batch=4096)}
            with args.out.open("a") as f:
                f.write(json.dumps(record) + "\n")
        studies.discard("eps-scale")
        if not studies:
            return
    names = set(filter(None, args.arms.split(",")))
    arms = [a for a in ARMS if a.study in studies and (not names or a.name in names)]
    seeds = [int(s) for s in args.seeds.split(",")]
    base = Base(tokens=args.tokens, threads=args.threads)
    torch.set_num_threads(base.threads)
    done = {(r["arm"], r["seed"], r["tokens"] >= base.tokens) for r in load_records(args.out) if "arm" in r}
    model, tokenizer = load_model(MODEL, device="cpu")
    probe_cfg = TrainConfig(model_id=MODEL, layers=(LAYER,), context_len=base.context_len,
                            model_batch_size=base.model_batch_size)
    native = residual_rms(model, tokenizer, validation_batches(probe_cfg, tokenizer, 4096))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for arm in arms:
            if (arm.name, seed, True) in done:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {arm.name} seed {seed} ...", flush=True)
            record = run_arm(arm, seed, base, model, tokenizer, native)
            with args.out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            brief = {n: {m: round(v, 4) for m, v in s["val"].items()} for n, s in record["saes"].items()}
            print(f"    {record['train_s']:.0f}s {brief}", flush=True)


if __name__ == "__main__":
    main()
