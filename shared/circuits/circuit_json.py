"""circuit.json (CircuitData): a found circuit's nodes and edges with their scores, written and checked.

{"nodes": [{"id": "L8.f2503" | "L8.error" | "L3.h2" | "L3.mlp" | ..., "layer": "L8", "score": float,
            "kind": "feature" | "error" | "head" | "mlp" | "q" | "k" | ..., "name"?: str}],
 "edges": [{"source": id, "target": id, "score": float}],
 "metric": str, "prompts_n": int, "tau_node": float, "tau_edge": float | None,
 "model"?: str, "sae_repo"?: str, "method"?: "atp" | "atp*" | "atp-ig" | "acdc" | "eap" | "patching"}
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

METHODS = ("atp", "atp*", "atp-ig", "acdc", "eap", "patching", "sfc")
NODE_KINDS = ("feature", "error", "head", "q", "k", "v", "mlp", "attn", "resid", "embed", "logits", "neuron")
_LAYER = re.compile(r"L\d+|[a-z_]+")  # "L11", or a named place such as "embed" / "logits"


def _fail(msg: str):
    raise ValueError(f"invalid CircuitData: {msg}")


def _number(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        _fail(f"{what} must be a finite number, got {x!r}")
    return float(x)


def validate_circuit(data: dict) -> dict:
    """The CircuitData dict itself when it is well formed; else a one-line ValueError saying what is wrong."""
    if not isinstance(data, dict):
        _fail(f"expected a JSON object, got {type(data).__name__}")
    for key in ("nodes", "edges", "metric", "prompts_n", "tau_node", "tau_edge"):
        if key not in data:
            _fail(f"missing key {key!r}")
    if not isinstance(data["nodes"], list) or not isinstance(data["edges"], list):
        _fail("nodes and edges must be lists")
    ids = set()
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or not {"id", "layer", "score", "kind"} <= set(node):
            _fail(f"node {i} must have id, layer, score and kind, got {node!r}")
        if not isinstance(node["id"], str) or not node["id"]:
            _fail(f"node {i} id must be a non-empty string")
        if node["id"] in ids:
            _fail(f"node id {node['id']!r} appears twice")
        ids.add(node["id"])
        if not isinstance(node["layer"], str) or not _LAYER.fullmatch(node["layer"]):
            _fail(f"node {node['id']!r} layer must be a string such as 'L11', got {node['layer']!r}")
        if node["kind"] not in NODE_KINDS:
            _fail(f"node {node['id']!r} kind {node['kind']!r} is not one of {', '.join(NODE_KINDS)}")
        _number(node["score"], f"node {node['id']!r} score")
        if "name" in node and node["name"] is not None and not isinstance(node["name"], str):
            _fail(f"node {node['id']!r} name must be a string")
    for i, edge in enumerate(data["edges"]):
        if not isinstance(edge, dict) or not {"source", "target", "score"} <= set(edge):
            _fail(f"edge {i} must have source, target and score, got {edge!r}")
        for end in ("source", "target"):
            if edge[end] not in ids:
                _fail(f"edge {i} {end} {edge[end]!r} is not a node id")
        _number(edge["score"], f"edge {i} score")
    if not isinstance(data["metric"], str) or not data["metric"]:
        _fail("metric must be a non-empty string (e.g. 'logit_diff')")
    if isinstance(data["prompts_n"], bool) or not isinstance(data["prompts_n"], int) or data["prompts_n"] < 1:
        _fail(f"prompts_n must be a positive int, got {data['prompts_n']!r}")
    _number(data["tau_node"], "tau_node")
    if data["tau_edge"] is not None:
        _number(data["tau_edge"], "tau_edge")
    if data.get("method") is not None and data["method"] not in METHODS:
        _fail(f"method {data['method']!r} is not one of {', '.join(METHODS)}")
    return data


def node_entries(scores: dict[str, float], kinds: dict[str, str], *, tau: float = 0.0, top_n: int | None = None,
                 names: dict[str, str] | None = None) -> list[dict]:
    """CircuitData node dicts of the nodes with |score| >= tau (at most top_n, largest |score| first).
    kinds: {id: kind}; the layer is read from the id's "L<n>." prefix."""
    keep = sorted((i for i in scores if abs(scores[i]) >= tau), key=lambda i: -abs(scores[i]))[:top_n]
    out = []
    for i in keep:
        entry = {"id": i, "layer": i.split(".", 1)[0], "score": float(scores[i]), "kind": kinds[i]}
        if names and names.get(i):
            entry["name"] = names[i]
        out.append(entry)
    return out


def write_circuit(path, nodes: list[dict], edges: list[dict], *, metric: str, prompts_n: int,
                  tau_node: float, tau_edge: float | None = None, **meta) -> dict:
    """Write circuit.json at `path` (validated first; nothing written when invalid) and return the dict.
    meta: model, sae_repo, method and any other JSON-able entries."""
    data = {"nodes": list(nodes), "edges": list(edges), "metric": metric, "prompts_n": prompts_n,
            "tau_node": tau_node, "tau_edge": tau_edge, **{k: v for k, v in meta.items() if v is not None}}
    validate_circuit(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return data
