"""Self-contained HTML views of SAE features: a feature card and a token x feature heat map.

Everything is inline (CSS in a <style> block, the histogram as inline SVG, no script, no external
URL), so a view renders offline, in a notebook output cell or a saved file. Token text is always
HTML-escaped. `feature_card` reads a feature_catalog entry (features.catalog_entries); `page`
wraps fragments into a whole document; `show` displays inline in Jupyter.
"""
from __future__ import annotations

import html as _html
import math
import re
from typing import Mapping, Sequence

_CSS = """
.sl-card{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;font-size:13px;color:#1b1b1f;
 border:1px solid #d0d4dc;border-radius:8px;padding:12px 14px;margin:8px 0;max-width:980px;background:#fff}
.sl-card h3{margin:0 0 4px;font-size:16px}
.sl-muted{color:#5f6470}
.sl-desc{margin:2px 0 8px}
.sl-stats{display:flex;flex-wrap:wrap;gap:6px 18px;margin:6px 0 10px}
.sl-stats b{font-variant-numeric:tabular-nums}
.sl-row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.sl-sec{margin:6px 0}
.sl-sec h4{margin:0 0 4px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5f6470}
.sl-chip{display:inline-block;font-family:ui-monospace,Menlo,Consolas,monospace;padding:1px 5px;margin:1px;
 border-radius:4px;white-space:pre}
.sl-pos{background:#d8f0dc}.sl-neg{background:#f7d9d9}
.sl-ex{font-family:ui-monospace,Menlo,Consolas,monospace;line-height:1.9;margin:3px 0;padding:3px 6px;
 background:#fafbfc;border-radius:4px;overflow-wrap:anywhere}
.sl-ex .sl-val{display:inline-block;min-width:56px;color:#5f6470;font-variant-numeric:tabular-nums}
.sl-tok{white-space:pre;border-radius:3px;padding:1px 0}
.sl-peak{outline:1.5px solid #c2410c}
.sl-heat{border-collapse:collapse;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.sl-heat th,.sl-heat td{border:1px solid #eef0f3;padding:2px 4px;text-align:center;white-space:pre}
.sl-heat th.sl-fname{text-align:left;font-family:system-ui,sans-serif;font-weight:600}
.sl-heat thead th{writing-mode:vertical-rl;transform:rotate(180deg);max-height:120px;overflow:hidden;
 text-overflow:ellipsis;font-weight:normal}
"""


def esc(text) -> str:
    """HTML-escape anything as text (quotes too, so it is safe inside attributes)."""
    return _html.escape(str(text), quote=True)


def _token_text(tok: str) -> str:
    """A token shown visibly: newlines and tabs as symbols, then escaped."""
    return esc(str(tok).replace("\n", "↵").replace("\t", "⇥"))


