"""What every catalog notebook that names a GPU does in its default run (a Workload per notebook), and
its estimate on a GPU class: memory per GPU in its training and inference phases, minutes by part.
Tested for every GPU notebook in tests/test_planning.py and measured by bench/train_loop.py --fit-check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from .gpus import GPUClass, gpu_class, weight_bytes
from .memory import CUDA_CONTEXT_GB, GIB, LOGIT_COPIES, forward_gib, memory_breakdown, usable_gib
from .models import SHAPES, ModelShape, ModelSpec
from .throughput import (FORWARD_CALL_S_PER_LAYER, decode_seconds_per_step, forward_seconds_per_token,
                         full_forward_flops_per_token, half_rate, sae_encode_seconds_per_token, sae_seconds_per_token,
                         setup_minutes)

JUDGE_SECONDS_PER_FEATURE = 9.0  # notebook 04 with a hosted LLM judge: a label, a detection- and a fuzzing-scoring
#                         request (~3 s each, one at a time); 0 with the offline labeller


@dataclass
class TrainPhase:
    """An SAE training phase of a notebook: its recipe, how many SAEs it trains at once and where."""

    recipe: ModelSpec
    n_saes: int  # SAEs fed by each forward (one per layer, or per architecture and k at one layer)
    crosscoder: bool = False  # one SAE reading every layer of the recipe (its gradients span them all)


@dataclass
class Workload:
    """What a notebook's default run does on the GPU, in the quantities the model prices.

    Memory is the larger of its phases on each GPU: `train` (an SAE run: memory_breakdown) and the
    inference phase (weights, a forward of `batch` x `seq` tokens that keeps `kept_layers` outputs,
    `logit_rows` fp32 rows of logits, a KV cache of `kv_tokens` per sequence, the loaded SAEs `saes`).
    Time is setup + every count below at the GPU class's rates.
    """

    model_id: str
    deepest: int | None = None  # the deepest block its forwards run (None: all, and the logits)
    batch: int = 1  # sequences in its largest forward
    seq: int = 128  # tokens per sequence there
    kept_layers: int = 1  # [batch, seq, d_model] layer outputs kept at once (hooks on several layers)
    grad: bool = False  # that forward keeps every block's activations for a backward through the model
    logit_rows: int = 0  # fp32 logit rows [rows, vocab] alive at once (lenses, CE in chunks)
    kv_tokens: int = 0  # tokens per sequence held in a KV cache (generation)
    saes: tuple[tuple[int, int], ...] = ()  # loaded fp32 SAEs (d_in, d_sae), encoding `batch * seq` rows
    train: TrainPhase | None = None
    # time counts
    forward_tokens: float = 0  # tokens forwarded to `deepest` (no grad), training's included
    full_forward_tokens: float = 0  # tokens through the whole model with logits (validation CE, prefill)
    grad_tokens: float = 0  # tokens through a forward and backward of the whole model
    forward_calls: float = 0  # launch-bound forwards (patching loops, a backward per node)
    decode_steps: float = 0  # generation steps, `decode_batch` sequences each
    decode_batch: int = 1
    encode_tokens: float = 0  # tokens encoded by the loaded SAEs
    external_s: float = 0.0  # waiting on something else (a hosted LLM judge)
    what: str = ""  # one line: the run these numbers describe


@dataclass
class Estimate:
    """A notebook's default run on one GPU class: memory per GPU (GiB, by part) and minutes."""

    notebook: str
    gpu: str
    memory: dict
    usable_gib: float
    minutes: float
    minutes_by_part: dict
    what: str
    basis: str
    placement: str = "one GPU"
    phases: dict = field(default_factory=dict)  # {"train": per-GPU parts, "inference": per-GPU parts}

    @property
    def peak_gib(self) -> float:
        return max(p["total"] for p in self.memory.values())

    @property
    def fits(self) -> bool:
        return self.peak_gib <= self.usable_gib


