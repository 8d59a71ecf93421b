/* SAE notebook ladder viewers: trace.json, circuit.json, feature_catalog.json, interpscore.json.
   One script for the site's viewer pages and the notebooks' self-contained HTML (shared/viewer.py holds
   it). The data is untrusted: every string goes into the page as text, never as markup. */
(function () {
  "use strict";
  if (window.SaeLadderViewer) { return; }
  var SVGNS = "http://www.w3.org/2000/svg";
  var KINDS = {
    trace: {file: "trace.json", page: "trace.html"},
    circuit: {file: "circuit.json", page: "circuit.html"},
    catalog: {file: "feature_catalog.json", page: "catalog.html"},
    leaderboard: {file: "interpscore.json", page: "leaderboard.html"}
  };
  var PARTS = ["loss_recovered", "alive", "l0_score", "sparse_probing", "tpp"];
  var PART_COLOURS = ["#2563eb", "#16a34a", "#ca8a04", "#9333ea", "#ea580c", "#0891b2", "#db2777"];
  var POS = "37,99,235", NEG = "220,38,38";  /* circuits: blue raises the metric, red lowers it */
  var PRIVATE_HINT = " (a private Hub repo answers so: make it public, or drop the file here)";

  function ViewerError(message) { this.name = "ViewerError"; this.message = message; }
  ViewerError.prototype = Object.create(Error.prototype);

  /* ------------------------------------------------------------------ DOM: text only */
  function fill(el, attrs, kids) {
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) { return; }
      if (typeof v === "function") { el.addEventListener(k, v); }
      else if (k === "href") { el.setAttribute("href", safeHref(v)); }
      else { el.setAttribute(k, String(v)); }
    });
    add(el, kids);
    return el;
  }
  function h(tag, attrs, kids) { return fill(document.createElement(tag), attrs, kids); }
  function s(tag, attrs, kids) { return fill(document.createElementNS(SVGNS, tag), attrs, kids); }
  function add(el, kids) {
    if (kids === null || kids === undefined || kids === false) { return; }
    if (Array.isArray(kids)) { kids.forEach(function (k) { add(el, k); }); return; }
    el.appendChild(kids instanceof Node ? kids : document.createTextNode(String(kids)));
  }
  function safeHref(u) {
    var text = String(u);
    if (text.charAt(0) === "#") { return "#" + text.slice(1).replace(/[^A-Za-z0-9_.-]/g, "_"); }
    try {
      var url = new URL(text, document.baseURI);
      if (url.protocol === "https:" || url.protocol === "http:" ||
          (url.protocol === "file:" && location.protocol === "file:")) { return url.href; }
    } catch (e) { /* not a URL */ }
    return "#";
  }
  function anchor(id) { return "slv-f-" + String(id).replace(/[^A-Za-z0-9_.-]/g, "_"); }
  function cell(text, cls) { return h("td", {"class": cls || null}, text); }
  function numCell(text) { return cell(text, "slv-num"); }

  /* ------------------------------------------------------------------ numbers and text */
  function num(x, digits) {
    if (x === null || x === undefined || x === "") { return "–"; }
    var v = Number(x);
    if (!isFinite(v)) { return "–"; }
    return String(Number(v.toPrecision(digits || 3)));
  }
  function count(x) {
    var v = Number(x);
    return (x === null || x === undefined || !isFinite(v)) ? "–" : v.toLocaleString("en-US");
  }
  function tok(t) { return String(t).replace(/\n/g, "↵").replace(/\t/g, "⇥"); }
  function label(x) { return (x === null || x === undefined) ? "" : String(x); }
  function shade(v, scale) {
    var x = Number(v);
    if (!isFinite(x)) { x = 0; }
    var alpha = scale > 0 ? Math.min(Math.abs(x) / scale, 1) : 0;
    return "background:rgba(" + (x >= 0 ? "234,88,12" : "37,99,235") + "," + (alpha * 0.85).toFixed(3) + ")";
  }
  function maxAbs(values) {
    return values.reduce(function (m, v) { var x = Math.abs(Number(v)); return isFinite(x) && x > m ? x : m; }, 0);
  }
  function byAbsScore(a, b) { return Math.abs(b.score) - Math.abs(a.score); }
  function facts(pairs) {
    var shown = pairs.filter(function (p) { return p[1] !== undefined && p[1] !== null && p[1] !== ""; });
    return h("div", {"class": "slv-facts"}, shown.map(function (p) {
      return h("span", null, [p[0] + " ", h("b", null, label(p[1]))]);
    }));
  }
  function table(cls, headings, rows) {
    var head = h("tr", null, headings.map(function (c) { return h("th", {"class": c === "score" ? "slv-num" : null}, c); }));
    return h("table", {"class": "slv-table " + cls}, [h("thead", null, head), h("tbody", null, rows)]);
  }

  /* ------------------------------------------------------------------ checks: one line naming the field */
  var isList = Array.isArray;
  function isObj(x) { return x !== null && typeof x === "object" && !Array.isArray(x); }
  function has(d, k) { return Object.prototype.hasOwnProperty.call(d, k); }
  function isNum(x) { return typeof x === "number" && isFinite(x); }
  function isText(x) { return typeof x === "string" || isNum(x); }
  function typeName(x) { return x === null ? "null" : Array.isArray(x) ? "a list" : typeof x; }
  function withArticle(file) { return (/^[aeiou]/i.test(file) ? "an " : "a ") + file; }
  function guess(d) {
    if (isList(d) && d.length && d.every(function (x) { return isObj(x) && has(x, "interp_score"); })) {
      return "leaderboard";
    }
    if (!isObj(d)) { return null; }
    if (isList(d.nodes) && isList(d.edges)) { return "circuit"; }
    if (isList(d.tokens)) { return "trace"; }
    if (has(d, "interp_score") || has(d, "components")) { return "leaderboard"; }
    if (isList(d.features)) { return "catalog"; }
    return null;
  }
  function hint(d, kind) {
    var g = guess(d);
    if (!g || g === kind) { return ""; }
    return " (it looks like " + withArticle(KINDS[g].file) + ": open it in " + KINDS[g].page + ")";
  }
  function need(d, kind, key, ok, what) {
    var file = KINDS[kind].file;
    if (!isObj(d)) {
      throw new ViewerError("not " + withArticle(file) + ": expected a JSON object, got " + typeName(d) + hint(d, kind));
    }
    if (!has(d, key)) {
      throw new ViewerError("not " + withArticle(file) + ": missing field '" + key + "'" + hint(d, kind));
    }
    if (ok && !ok(d[key])) {
      throw new ViewerError(file + ": field '" + key + "' must be " + what + ", got " + typeName(d[key]));
    }
    return d[key];
  }
  function each(list, kind, where, key, ok, what) {
    var file = KINDS[kind].file;
    list.forEach(function (item, i) {
      var at = file + ": " + where + " " + i;
      if (!isObj(item)) { throw new ViewerError(at + " must be an object"); }
      if (!has(item, key)) { throw new ViewerError(at + " is missing field '" + key + "'"); }
      if (ok && !ok(item[key])) { throw new ViewerError(at + " field '" + key + "' must be " + what); }
    });
  }

  /* ------------------------------------------------------------------ trace.json */
  function checkTrace(d) {
    var tokens = need(d, "trace", "tokens", isList, "a list of token strings");
    var features = need(d, "trace", "features", isList, "a list of {id, name} objects");
    var rows = need(d, "trace", "activations", isList, "a [feature][token] list of numbers");
    tokens.forEach(function (t, i) {
      if (!isText(t)) { throw new ViewerError("trace.json: token " + i + " must be a string"); }
    });
    each(features, "trace", "feature", "id", isText, "a string");
    if (rows.length !== features.length) {
      throw new ViewerError("trace.json: field 'activations' has " + rows.length + " rows for " +
                            features.length + " features");
    }
    rows.forEach(function (r, i) {
      if (!isList(r) || r.length !== tokens.length || !r.every(isNum)) {
        throw new ViewerError("trace.json: activations row " + i + " must be " + tokens.length +
                              " numbers, one per token");
      }
    });
    if (has(d, "counterfactuals") && d.counterfactuals !== null && !isObj(d.counterfactuals)) {
      throw new ViewerError("trace.json: field 'counterfactuals' must be an object {feature id: {alpha: text}}");
    }
  }

  function renderTrace(root, d) {
    checkTrace(d);
    var tokens = d.tokens, features = d.features, rows = d.activations, cf = d.counterfactuals || {};
    root.classList.add("slv-trace");
    if (d.prompt !== undefined) { add(root, h("div", {"class": "slv-title"}, label(d.prompt))); }
    add(root, facts([["model", d.model], ["layer", d.layer], ["SAE", d.sae_repo], ["tokens", tokens.length],
                     ["features", features.length]]));
    if (!features.length) { add(root, h("p", {"class": "slv-muted"}, "no feature fired on this prompt")); return; }
    var stripToks = tokens.map(function (t) { return h("span", {"class": "slv-tok"}, tok(t)); });
    var strip = h("div", {"class": "slv-strip", "aria-label": "prompt tokens"}, stripToks);
    var head = h("tr", null, [h("th", null, "")].concat(tokens.map(function (t) {
      return h("th", {title: label(t)}, tok(t));
    })));
    var body = h("tbody");
    var detail = h("div", {"class": "slv-card slv-detail"});
    var trs = features.map(function (f, i) {
      var scale = maxAbs(rows[i]);
      var name = [label(f.id), label(f.name)].filter(Boolean).join(" ");
      var cells = rows[i].map(function (v, t) {
        return h("td", {style: shade(v, scale), title: tok(tokens[t]) + ": " + num(v)}, " ");
      });
      var tr = h("tr", {"class": "slv-frow", tabindex: 0, click: function () { select(i); },
                        keydown: function (e) {
                          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(i); }
                        }},
                 [h("th", {title: label(f.desc) || name}, name)].concat(cells));
      add(body, tr);
      return tr;
    });
    var heat = h("table", {"class": "slv-heat"}, [h("thead", null, head), body]);
    add(root, [strip, h("div", {"class": "slv-scroll"}, heat),
               h("p", {"class": "slv-muted"}, "Each row is scaled to its own peak; click a feature to shade the " +
                                              "prompt by it and read its counterfactuals."),
               detail]);

    function select(i) {
      var f = features[i], scale = maxAbs(rows[i]);
      trs.forEach(function (tr, j) { tr.classList.toggle("slv-sel", i === j); });
      stripToks.forEach(function (el, t) {
        el.setAttribute("style", shade(rows[i][t], scale));
        el.title = num(rows[i][t]);
      });
      detail.textContent = "";
      add(detail, [h("h3", null, [label(f.id), " ", label(f.name)]),
                   f.desc ? h("div", {"class": "slv-desc"}, label(f.desc)) : null,
                   facts([["detection AUROC", f.auroc === null || f.auroc === undefined ? "–" : num(f.auroc)],
                          ["max activation", f.max_activation === undefined ? null : num(f.max_activation)],
                          ["summed", f.summed_activation === undefined ? null : num(f.summed_activation)]])]);
      var alts = cf[f.id];
      if (!isObj(alts)) { return; }
      var alphas = Object.keys(alts).sort(function (a, b) { return Number(a) - Number(b); });
      add(detail, [h("h4", null, "counterfactuals: the continuation with this feature pushed by α"),
                   h("table", {"class": "slv-table slv-cf"}, h("tbody", null, alphas.map(function (a) {
                     return h("tr", null, [h("th", {"class": "slv-num"}, "α = " + a), cell(tok(label(alts[a])))]);
                   })))]);
      if (d.alpha_unit) { add(detail, h("p", {"class": "slv-muted"}, "α unit: " + label(d.alpha_unit))); }
    }
    select(0);
  }

  /* ------------------------------------------------------------------ circuit.json */
  function checkCircuit(d) {
    var nodes = need(d, "circuit", "nodes", isList, "a list of {id, layer, score, kind}");
    var edges = need(d, "circuit", "edges", isList, "a list of {source, target, score}");
    ["id", "layer", "score", "kind"].forEach(function (k) {
      var score = k === "score";
      each(nodes, "circuit", "node", k, score ? isNum : isText, score ? "a number" : "a string");
    });
    var ids = {};
    nodes.forEach(function (n) { ids[String(n.id)] = true; });
    ["source", "target", "score"].forEach(function (k) {
      var score = k === "score";
      each(edges, "circuit", "edge", k, score ? isNum : isText, score ? "a number" : "a node id");
    });
    edges.forEach(function (e, i) {
      ["source", "target"].forEach(function (end) {
        if (!has(ids, String(e[end]))) {
          throw new ViewerError("circuit.json: edge " + i + " " + end + " '" + label(e[end]) + "' is not a node id");
        }
      });
    });
  }

  function layerKey(layer, first) {  /* draw order: "embed", then "L<n>" by n, other names, "logits" last */
    var m = /^L(\d+)$/.exec(layer);
    if (layer === "embed") { return [0, 0, first]; }
    if (m) { return [1, Number(m[1]), first]; }
    return [layer === "logits" ? 3 : 2, 0, first];
  }
  function byKey(a, b) {
    for (var i = 0; i < a.length; i++) { if (a[i] !== b[i]) { return a[i] - b[i]; } }
    return 0;
  }
  function fixed(x) { return x.toFixed(1); }

  function circuitGraph(nodes, edgesIn, perLayer) {
    var order = {}, n = 0;
    nodes.forEach(function (x) { var L = String(x.layer); if (!has(order, L)) { order[L] = n++; } });
    var layers = Object.keys(order).sort(function (a, b) {
      return byKey(layerKey(a, order[a]), layerKey(b, order[b]));
    });
    var rows = {};
    layers.forEach(function (L) {
      rows[L] = nodes.filter(function (x) { return String(x.layer) === L; }).sort(byAbsScore).slice(0, perLayer);
    });
    var stepX = 64, stepY = 120, pad = 36, labelW = 60;
    var widest = Math.max.apply(null, [1].concat(layers.map(function (L) { return rows[L].length; })));
    var width = labelW + pad * 2 + stepX * Math.max(widest - 1, 1);
    var height = pad * 2 + stepY * Math.max(layers.length - 1, 0) + 30;
    var pos = {};
    function rowY(k) { return height - pad - 15 - k * stepY; }
    layers.forEach(function (L, k) {
      var row = rows[L], x0 = labelW + pad + stepX * (widest - row.length) / 2;
      row.forEach(function (x, i) { pos[String(x.id)] = [x0 + i * stepX, rowY(k)]; });
    });
    var nodeScale = maxAbs(nodes.map(function (x) { return x.score; }));
    var edges = edgesIn.filter(function (e) { return has(pos, String(e.source)) && has(pos, String(e.target)); });
    var edgeScale = maxAbs(edges.map(function (e) { return e.score; }));
    var g = s("svg", {"class": "slv-circuit", width: width, height: height, viewBox: "0 0 " + width + " " + height,
                      role: "img", "aria-label": "circuit graph", "font-family": "system-ui,sans-serif",
                      "font-size": 10});
    layers.forEach(function (L, k) {
      add(g, s("text", {x: 6, y: fixed(rowY(k) + 4), "font-weight": 600, fill: "#5f6470"}, L));
    });
    edges.slice().sort(function (a, b) { return byAbsScore(b, a); }).forEach(function (e) {
      var p = pos[String(e.source)], q = pos[String(e.target)];
      var w = 0.6 + 5.4 * (edgeScale > 0 ? Math.abs(e.score) / edgeScale : 0);
      add(g, s("line", {"class": "slv-edge", x1: fixed(p[0]), y1: fixed(p[1]), x2: fixed(q[0]), y2: fixed(q[1]),
                        stroke: "rgb(" + (e.score >= 0 ? POS : NEG) + ")", "stroke-opacity": 0.65,
                        "stroke-width": w.toFixed(2)},
               s("title", null, label(e.source) + " → " + label(e.target) + ": " + num(e.score))));
    });
    layers.forEach(function (L) {
      rows[L].forEach(function (x) {
        var p = pos[String(x.id)];
        var alpha = 0.15 + 0.75 * (nodeScale > 0 ? Math.min(Math.abs(x.score) / nodeScale, 1) : 0);
        var style = {fill: "rgba(" + (x.score >= 0 ? POS : NEG) + "," + alpha.toFixed(3) + ")", stroke: "#1b1b1f",
                     "stroke-width": 1};
        var name = x.name ? " " + label(x.name) : "";
        var tip = s("title", null, label(x.id) + name + " (" + label(x.kind) + "): " + num(x.score));
        var shape;
        if (x.kind === "feature") {
          shape = s("circle", Object.assign({"class": "slv-node slv-feature", cx: fixed(p[0]), cy: fixed(p[1]), r: 11},
                                            style), tip);
        } else if (x.kind === "error") {
          var pts = [[p[0], p[1] - 13], [p[0] - 12, p[1] + 9], [p[0] + 12, p[1] + 9]].map(function (c) {
            return fixed(c[0]) + "," + fixed(c[1]);
          }).join(" ");
          shape = s("polygon", Object.assign({"class": "slv-node slv-error-node", points: pts}, style), tip);
        } else {
          shape = s("rect", Object.assign({"class": "slv-node slv-other", x: fixed(p[0] - 10), y: fixed(p[1] - 10),
                                           width: 20, height: 20}, style), tip);
        }
        var text = label(x.name || String(x.id).split(".").slice(1).join(".") || x.id);
        if (text.length > 12) { text = text.slice(0, 11) + "…"; }
        add(g, [shape, s("text", {x: fixed(p[0]), y: fixed(p[1] + 25), "text-anchor": "middle", fill: "#1b1b1f"},
                         text)]);
      });
    });
    var shown = layers.reduce(function (m, L) { return m + rows[L].length; }, 0);
    return {svg: g, note: shown + " of " + nodes.length + " nodes, " + edges.length + " edges drawn · circle: SAE " +
                          "feature, triangle: SAE error node, square: other · blue raises the metric, red lowers " +
                          "it · edge width ∝ |effect|"};
  }

  function renderCircuit(root, d, title) {
    checkCircuit(d);
    root.classList.add("slv-circuitview");
    if (title) { add(root, h("div", {"class": "slv-title"}, label(title))); }
    add(root, facts([["metric", d.metric], ["method", d.method], ["prompts", d.prompts_n], ["τ node", d.tau_node],
                     ["τ edge", d.tau_edge], ["model", d.model], ["SAE", d.sae_repo], ["task", d.task]]));
    var graph = circuitGraph(d.nodes, d.edges, 24);
    add(root, [h("p", {"class": "slv-muted"}, graph.note), h("div", {"class": "slv-scroll slv-graph"}, graph.svg)]);
    var nodes = d.nodes.slice().sort(byAbsScore), edges = d.edges.slice().sort(byAbsScore);
    add(root, h("details", {open: true}, [
      h("summary", null, nodes.length + " nodes"),
      table("slv-nodes", ["id", "layer", "kind", "name", "score"], nodes.map(function (x) {
        return h("tr", null, [cell(label(x.id)), cell(label(x.layer)), cell(label(x.kind)), cell(label(x.name)),
                              numCell(num(x.score, 4))]);
      }))]));
    add(root, h("details", {open: edges.length <= 60}, [
      h("summary", null, edges.length + " edges"),
      table("slv-edges", ["source", "target", "score"], edges.map(function (e) {
        return h("tr", null, [cell(label(e.source)), cell(label(e.target)), numCell(num(e.score, 4))]);
      }))]));
  }

  /* ------------------------------------------------------------------ feature_catalog.json */
  function checkCatalog(d) {
    var features = need(d, "catalog", "features", isList, "a list of feature objects");
    each(features, "catalog", "feature", "id", isText, "a number or string");
  }

  function histogram(hist) {
    var counts = isList(hist.counts) ? hist.counts.map(Number) : [];
    var edges = isList(hist.edges) ? hist.edges.map(Number) : [];
    var used = [];
    counts.forEach(function (c, i) { if (c > 0) { used.push(i); } });
    if (!used.length) { return h("span", {"class": "slv-muted"}, "no activations"); }
    var lo = used[0], hi = used[used.length - 1] + 1, shown = counts.slice(lo, hi), top = Math.max.apply(null, shown);
    var width = 280, height = 70, bw = width / shown.length, grey = {"font-size": 10, fill: "#5f6470"};
    var g = s("svg", {width: width, height: height, role: "img", "aria-label": "activation histogram",
                      "class": "slv-hist"});
    shown.forEach(function (c, i) {
      var bh = (height - 14) * Math.log1p(c) / Math.log1p(top);
      var tip = edges.length > hi ? num(edges[lo + i]) + "–" + num(edges[lo + i + 1]) + ": " + c : String(c);
      add(g, s("rect", {x: fixed(i * bw + 0.5), y: fixed(height - 14 - bh), width: fixed(Math.max(bw - 1, 1)),
                        height: fixed(bh), fill: "#ea580c"}, s("title", null, tip)));
    });
    add(g, [s("text", Object.assign({x: 0, y: height - 2}, grey), edges.length ? num(edges[lo]) : ""),
            s("text", Object.assign({x: width, y: height - 2, "text-anchor": "end"}, grey),
              edges.length > hi ? num(edges[hi]) : "")]);
    return g;
  }

  function example(ex, scale) {
    var val = h("span", {"class": "slv-val"}, num(ex.activation));
    var tokens = ex.tokens, acts = ex.token_activations;
    if (!isList(tokens) || !isList(acts) || acts.length !== tokens.length || !tokens.length) {
      return h("div", {"class": "slv-ex"}, [val, label(ex.text)]);
    }
    return h("div", {"class": "slv-ex"}, [val].concat(tokens.map(function (t, i) {
      return h("span", {"class": i === ex.peak ? "slv-tok slv-peak" : "slv-tok", style: shade(acts[i], scale),
                        title: num(acts[i])}, tok(t));
    })));
  }

  function effects(fx) {
    return [["promoted", "slv-pos"], ["suppressed", "slv-neg"]].map(function (p) {
      var items = isList(fx[p[0]]) ? fx[p[0]] : [];
      var chips = items.map(function (it) {
        it = isObj(it) ? it : {token: it};
        var text = tok(label(has(it, "token") ? it.token : it.token_id));
        return h("span", {"class": "slv-chip " + p[1], title: num(it.logit)}, text);
      });
      return h("div", {"class": "slv-sec"}, [h("h4", null, p[0])].concat(
        chips.length ? chips : [h("span", {"class": "slv-muted"}, "–")]));
    });
  }

  function nearest(f, byId, onJump) {
    var chips = f.nearest.filter(isObj).map(function (nb) {
      var known = has(byId, String(nb.id));
      var text = (known ? label(byId[String(nb.id)].name) + " · " : "latent ") + label(nb.id) +
                 " (" + num(nb.cosine, 2) + ")";
      return known ? h("a", {"class": "slv-chip", href: "#" + anchor(nb.id), click: function () { onJump(nb.id); }},
                       text)
                   : h("span", {"class": "slv-chip", title: "not in this catalog"}, text);
    });
    return h("div", {"class": "slv-sec slv-nearest"}, [h("h4", null, "nearest features by decoder cosine")]
      .concat(chips));
  }

  function featureCard(f, byId, onJump) {
    var examples = isList(f.top_activating_examples) ? f.top_activating_examples.filter(isObj) : [];
    var scale = Math.max.apply(null, [Number(f.max_activation) || 0].concat(examples.map(function (e) {
      return Number(e.activation) || 0;
    })));
    var rate = isNum(f.fire_rate) ? num(100 * f.fire_rate) + "%" : "–";
    var stats = [["latent", label(f.id)], ["score", num(f.score)], ["fire rate", rate],
                 ["mean when fired", num(f.mean_when_fired)], ["max", num(f.max_activation)],
                 ["fires", count(f.fire_count)], ["label confidence", num(f.confidence, 2)],
                 ["detection score", num(f.detection_score, 2)], ["detection AUROC", num(f.detection_auroc, 2)],
                 ["fuzzing score", num(f.fuzzing_score, 2)]];
    var rank = f.rank !== undefined && f.rank !== null ? "#" + label(f.rank) + " · " : "";
    var card = h("div", {"class": "slv-card slv-feature-card", id: anchor(f.id)}, [
      h("h3", null, [rank, label(f.name) || "latent " + label(f.id)]),
      f.desc ? h("div", {"class": "slv-desc"}, label(f.desc)) : null,
      h("div", {"class": "slv-facts"}, stats.map(function (p) { return h("span", null, [p[0] + " ", h("b", null, p[1])]); }))
    ]);
    var row = h("div", {"class": "slv-row"});
    if (isObj(f.histogram)) {
      add(row, h("div", {"class": "slv-sec"}, [h("h4", null, "activation histogram (log bins, log counts)"),
                                               histogram(f.histogram)]));
    }
    if (isObj(f.logit_effects)) { add(row, effects(f.logit_effects)); }
    add(card, row);
    if (isList(f.nearest) && f.nearest.length) { add(card, nearest(f, byId, onJump)); }
    var contexts = examples.length ? examples.map(function (e) { return example(e, scale); })
                                   : [h("span", {"class": "slv-muted"}, "none")];
    add(card, h("div", {"class": "slv-sec"}, [h("h4", null, "top activating contexts")].concat(contexts)));
    return card;
  }

  function renderCatalog(root, d) {
    checkCatalog(d);
    var feats = d.features, byId = {};
    feats.forEach(function (f) { byId[String(f.id)] = f; });
    root.classList.add("slv-catalog");
    var analysed = d.context_tokens_analyzed === undefined ? null : count(d.context_tokens_analyzed);
    var judge = [d.judge_backend, d.judge_model].filter(Boolean).map(label).join(" · ");
    add(root, facts([["SAE", d.sae_repo], ["model", d.base_model], ["layer", d.layer], ["d_model", d.d_model],
                     ["d_sae", d.d_sae], ["k", d.k], ["tokens analysed", analysed], ["judge", judge],
                     ["features", feats.length]]));
    var search = h("input", {type: "search", "class": "slv-search", placeholder: "search labels: name, description or id",
                             "aria-label": "search feature labels"});
    var status = h("p", {"class": "slv-muted slv-count"});
    var cards = feats.map(function (f) { return featureCard(f, byId, jump); });
    add(root, [search, status, h("div", {"class": "slv-cards"}, cards)]);
    function apply() {
      var q = search.value.trim().toLowerCase(), shown = 0;
      feats.forEach(function (f, i) {
        var ok = !q || [f.id, f.name, f.desc].map(label).join(" ").toLowerCase().indexOf(q) >= 0;
        cards[i].hidden = !ok;
        shown += ok ? 1 : 0;
      });
      status.textContent = shown + " of " + feats.length + " features" +
                           (q ? " match “" + search.value.trim() + "”" : "");
    }
    function jump(id) {  /* a neighbour's link shows its card even when the search hides it */
      if (cards[feats.indexOf(byId[String(id)])].hidden) { search.value = ""; apply(); }
    }
    search.addEventListener("input", apply);
    apply();
  }

  /* ------------------------------------------------------------------ interpscore.json (a leaderboard of many) */
  function checkScore(d) {
    need(d, "leaderboard", "interp_score", isNum, "a number");
    var comps = need(d, "leaderboard", "components", isObj, "an object of part: value");
    Object.keys(comps).forEach(function (k) {
      if (!isNum(comps[k])) { throw new ViewerError("interpscore.json: components." + k + " must be a number"); }
    });
  }

  function renderLeaderboard(root, items) {
    var reports = items.map(function (it) { return it.data; });
    reports.forEach(checkScore);
    root.classList.add("slv-leaderboard");
    var parts = [], weights = {};
    PARTS.concat.apply(PARTS, reports.map(function (r) { return Object.keys(r.components); })).forEach(function (p) {
      if (parts.indexOf(p) < 0) { parts.push(p); }
    });
    reports.forEach(function (r) {
      parts.forEach(function (p) {
        if (isObj(r.weights) && isNum(r.weights[p]) && !has(weights, p)) { weights[p] = r.weights[p]; }
      });
    });
    var sortKey = "interp_score";
    var cols = [["rank"], ["SAE"], ["model"], ["layer"], ["d_sae"], ["k"], ["InterpScore", "interp_score"]]
      .concat(parts.map(function (p) { return [p + (has(weights, p) ? " ×" + num(weights[p]) : ""), p]; }))
      .concat([["weighted parts"]]);
    var thead = h("thead"), tbody = h("tbody");
    var legend = h("div", {"class": "slv-legend"}, parts.map(function (p, i) {
      return h("span", null, [h("i", {style: "background:" + PART_COLOURS[i % PART_COLOURS.length]}), p]);
    }));
    var note = reports.length + " report" + (reports.length === 1 ? "" : "s") + " · click a column to rank by that part";
    add(root, [h("p", {"class": "slv-muted"}, note),
               h("div", {"class": "slv-scroll"}, h("table", {"class": "slv-table slv-board"}, [thead, tbody])), legend]);
    function value(r, key) {
      var v = key === "interp_score" ? r.interp_score : r.components[key];
      return isNum(v) ? v : -Infinity;
    }
    function bar(r) {
      var w = isObj(r.weights) ? r.weights : weights;
      return h("div", {"class": "slv-bar", title: "weight × part, summing to the InterpScore"}, parts.map(function (p, j) {
        var v = isNum(w[p]) && isNum(r.components[p]) ? w[p] * r.components[p] : 0;
        var width = Math.max(0, Math.min(100, 100 * v)).toFixed(2);
        return h("span", {style: "width:" + width + "%;background:" + PART_COLOURS[j % PART_COLOURS.length],
                          title: p + ": " + num(v)});
      }));
    }
    function draw() {
      var order = items.map(function (it, i) { return i; }).sort(function (a, b) {
        return value(reports[b], sortKey) - value(reports[a], sortKey) || a - b;
      });
      thead.textContent = "";
      add(thead, h("tr", null, cols.map(function (c) {
        var key = c[1] || null, numeric = key !== null || ["rank", "layer", "d_sae", "k"].indexOf(c[0]) >= 0;
        var sort = function () { sortKey = key; draw(); };
        return h("th", {"class": numeric ? "slv-num" : null, "aria-sort": key === sortKey ? "descending" : null,
                        "data-key": key},
                 key ? h("button", {type: "button", click: sort}, c[0]) : c[0]);
      })));
      tbody.textContent = "";
      order.forEach(function (i, rank) {
        var r = reports[i];
        add(tbody, h("tr", {"class": "slv-entry", title: label(items[i].label)}, [
          numCell(String(rank + 1)), cell(label(r.sae_repo) || label(items[i].label)), cell(label(r.model)),
          numCell(label(r.layer)), numCell(count(r.d_sae)), numCell(label(r.k)),
          cell(num(r.interp_score, 4), "slv-num slv-score")
        ].concat(parts.map(function (p) { return numCell(num(r.components[p], 3)); })).concat([cell(bar(r))])));
      });
    }
    draw();
  }

  /* ------------------------------------------------------------------ mount: draw or say why not, in one line */
  function oneLine(e, kind) {
    var text = e instanceof ViewerError ? e.message
                                        : "could not draw this " + KINDS[kind].file + ": " + (e && e.message || e);
    return String(text).replace(/\s+/g, " ").trim();
  }
  function mount(el, kind, data, title) {
    if (!has(KINDS, kind)) { throw new Error("unknown viewer kind " + kind); }
    el.textContent = "";
    el.classList.add("slv");
    try {
      if (kind === "trace") { renderTrace(el, data); }
      else if (kind === "circuit") { renderCircuit(el, data, title); }
      else if (kind === "catalog") { renderCatalog(el, data); }
      else {
        renderLeaderboard(el, (isList(data) ? data : [data]).map(function (d) { return {data: d, label: title || ""}; }));
      }
      return true;
    } catch (e) {
      el.textContent = "";
      add(el, h("p", {"class": "slv-error", role: "alert"}, (title ? label(title) + ": " : "") + oneLine(e, kind)));
      return false;
    }
  }

  /* ------------------------------------------------------------------ the site's viewer pages: ?src=, drop, paste */
  function boot(kind) {
    var view = document.getElementById("slv-view"), msg = document.getElementById("slv-msg");
    var board = [];  /* the leaderboard keeps every report loaded */
    function say(text, bad) { msg.textContent = text; msg.className = bad ? "slv-error" : "slv-muted"; }
    function parse(text, name) {
      try { return JSON.parse(text); } catch (e) { throw new ViewerError(name + ": not JSON (" + e.message + ")"); }
    }
    function show(loaded, how) {  /* loaded: [{label, data}] */
      var bad = [];
      if (kind === "leaderboard") {
        loaded.forEach(function (it) {
          (isList(it.data) ? it.data : [it.data]).forEach(function (d, j) {
            var name = it.label + (isList(it.data) ? " #" + (j + 1) : "");
            try { checkScore(d); board.push({label: name, data: d}); }
            catch (e) { bad.push(name + ": " + oneLine(e, kind)); }
          });
        });
        view.textContent = "";
        view.classList.add("slv");
        if (board.length) { renderLeaderboard(view, board); }
      } else {
        var it = loaded[loaded.length - 1];
        if (!mount(view, kind, it.data)) { bad.push(it.label + ": " + view.textContent); view.textContent = ""; }
      }
      if (bad.length) { say(bad.join(" · "), true); } else { say(how); }
    }
    function fail(e) { view.textContent = ""; say(oneLine(e, kind), true); }
    function fromTexts(pairs, how) {  /* pairs: [[name, text]] */
      try {
        show(pairs.map(function (p) { return {label: p[0], data: parse(p[1], p[0])}; }), how);
      } catch (e) { fail(e); }
    }
    function fetchOne(src) {
      var url;
      try { url = new URL(src, location.href); } catch (e) { return Promise.reject(new ViewerError("not a URL: " + src)); }
      if (url.protocol !== "https:" && url.protocol !== "http:") {
        return Promise.reject(new ViewerError("only http(s) URLs can be opened, not " + src));
      }
      return fetch(url.href, {credentials: "omit"}).then(function (r) {
        if (!r.ok) {
          var why = r.status === 401 || r.status === 404 ? PRIVATE_HINT : "";
          throw new ViewerError("could not fetch " + src + ": HTTP " + r.status + why);
        }
        return r.text();
      }, function () {
        throw new ViewerError("could not fetch " + src + " (no network, or the server does not allow other sites " +
                              "to read it)");
      }).then(function (text) { return [src, text]; });
    }
    function readFiles(files, how) {
      var list = Array.prototype.slice.call(files || []);
      if (!list.length) { return; }
      if (kind !== "leaderboard") { list = list.slice(0, 1); }
      Promise.all(list.map(function (f) { return f.text().then(function (t) { return [f.name, t]; }); }))
        .then(function (pairs) {
          var names = pairs.map(function (p) { return p[0]; }).join(", ");
          fromTexts(pairs, "showing " + names + " (" + how + "; to share it, upload it and open it here with " +
                           "?src=<its URL>)");
        }, fail);
    }

    var srcs = new URLSearchParams(location.search).getAll("src").filter(Boolean);
    var field = document.getElementById("slv-src");
    if (srcs.length) {
      if (field) { field.value = srcs[0]; }
      say("loading " + srcs.join(", ") + " …");
      Promise.all(srcs.map(fetchOne)).then(function (pairs) {
        fromTexts(pairs, "showing " + srcs.join(", ") + " · this page's address shares the view");
      }, fail);
    }
    var picker = document.getElementById("slv-file");
    if (picker) { picker.addEventListener("change", function () { readFiles(picker.files, "a local file"); }); }
    var area = document.getElementById("slv-paste"), go = document.getElementById("slv-paste-go");
    if (area && go) {
      go.addEventListener("click", function () {
        if (area.value.trim()) { fromTexts([["pasted text", area.value]], "showing the pasted text"); }
      });
    }
    document.addEventListener("paste", function (e) {
      var t = e.target && e.target.tagName;
      if (t === "INPUT" || t === "TEXTAREA") { return; }
      var text = e.clipboardData && e.clipboardData.getData("text");
      if (text && text.trim()) { e.preventDefault(); fromTexts([["pasted text", text]], "showing the pasted text"); }
    });
    document.addEventListener("dragover", function (e) {
      e.preventDefault();
      document.body.classList.add("slv-dragging");
    });
    document.addEventListener("dragleave", function () { document.body.classList.remove("slv-dragging"); });
    document.addEventListener("drop", function (e) {
      e.preventDefault();
      document.body.classList.remove("slv-dragging");
      var dt = e.dataTransfer;
      if (dt && dt.files && dt.files.length) { readFiles(dt.files, "a dropped file"); }
      else if (dt && dt.getData("text")) { fromTexts([["dropped text", dt.getData("text")]], "showing the dropped text"); }
    });
    var clear = document.getElementById("slv-clear");
    if (clear) { clear.addEventListener("click", function () { board = []; view.textContent = ""; say(""); }); }
  }

  window.SaeLadderViewer = {mount: mount, boot: boot, guess: guess, kinds: KINDS};
  var me = document.currentScript;
  if (me && me.getAttribute("data-boot")) {
    var kind = me.getAttribute("data-boot");
    if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", function () { boot(kind); }); }
    else { boot(kind); }
  }
})();
