"""Sample outputs for the viewer tests, written by the core's own functions on a tiny model: the same calls
notebooks 04 (feature_catalog.json), 05 (trace.json), 15 (circuit.json) and 18 (interpscore.json) make
in their smoke runs, at smaller sizes (about 10 s on one CPU). Generated per test session, so the
viewers are always tested against what the current core writes.

`HOSTILE` is the same kinds of file with markup and script payloads in every string a viewer shows.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

PROMPT = "The cat sat on the mat because it was tired."
PAYLOADS = ['<script>window.__pwned=1</script>', '<img src=x onerror="window.__pwned=2">',
            'javascript:window.__pwned=3', '"><svg onload=window.__pwned=4>']


def _sae(model, seed: int, d_sae: int = 48, k: int = 6):
    import torch

    from shared.model.layout import d_model
    from shared.saes import architectures
    from shared.saes.topk import TopKConfig

    sae = architectures.build_sae(TopKConfig(d_in=d_model(model), d_sae=d_sae, k=k, seed=seed))
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
    return sae.requires_grad_(False)


def feature_catalog(model, tok, sae, layer: int = 1) -> dict:
    """Notebook 04's catalog: statistics, ranking, offline labels with detection scores, logit effects,
    decoder neighbours."""
    from shared.data import packing, sources
    from shared.features import judge, stats
    from shared.model import layout

    batches = list(itertools.islice(packing.token_batches(sources.text_stream("synthetic"), tok, 32, 8), 8))
    feature_stats = stats.collect(model, tok, sae, layer, batches[:4], 800)
    ranked = stats.rank_features(feature_stats, top_n=8, min_fires=1, max_fire_rate=1.0)
    contexts = stats.detection_contexts(model, tok, sae, layer, batches[4:], [j for j, _ in ranked], 800,
                                           width=8)
    labels = judge.label_features(stats.judge_evidence(feature_stats, ranked, tok, contexts), judge.OfflineLabeller())
    by_id = {e["id"]: e for e in labels["features"]}
    effects = stats.logit_effects(model, sae, [j for j, _ in ranked], k=5, tokenizer=tok)
    entries = stats.catalog_entries(feature_stats, ranked, tok, labels=by_id, effects=effects)
    nearest = stats.decoder_neighbours(sae.W_dec, [j for j, _ in ranked], n=5)
    for e in entries:
        e["detection_score"], e["detection_auroc"] = by_id[e["id"]]["score"], by_id[e["id"]]["auroc"]
        e["fuzzing_score"] = by_id[e["id"]]["fuzzing_score"]
        e["nearest"] = nearest[e["id"]]
    return {"sae_repo": "local/tiny-topk", "base_model": "tiny-trained:gpt2", "layer": layer,
            "d_model": layout.d_model(model), "d_sae": sae.cfg.d_sae, "k": sae.cfg.k,
            "context_tokens_analyzed": feature_stats.n_tokens, "judge_backend": labels["judge_backend"],
            "judge_model": labels["judge_model"], "features": entries}


def circuit(seed: int = 0) -> dict:
    """Notebook 15's circuit.json: sparse feature circuit over SAEs at two layers of tiny:gpt2."""
    from shared.circuits import circuit_json, sfc, tasks
    from shared.model.loading import load_model

    model, tok = load_model("tiny:gpt2")
    graph = sfc.check_saes(model, {1: _sae(model, 1, 32, 4), 2: _sae(model, 2, 32, 4)})
    pairs = tasks.load_task("synthetic", tok, 4, seed=seed)
    found = sfc.sparse_feature_circuit(graph, pairs, "logit_diff", tau_node=0.0, tau_edge=0.0, method="atp")
    return circuit_json.validate_circuit({**found.circuit_data(), "model": "tiny:gpt2", "sae_repo": "random",
                                          "task": "synthetic"})


def interpscores() -> list[dict]:
    """Three interpscore.json reports (notebook 18's writer) whose parts rank them differently."""
    import numpy as np

    from shared.evals import scores

    out = []
    for n, (loss, alive, l0, signal) in enumerate([(0.9, 0.95, 70.0, 2.0), (0.6, 0.99, 300.0, 4.0),
                                                   (0.95, 0.5, 20.0, 0.5)]):
        rng = np.random.default_rng(n)
        y = np.tile([0, 1], 60)
        X = rng.normal(size=(120, 16))
        X[:, 0] += signal * y
        probe = scores.probe_task("sentiment", X[:80], y[:80], X[80:], y[80:], top_n=2)
        out.append(scores.interpscore_report(
            parts={"loss_recovered": loss, "alive": alive, "l0_score": scores.l0_score(l0)}, task_results=[probe],
            sae_repo=f"someone/sae-{n}", model="tiny:gpt2", layer=1, d_model=64, d_sae=48, k=6,
            tokens_trained=1000 * (n + 1), eval_tokens=512))
    return out


def write_samples(folder: Path) -> dict[str, Path]:
    """Every sample as a JSON file in folder: {name: path}."""
    from shared.features.trace import trace_prompt
    from shared.model.loading import load_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, tok = load_model("tiny-trained:gpt2")
    sae = _sae(model, 0)
    catalog = feature_catalog(model, tok, sae)
    samples = {"feature_catalog.json": catalog,
               "trace.json": trace_prompt(model, tok, sae, 1, PROMPT, top_n=4, catalog=catalog, alphas=(-3, 0, 3),
                                          max_new_tokens=4, model_id="tiny-trained:gpt2", sae_repo="local/tiny-topk"),
               "circuit.json": circuit()}
    samples.update({f"interpscore_{n}.json": r for n, r in enumerate(interpscores())})
    samples.update({f"hostile_{name}": hostile(data) for name, data in list(samples.items())[:3]})
    paths = {}
    for name, value in samples.items():
        paths[name] = folder / name
        paths[name].write_text(json.dumps(value, indent=1), encoding="utf-8")
    return paths


def _poison(value, n=None):
    """Every string of value with a payload put in front of it (numbers and keys kept)."""
    n = itertools.count() if n is None else n
    if isinstance(value, str):
        return PAYLOADS[next(n) % len(PAYLOADS)] + value
    if isinstance(value, list):
        return [_poison(v, n) for v in value]
    if isinstance(value, dict):
        return {k: _poison(v, n) for k, v in value.items()}
    return value


def hostile(data: dict) -> dict:
    """The sample with payloads in its names, tokens, labels and texts. Strings that must match each other
    (a circuit's node ids and edge ends, a trace's feature ids and counterfactual keys) get the same
    payload; a circuit's node kinds and layers are kept, so its shapes are still drawn."""
    if "nodes" in data:
        rename = {n["id"]: PAYLOADS[i % len(PAYLOADS)] + n["id"] for i, n in enumerate(data["nodes"])}
        return {**_poison(data), "nodes": [{**n, "id": rename[n["id"]], "name": PAYLOADS[1] + "name"}
                                           for n in data["nodes"]],
                "edges": [{**e, "source": rename[e["source"]], "target": rename[e["target"]]} for e in data["edges"]]}
    out = _poison(data)
    if "counterfactuals" in data:
        ids = [PAYLOADS[i % len(PAYLOADS)] + f["id"] for i, f in enumerate(data["features"])]
        out["features"] = [{**f, "id": i} for f, i in zip(out["features"], ids)]
        out["counterfactuals"] = {i: _poison(data["counterfactuals"][f["id"]]) for f, i in zip(data["features"], ids)}
    return out