def _layers_of(value, n_layers: int) -> tuple[int, ...]:
    """LAYER / LAYERS as block indices: an int, a list, "all", "middle"."""
    if value in ("all", "", None):
        return tuple(range(n_layers))
    if value == "middle":
        return (n_layers // 2,)
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple(sorted(int(x) % n_layers for x in items))


def recipe_of(params: Mapping) -> ModelSpec:
    """The ModelSpec of a notebook that trains SAEs with the tier recipe's parameters (MODEL_ID, LAYER or
    LAYERS, D_SAE, K, CONTEXT_LEN, BATCH_TOKENS, MODEL_BATCH_SIZE, BLOCK_BATCHES, TOTAL_TOKENS, VAL_TOKENS,
    MODEL_DEVICE / SAE_DEVICE): "spread" spreads the model, SAE_DEVICE "auto" puts the SAE on the last GPU."""
    s = SHAPES[params["MODEL_ID"]]
    layers = _layers_of(params.get("LAYER", params.get("LAYERS")), s.n_layers)
    if params.get("MODEL_DEVICE") == "spread":
        placement = "spread"
    elif params.get("SAE_DEVICE") == "auto":
        placement = "auto"
    else:
        placement = "one GPU"
    return ModelSpec(s, 0, "", layers, int(params["D_SAE"]), int(params.get("K", 64)), ctx=int(params["CONTEXT_LEN"]),
                     sae_batch_tokens=int(params["BATCH_TOKENS"]), fwd_batch_seqs=int(params["MODEL_BATCH_SIZE"]),
                     block_batches=params["BLOCK_BATCHES"], total_tokens=int(params["TOTAL_TOKENS"]),
                     val_tokens=int(params.get("VAL_TOKENS", 0)), placement=placement)


def _tier_run(params: Mapping, n_saes: int | None = None, what: str = "") -> Workload:
    """The tier recipe (01, 02, 03, 08, 09, 10; 12 with n_saes at one layer): train, then validate
    with the SAEs spliced in: evals.metrics.evaluate_saes runs a clean forward, then per SAE a spliced one and
    per layer two zero-ablated ones (ours and SAELens' mask), whole forwards with logits, two contexts at
    a time, their log-softmax in chunks of 128 positions."""
    m = recipe_of(params)
    n = n_saes or len(m.layers)
    return Workload(m.model_id, None, 2, m.ctx, kept_layers=len(m.layers), logit_rows=2 * 2 * 128,
                    saes=((m.d_model, m.d_sae),) * n, train=TrainPhase(m, n), forward_tokens=m.total_tokens,
                    full_forward_tokens=m.val_tokens * (1 + n + 2 * len(m.layers)),
                    what=what or f"{m.total_tokens / 1e6:g}M tokens, {n} SAE(s) of {m.d_sae} latents at layer(s) "
                                 f"{list(m.layers)}")


# The default SAE each "use your SAE" notebook loads: (d_in, d_sae) per release.
RELEASE_WIDTHS = {
    "gemma-scope-2b-pt-res-canonical": (2304, 16384),
    "gpt2-small-res-jb": (768, 24576),
    "pythia-70m-deduped-res-sm": (512, 32768),
}
PROMPT_TOKENS = 32  # a typed prompt
GSM8K_PROMPT_TOKENS = 256  # a GSM8K question with the answer format, tokenized (notebook 11)


def _sae_widths(params: Mapping, n: int = 1) -> tuple[tuple[int, int], ...]:
    return (RELEASE_WIDTHS.get(params.get("SAE"), (SHAPES[params["MODEL_ID"]].d_model, 16384)),) * n


def acdc_edges(n_layers: int, n_heads: int) -> int:
    """Edges of AutoCircuit's GPT-2 graph with separate q/k/v (circuits/edges.py): 32,491 for GPT-2 small."""
    per_layer = n_heads + 1
    heads = sum(3 * n_heads * (1 + per_layer * layer) for layer in range(n_layers))
    mlps = sum(1 + per_layer * layer + n_heads for layer in range(n_layers))
    return heads + mlps + 1 + per_layer * n_layers


# Each GPU notebook's default run as a Workload, one function per notebook: (its parameters, its model's
# shape, the block LAYER names or None) -> what its source does with them.

def _tier_notebook(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """01-03, 08-10: the tier recipe."""
    return _tier_run(P)


def _discover_features(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """04: stream N_TOKENS, rank latents, label N_FEATURES with the judge."""
    judged = P["N_FEATURES"] * JUDGE_SECONDS_PER_FEATURE if P.get("JUDGE", "auto") != "offline" else 0
    return Workload(P["MODEL_ID"], layer, P["MODEL_BATCH_SIZE"], P["CONTEXT_LEN"], saes=_sae_widths(P),
                    forward_tokens=P["N_TOKENS"], encode_tokens=P["N_TOKENS"], external_s=judged,
                    what=f"{P['N_TOKENS'] / 1e6:g}M tokens, {P['N_FEATURES']} labels by a hosted LLM judge")


def _shareable_trace(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """05: one prompt, steered continuations at each alpha."""
    steps = len(P["ALPHAS"]) * P["MAX_NEW_TOKENS"]
    return Workload(P["MODEL_ID"], None, 1, PROMPT_TOKENS + P["MAX_NEW_TOKENS"], saes=_sae_widths(P),
                    kv_tokens=PROMPT_TOKENS + P["MAX_NEW_TOKENS"], decode_steps=steps,
                    full_forward_tokens=len(P["ALPHAS"]) * PROMPT_TOKENS,
                    what=f"one prompt, {len(P['ALPHAS'])} continuations of {P['MAX_NEW_TOKENS']} tokens")


def _steer(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """06: a baseline to find and size the feature, then steered generations."""
    steps = len(P["ALPHAS"]) * P["MAX_NEW_TOKENS"]
    return Workload(P["MODEL_ID"], layer, 8, P["CONTEXT_LEN"], saes=_sae_widths(P),
                    kv_tokens=PROMPT_TOKENS + P["MAX_NEW_TOKENS"],
                    forward_tokens=P["BASELINE_TOKENS"], encode_tokens=P["BASELINE_TOKENS"], decode_steps=steps,
                    full_forward_tokens=len(P["ALPHAS"]) * (PROMPT_TOKENS + P["MAX_NEW_TOKENS"]),
                    what=f"{P['BASELINE_TOKENS'] / 1e3:g}k baseline tokens, {len(P['ALPHAS'])} steered continuations")


def _stage_gate(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """11: greedy answers to N_EVAL + N_SELECT problems, then their features."""
    n = P["N_EVAL"] + P["N_SELECT"]
    length = GSM8K_PROMPT_TOKENS + P["MAX_NEW_TOKENS"]
    return Workload(P["MODEL_ID"], layer, P["BATCH_SIZE"], length, saes=_sae_widths(P), kv_tokens=length,
                    decode_steps=math.ceil(n / P["BATCH_SIZE"]) * P["MAX_NEW_TOKENS"], decode_batch=P["BATCH_SIZE"],
                    forward_tokens=n * length, encode_tokens=n * length,
                    full_forward_tokens=n * GSM8K_PROMPT_TOKENS,
                    what=f"{n} generations of up to {P['MAX_NEW_TOKENS']} tokens, batch {P['BATCH_SIZE']}")


def _k_sweep(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """12: one SAE per architecture and k at one layer, on the same batches."""
    n = len(P["ARCHITECTURES"]) * len(P["K_VALUES"])
    return _tier_run(P, n, f"{P['TOTAL_TOKENS'] / 1e6:g}M tokens, {n} SAEs of {P['D_SAE']} latents at layer {layer}")


def _watchtower(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """13: baseline, thresholds, the prompts, one watched generation."""
    tokens = 2 * P["BASELINE_TOKENS"] + P["N_PROMPTS"] * P["CONTEXT_LEN"]
    return Workload(P["MODEL_ID"], layer, 8, P["CONTEXT_LEN"], saes=_sae_widths(P),
                    kv_tokens=PROMPT_TOKENS + P["MAX_NEW_TOKENS"],
                    forward_tokens=tokens, encode_tokens=tokens, decode_steps=P["MAX_NEW_TOKENS"],
                    what=f"{tokens / 1e3:g}k tokens watched, one generation of {P['MAX_NEW_TOKENS']} tokens")


def _attribution_patching(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """14: AtP* (forward + backward a few times), exact patching of TOP_N nodes."""
    n = P["N_PROMPTS"]
    return Workload(P["MODEL_ID"], None, 2 * n, PROMPT_TOKENS, grad=True, saes=_sae_widths(P),
                    grad_tokens=8 * n * PROMPT_TOKENS, forward_calls=4 * P["TOP_N"] + 50,
                    what=f"{n} prompt pairs, {P['TOP_N']} nodes patched exactly")


def _sparse_feature_circuit(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """15: IG over every SAE layer, then one backward per kept node for the edges."""
    n, layers = P["N_PROMPTS"], len(P["LAYERS"])
    return Workload(P["MODEL_ID"], None, 2 * n, PROMPT_TOKENS, grad=True, saes=_sae_widths(P, layers),
                    grad_tokens=layers * P["IG_STEPS"] * 2 * n * PROMPT_TOKENS,
                    forward_calls=layers * P["IG_STEPS"] + 2000,
                    what=f"{n} prompt pairs, IG with {P['IG_STEPS']} steps at {layers} layers, edges by backward passes")


def _acdc(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """16: EAP, then ACDC: one patched forward (~4 plain ones) per edge of the graph."""
    edges = acdc_edges(s.n_layers, s.n_heads)
    return Workload(P["MODEL_ID"], None, 2 * P["N_PROMPTS"], PROMPT_TOKENS, grad=True,
                    grad_tokens=4 * P["N_PROMPTS"] * PROMPT_TOKENS,
                    forward_calls=4 * edges + 2 * 50 * len(P["EDGE_BUDGETS"]),
                    what=f"ACDC over {edges:,} edges, {P['N_PROMPTS']} prompt pairs")


def _crosscoder(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """17: one crosscoder reading every layer of LAYERS, from one forward."""
    m = recipe_of(P)
    return Workload(P["MODEL_ID"], max(m.layers), m.fwd_batch_seqs, m.ctx, kept_layers=len(m.layers),
                    train=TrainPhase(m, len(m.layers), crosscoder=True),
                    forward_tokens=m.total_tokens + int(P.get("VAL_TOKENS", 0)),
                    what=f"{m.total_tokens / 1e6:g}M tokens, a crosscoder of {m.d_sae} latents over layers {list(m.layers)}")


def _interpscore(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """18: CE with the SAE spliced in, then probing sets through the SAE."""
    probe_tokens = len(P["PROBE_TASKS"]) * (P["N_TRAIN"] + P["N_TEST"]) * P["MAX_LEN"]
    return Workload(P["MODEL_ID"], None, P["BATCH_SIZE"], max(P["CONTEXT_LEN"], P["MAX_LEN"]), saes=_sae_widths(P),
                    logit_rows=2 * 128 * P["BATCH_SIZE"], full_forward_tokens=3 * P["EVAL_TOKENS"],
                    forward_tokens=probe_tokens, encode_tokens=P["EVAL_TOKENS"] + probe_tokens,
                    what=f"{P['EVAL_TOKENS'] / 1e3:g}k evaluation tokens, {len(P['PROBE_TASKS'])} probing tasks")


def _logit_lens(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """19: one prompt decoded at every layer."""
    return Workload(P["MODEL_ID"], None, 1, PROMPT_TOKENS, kept_layers=s.n_layers + 1,
                    logit_rows=2 * (s.n_layers + 1) * PROMPT_TOKENS, full_forward_tokens=PROMPT_TOKENS,
                    what="one prompt through every layer's lens")


def _tuned_lens(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """20: fit a tuned lens (or load it), compare it with the logit lens."""
    rows = P["BATCH_SIZE"] * P["CONTEXT_LEN"]
    return Workload(P["MODEL_ID"], None, P["BATCH_SIZE"], P["CONTEXT_LEN"], kept_layers=s.n_layers + 1,
                    logit_rows=2 * rows, grad_tokens=P["FIT_STEPS"] * rows,
                    full_forward_tokens=(P["FIT_STEPS"] + P["EVAL_BATCHES"]) * rows,
                    forward_calls=(P["FIT_STEPS"] + P["EVAL_BATCHES"]) * (s.n_layers + 1),
                    what=f"{P['FIT_STEPS']} fitting steps of {P['BATCH_SIZE']} x {P['CONTEXT_LEN']} tokens")


def _linear_probe(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """21: every layer's pooled state for N_TRAIN + N_TEST texts."""
    n = P["N_TRAIN"] + P["N_TEST"]
    layers = _layers_of(P.get("LAYERS"), s.n_layers)
    return Workload(P["MODEL_ID"], max(layers), P["BATCH_SIZE"], P["MAX_LEN"], kept_layers=len(layers),
                    forward_tokens=n * P["MAX_LEN"],
                    what=f"{n} texts of up to {P['MAX_LEN']} tokens at {len(layers)} layers")


def _ccs_probe(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """22: both completions of N_TRAIN + N_TEST statements, CCS restarts on the states."""
    n = 2 * (P["N_TRAIN"] + P["N_TEST"])
    seq = P.get("MAX_TEXT_TOKENS", 300) + 16
    layers = s.n_layers if P.get("SWEEP_LAYERS") == "all" else 1
    return Workload(P["MODEL_ID"], s.n_layers - 1 if layers > 1 else s.n_layers // 2, P["BATCH_SIZE"], seq,
                    kept_layers=layers, forward_tokens=n * seq, forward_calls=P["N_RESTARTS"] * 10,
                    what=f"{n} prompts of up to {seq} tokens, CCS with {P['N_RESTARTS']} restarts")


def _reading_vector(P: Mapping, s: ModelShape, layer: int | None) -> Workload:
    """23: contrast pairs at every layer, monitoring, steered generations."""
    pairs = P.get("N_PAIRS") or len(P.get("CONTRAST_PAIRS") or []) or 32
    steps = len(P["ALPHAS"]) * P["MAX_NEW_TOKENS"]
    return Workload(P["MODEL_ID"], s.n_layers - 1, P["BATCH_SIZE"], 48, kept_layers=s.n_layers,
                    kv_tokens=PROMPT_TOKENS + P["MAX_NEW_TOKENS"], forward_tokens=(2 * pairs + 16) * 48,
                    decode_steps=steps, what=f"{pairs} contrast pairs, {len(P['ALPHAS'])} steered generations")


WORKLOADS = {  # a notebook id's prefix -> its default run
    "01_": _tier_notebook, "02_": _tier_notebook, "03_": _tier_notebook, "08_": _tier_notebook,
    "09_": _tier_notebook, "10_": _tier_notebook, "04_": _discover_features, "05_": _shareable_trace, "06_": _steer,
    "11_": _stage_gate, "12_": _k_sweep, "13_": _watchtower, "14_": _attribution_patching,
    "15_": _sparse_feature_circuit, "16_": _acdc, "17_": _crosscoder, "18_": _interpscore, "19_": _logit_lens,
    "20_": _tuned_lens, "21_": _linear_probe, "22_": _ccs_probe, "23_": _reading_vector,
}


def workload(notebook: str, params: Mapping) -> Workload:
    """Each GPU notebook's default run as a Workload: what its source does with these parameters."""
    s = SHAPES[params.get("MODEL_ID")]
    layer = max(_layers_of(params["LAYER"], s.n_layers)) if params.get("LAYER") is not None else None
    for prefix, run in WORKLOADS.items():
        if notebook.startswith(prefix):
            return run(params, s, layer)
    raise ValueError(f"no workload model for notebook {notebook!r}: add one to planning.workloads.WORKLOADS")


def train_placement(m: ModelSpec, g: GPUClass) -> str:
    """Where a training run's model and SAEs go on GPU class g (memory_breakdown's placement)."""
    if g.n_gpus == 1:
        return "one GPU"
    return {"spread": "spread", "auto": "split"}.get(m.placement, "one GPU")


def notebook_estimate(notebook: str, params: Mapping, gpu: str) -> Estimate:
    """Memory per GPU and minutes of a catalog notebook's run with `params` (its defaults) on `gpu`."""
    g = gpu_class(gpu)
    w = workload(notebook, params)
    s = SHAPES[w.model_id]
    named = {}
    placement = "one GPU"
    if w.train is not None:  # the training phase: memory_breakdown, as notebook 07 weighs it
        placement = train_placement(w.train.recipe, g)
        named["train"] = _training_memory(w.train, g, placement)
    named["inference"] = _inference_memory(w, s, g, placement, named.get("train"))
    parts = _minutes_by_part(w, s, g)
    return Estimate(notebook, g.name, _peak_per_gpu(named.values()), usable_gib(g), sum(parts.values()), parts,
                    w.what, g.basis, placement, named)


def _training_memory(train: TrainPhase, g: GPUClass, placement: str) -> dict:
    """GiB per part and GPU of a notebook's SAE training phase (memory_breakdown of its recipe)."""
    m = train.recipe
    layers = m.layers if train.n_saes == len(m.layers) else (m.layers[0],) * train.n_saes
    return memory_breakdown(m, g, layers, m.d_sae, m.fwd_batch_seqs, m.sae_batch_tokens, m.buffer_rows(),
                            placement, crosscoder=train.crosscoder)


def _inference_memory(w: Workload, s: ModelShape, g: GPUClass, placement: str, trained: dict | None) -> dict:
    """GiB per part and GPU of the inference phase (validation of a trained SAE, or the whole run of a notebook
    that uses one): the weights as the run places them, the logits on the GPU of the unembedding, the SAEs on
    theirs."""
    wbytes = weight_bytes(g)
    n_gpus = len(trained) if trained else 1
    infer = [{"cuda_context": CUDA_CONTEXT_GB if g.name != "cpu" else 0.0} for _ in range(n_gpus)]
    if placement == "spread":
        for part, trained_part in zip(infer, trained.values()):
            part["weights"] = trained_part["weights"]
    else:
        infer[0]["weights"] = s.n_params * wbytes / GIB
    head = n_gpus - 1 if placement == "spread" else 0
    infer[0]["forward_activations"] = forward_gib(s, w.batch, w.seq, w.kept_layers, wbytes) * (s.n_layers if w.grad else 1)
    copies = LOGIT_COPIES + s.logit_softcap
    logits = (copies * w.batch * w.seq * wbytes if w.deepest is None else 0) + 4 * w.logit_rows
    if logits:
        infer[head]["logits"] = logits * s.vocab / GIB
    if w.kv_tokens:
        infer[0]["kv_cache"] = 2 * s.n_layers * s.kv_dim * w.kv_tokens * w.decode_batch * wbytes / GIB
    if w.saes:
        infer[n_gpus - 1 if placement != "one GPU" else 0]["saes"] = sum(
            (2 * d * n + d + n) * 4 + 2 * w.batch * w.seq * n * 4 for d, n in w.saes) / GIB
    for part in infer:
        part["total"] = sum(part.values())
    return {f"gpu{i}": part for i, part in enumerate(infer)}


def _peak_per_gpu(phases) -> dict:
    """Each GPU's parts in the phase where its total is largest."""
    memory: dict = {}
    for phase in phases:
        for dev, part in phase.items():
            if dev not in memory or part["total"] > memory[dev]["total"]:
                memory[dev] = part
    return memory


def _minutes_by_part(w: Workload, s: ModelShape, g: GPUClass) -> dict:
    """The run's minutes by part at g's rates: set-up, training, forwards, backwards, generation, SAE encoding,
    waiting on an LLM judge."""
    parts = {"setup": setup_minutes(s)}
    forward_tokens = w.forward_tokens
    if w.train is not None:
        m = w.train.recipe
        t_sae = sae_seconds_per_token(m.d_model, m.d_sae, w.train.n_saes, g)  # a crosscoder: n x d_in, one SAE
        t_fwd = forward_seconds_per_token(s, g, max(m.layers), m.ctx)
        parts["training"] = m.total_tokens * (t_fwd + t_sae) / 60
        forward_tokens -= m.total_tokens
    deepest = w.deepest if w.deepest is not None else s.n_layers - 1
    if forward_tokens > 0:
        parts["forwards"] = forward_tokens * forward_seconds_per_token(s, g, deepest, w.seq) / 60
    if w.full_forward_tokens:
        parts["forwards_with_logits"] = (w.full_forward_tokens * full_forward_flops_per_token(s, w.seq)
                                         / (half_rate(g) * s.fwd_mfu_scale) / 60)
    if w.grad_tokens:
        parts["forward_backward"] = 3 * w.grad_tokens * full_forward_flops_per_token(s, w.seq) / half_rate(g) / 60
    if w.forward_calls:
        parts["launch_bound_forwards"] = w.forward_calls * FORWARD_CALL_S_PER_LAYER * s.n_layers / 60
    if w.decode_steps:
        parts["generation"] = w.decode_steps * decode_seconds_per_step(s, g, w.decode_batch) / 60
    if w.encode_tokens and w.saes:
        parts["sae_encode"] = sum(w.encode_tokens * sae_encode_seconds_per_token(d, n, g) for d, n in w.saes) / 60
    if w.external_s:
        parts["llm_judge"] = w.external_s / 60
    return parts