def _num(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def _bg(value: float, scale: float) -> str:
    """Orange for positive, blue for negative, alpha by |value| / scale."""
    a = 0.0 if scale <= 0 else min(abs(float(value)) / scale, 1.0)
    rgb = "234,88,12" if value >= 0 else "37,99,235"
    return f"background:rgba({rgb},{a * 0.85:.3f})"


def _histogram_svg(hist: Mapping, width: int = 280, height: int = 70) -> str:
    counts = [int(c) for c in hist.get("counts", [])]
    edges = [float(e) for e in hist.get("edges", [])]
    if not counts or max(counts) == 0:
        return '<span class="sl-muted">no activations</span>'
    used = [i for i, c in enumerate(counts) if c]
    lo, hi = used[0], used[-1] + 1  # show the occupied range of bins
    shown, top = counts[lo:hi], max(counts)
    bw = width / len(shown)
    bars = []
    for i, c in enumerate(shown):
        h = (height - 14) * math.log1p(c) / math.log1p(top)
        tip = f"{_num(edges[lo + i])}–{_num(edges[lo + i + 1])}: {c}" if len(edges) > hi else str(c)
        bars.append(f'<rect x="{i * bw + 0.5:.1f}" y="{height - 14 - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                    f'height="{h:.1f}" fill="#ea580c"><title>{esc(tip)}</title></rect>')
    left = _num(edges[lo]) if edges else ""
    right = _num(edges[hi]) if len(edges) > hi else ""
    return (f'<svg width="{width}" height="{height}" role="img" '
            f'aria-label="activation histogram">{"".join(bars)}'
            f'<text x="0" y="{height - 2}" font-size="10" fill="#5f6470">{esc(left)}</text>'
            f'<text x="{width}" y="{height - 2}" font-size="10" fill="#5f6470" text-anchor="end">{esc(right)}</text>'
            "</svg>")


def _example(ex: Mapping, scale: float) -> str:
    val = f'<span class="sl-val">{_num(ex.get("activation"))}</span>'
    tokens, acts = ex.get("tokens"), ex.get("token_activations")
    if not tokens or acts is None or len(acts) != len(tokens):
        return f'<div class="sl-ex">{val}{esc(ex.get("text", ""))}</div>'
    peak = ex.get("peak")
    spans = []
    for i, (tok, a) in enumerate(zip(tokens, acts)):
        cls = "sl-tok sl-peak" if i == peak else "sl-tok"
        spans.append(f'<span class="{cls}" style="{_bg(a, scale)}" title="{esc(_num(a))}">{_token_text(tok)}</span>')
    return f'<div class="sl-ex">{val}{"".join(spans)}</div>'


def _effects(effects: Mapping) -> str:
    cols = []
    for key, cls in (("promoted", "sl-pos"), ("suppressed", "sl-neg")):
        items = effects.get(key) or []
        chips = "".join(f'<span class="sl-chip {cls}" title="{esc(_num(it.get("logit")))}">'
                        f'{_token_text(it.get("token", it.get("token_id", "?")))}</span>' for it in items)
        cols.append(f'<div class="sl-sec"><h4>{key}</h4>{chips or "<span class=sl-muted>–</span>"}</div>')
    return "".join(cols)


def feature_card(entry: Mapping) -> str:
    """One feature as an HTML fragment: label, score and density, activation histogram, logit
    effects, and the top contexts with each token shaded by the feature's activation there."""
    fid = entry.get("id", "?")
    rank = f'#{esc(entry["rank"])} · ' if entry.get("rank") is not None else ""
    name = esc(entry.get("name") or f"latent {fid}")
    conf = entry.get("confidence")
    stats = [("latent", esc(fid)), ("score", _num(entry.get("score"))),
             ("fire rate", f'{100 * float(entry.get("fire_rate", 0)):.3g}%'),
             ("mean when fired", _num(entry.get("mean_when_fired"))),
             ("max", _num(entry.get("max_activation"))), ("fires", esc(entry.get("fire_count", "–"))),
             ("label confidence", _num(conf, 2) if conf is not None else "–")]
    examples = entry.get("top_activating_examples") or []
    scale = max([float(entry.get("max_activation") or 0)] + [float(e.get("activation") or 0) for e in examples])
    parts = [f'<style>{_CSS}</style><div class="sl-card">',
             f'<h3>{rank}{name}</h3>',
             f'<div class="sl-desc">{esc(entry.get("desc", ""))}</div>' if entry.get("desc") else "",
             '<div class="sl-stats">' + "".join(f'<span class="sl-muted">{k} <b>{v}</b></span>' for k, v in stats)
             + "</div>", '<div class="sl-row">']
    if entry.get("histogram"):
        parts.append(f'<div class="sl-sec"><h4>activation histogram (log bins, log counts)</h4>'
                     f'{_histogram_svg(entry["histogram"])}</div>')
    if entry.get("logit_effects"):
        parts.append(_effects(entry["logit_effects"]))
    parts.append('</div><div class="sl-sec"><h4>top activating contexts</h4>')
    parts += [_example(ex, scale) for ex in examples] or ['<span class="sl-muted">none</span>']
    parts.append("</div></div>")
    return "".join(parts)


def _rows(activations) -> list[list[float]]:
    if hasattr(activations, "tolist"):
        activations = activations.tolist()
    return [[float(v) for v in row] for row in activations]


def trace_heatmap(tokens: Sequence[str], features: Sequence, activations) -> str:
    """A token x feature table: one row per feature (a name, or a dict with id/name), one column per
    token, each cell shaded by activations[feature][token] over that row's largest magnitude."""
    rows = _rows(activations)
    if len(rows) != len(features) or any(len(r) != len(tokens) for r in rows):
        raise ValueError(f"activations must be [n_features={len(features)}][n_tokens={len(tokens)}], got "
                         f"{len(rows)} rows of lengths {sorted({len(r) for r in rows})}.")
    head = "".join(f"<th>{_token_text(t)}</th>" for t in tokens)
    body = []
    for feat, row in zip(features, rows):
        if isinstance(feat, Mapping):
            label = " ".join(str(x) for x in (feat.get("id", ""), feat.get("name", "")) if x != "")
        else:
            label = str(feat)
        scale = max((abs(v) for v in row), default=0.0)
        cells = "".join(f'<td style="{_bg(v, scale)}" title="{esc(_token_text(t))}: {esc(_num(v))}">&nbsp;</td>'
                        for t, v in zip(tokens, row))
        body.append(f'<tr><th class="sl-fname">{esc(label)}</th>{cells}</tr>')
    return (f'<style>{_CSS}</style><div class="sl-card"><table class="sl-heat"><thead><tr><th></th>{head}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def page(*fragments: str, title: str = "SAE features") -> str:
    """A whole HTML document around fragments (feature_card / trace_heatmap output), for saving."""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<title>{esc(title)}</title></head><body style="margin:16px">{"".join(fragments)}</body></html>')


def show(html: str):
    """Display the HTML inline in a Jupyter notebook; outside one, return the string."""
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        return html
    if get_ipython() is None:
        return html
    display(HTML(html))
    return None


# ----------------------------------------------------------------------------- circuit graph (sparse feature circuits)

_POS_RGB, _NEG_RGB = "37,99,235", "220,38,38"  # blue: raises the metric, red: lowers it


def _layer_key(layer: str, first_seen: int) -> tuple:
    """Draw order of a CircuitData layer: "embed" first, "L<n>" by n, "logits" last, others as they came."""
    m = re.fullmatch(r"L(\d+)", str(layer))
    if layer == "embed":
        return (0, 0, first_seen)
    if m:
        return (1, int(m.group(1)), first_seen)
    return (3 if layer == "logits" else 2, 0, first_seen)


def _fill(score: float, scale: float) -> str:
    a = 0.15 + 0.75 * (min(abs(score) / scale, 1.0) if scale > 0 else 0.0)
    return f"rgba({_POS_RGB if score >= 0 else _NEG_RGB},{a:.3f})"


def circuit_graph(circuit: Mapping, *, max_nodes_per_layer: int = 24, title: str = "") -> str:
    """A CircuitData dict (circuit.json) as a layered SVG: one row per layer, earliest at the bottom; SAE
    features as circles, error nodes as triangles, other kinds as squares; node colour and edge colour by
    sign (blue raises the metric, red lowers it), edge width by |score|. At most max_nodes_per_layer nodes
    per layer (largest |score| first); edges to nodes left out are not drawn."""
    if max_nodes_per_layer < 1:
        raise ValueError(f"max_nodes_per_layer must be >= 1, got {max_nodes_per_layer}")
    nodes = list(circuit.get("nodes") or [])
    order: dict[str, int] = {}
    for n in nodes:
        order.setdefault(str(n["layer"]), len(order))
    layers = sorted(order, key=lambda L: _layer_key(L, order[L]))
    rows = {L: sorted((n for n in nodes if str(n["layer"]) == L), key=lambda n: -abs(float(n["score"])))
            [:max_nodes_per_layer] for L in layers}
    step_x, step_y, pad, label_w = 64, 120, 36, 60
    widest = max((len(r) for r in rows.values()), default=1)
    width, height = label_w + pad * 2 + step_x * max(widest - 1, 1), pad * 2 + step_y * max(len(layers) - 1, 0) + 30
    pos: dict[str, tuple[float, float]] = {}
    for k, L in enumerate(layers):
        y = height - pad - 15 - k * step_y
        row = rows[L]
        x0 = label_w + pad + (step_x * (widest - len(row))) / 2
        for i, n in enumerate(row):
            pos[n["id"]] = (x0 + i * step_x, y)
    node_scale = max((abs(float(n["score"])) for n in nodes), default=0.0)
    edges = [e for e in circuit.get("edges") or [] if e["source"] in pos and e["target"] in pos]
    edge_scale = max((abs(float(e["score"])) for e in edges), default=0.0)
    parts = [f'<svg class="sl-circuit" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="circuit graph" '
             'font-family="system-ui,sans-serif" font-size="10">']
    for k, L in enumerate(layers):
        y = height - pad - 15 - k * step_y
        parts.append(f'<text x="6" y="{y + 4:.1f}" font-weight="600" fill="#5f6470">{esc(L)}</text>')
    for e in sorted(edges, key=lambda e: abs(float(e["score"]))):
        (x1, y1), (x2, y2) = pos[e["source"]], pos[e["target"]]
        s = float(e["score"])
        w = 0.6 + 5.4 * (abs(s) / edge_scale if edge_scale > 0 else 0.0)
        parts.append(f'<line class="sl-edge" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                     f'stroke="rgb({_POS_RGB if s >= 0 else _NEG_RGB})" stroke-opacity="0.65" stroke-width="{w:.2f}">'
                     f'<title>{esc(e["source"])} → {esc(e["target"])}: {esc(_num(s))}</title></line>')
    for n in (n for row in rows.values() for n in row):
        x, y = pos[n["id"]]
        s, kind = float(n["score"]), n.get("kind", "")
        tip = f'<title>{esc(n["id"])}{" " + esc(n["name"]) if n.get("name") else ""} ({esc(kind)}): {esc(_num(s))}</title>'
        style = f'fill="{_fill(s, node_scale)}" stroke="#1b1b1f" stroke-width="1"'
        if kind == "feature":
            parts.append(f'<circle class="sl-node sl-feature" cx="{x:.1f}" cy="{y:.1f}" r="11" {style}>{tip}</circle>')
        elif kind == "error":
            pts = f"{x:.1f},{y - 13:.1f} {x - 12:.1f},{y + 9:.1f} {x + 12:.1f},{y + 9:.1f}"
            parts.append(f'<polygon class="sl-node sl-error" points="{pts}" {style}>{tip}</polygon>')
        else:
            parts.append(f'<rect class="sl-node sl-other" x="{x - 10:.1f}" y="{y - 10:.1f}" width="20" height="20" '
                         f'{style}>{tip}</rect>')
        label = str(n.get("name") or n["id"].split(".", 1)[-1])
        label = label if len(label) <= 12 else label[:11] + "…"
        parts.append(f'<text x="{x:.1f}" y="{y + 25:.1f}" text-anchor="middle" fill="#1b1b1f">{esc(label)}</text>')
    parts.append("</svg>")
    shown = sum(len(r) for r in rows.values())
    note = (f'{shown} of {len(nodes)} nodes, {len(edges)} edges · circle: SAE feature, triangle: SAE error node · '
            'blue raises the metric, red lowers it · edge width ∝ |effect|')
    head = f"<h3>{esc(title)}</h3>" if title else ""
    return (f'<style>{_CSS}</style><div class="sl-card" style="overflow-x:auto">{head}<div class="sl-muted sl-desc">{esc(note)}</div>'
            f'{"".join(parts)}</div>')
