"""The ladder as a web page: site/, generated from notebooks_src/catalog.toml by build_notebooks.py.

    site/index.html     the three tier cards (every field the catalog holds, and the model, layer, tokens and
                        dictionary of their parameters) and the other notebooks grouped by purpose, each with
                        level, time, GPU and Open-in-Colab/Kaggle badges; a filter by platform, GPU and time
                        that is pure CSS, so the page has no script and reads the same without one
    site/style.css      the one stylesheet (its viewer part is shared/views/viewer.py's VIEWER_CSS)
    site/viewer.js      the viewers' one script, shared/views/viewer.py's VIEWER_JS (the notebooks' HTML embeds it)
    site/trace.html, circuit.html, catalog.html, leaderboard.html
                        open a trace.json, circuit.json, feature_catalog.json or interpscore.json files by
                        ?src=<URL>, by file drop, or by paste
    site/.nojekyll      GitHub Pages serves the folder as it is

`site_files` returns {path: text}; build_notebooks.py writes them with the notebooks and `--check` fails
when one is stale. GitHub Pages publishes the folder (README: "Publishing the site").
"""
from __future__ import annotations

import ast
import html
import re
from pathlib import Path

SITE = "site"
# The groups of the non-tier notebooks, by the question a visitor arrives with ("purpose" in the catalog).
# "ladder" entries are the tier cards.
PURPOSES = {
    "ladder": ("The ladder", "Train your own SAE, from a free T4 to a paper-grade run on a 27B model."),
    "start": ("Start here", "Which tier fits your GPU and your time, with the exact parameters to paste."),
    "train": ("Train more", "The tier recipe on other model families, and dictionaries across layers."),
    "discover": ("Discover", "What do the latents mean? Rank them, label them with an LLM judge, measure the labels."),
    "share": ("Share", "One prompt through your SAE as a file anyone can open in the trace viewer."),
    "edit": ("Edit", "Change what the model writes by pushing one feature up or down."),
    "circuits": ("Circuits", "Which features, heads and edges cause a behaviour, by attribution and by patching."),
    "evaluate": ("Evaluate", "Is this SAE any good? One score and its parts, architectures compared, a stage gate."),
    "monitor": ("Monitor", "Flag prompts and tokens on which watched features fire, as they stream."),
    "baselines": ("Baselines", "What an SAE feature has to beat: lenses, probes, CCS and reading vectors."),
}
CARD_KEYS = ("purpose", "cost", "learn", "prerequisites")  # the catalog keys only the site reads
VIEWERS = {  # page -> (kind for viewer.js, heading, the file it opens, who writes it, its path in an uploading repo)
    "trace.html": ("trace", "Trace viewer", "trace.json", "written by notebook 05", "traces/trace.json"),
    "circuit.html": ("circuit", "Circuit viewer", "circuit.json", "written by notebooks 14, 15 and 16",
                     "circuits/sfc/circuit.json"),
    "catalog.html": ("catalog", "Feature catalog", "feature_catalog.json", "written by notebook 04",
                     "feature_catalog/12/feature_catalog.json"),
    "leaderboard.html": ("leaderboard", "InterpScore leaderboard", "interpscore.json", "written by notebook 18",
                         "interpscore.json"),
}
GPU_CLASSES = ("no GPU", "one T4", "two T4s", "a bigger GPU")  # what a notebook needs, smallest first
GPU_FILTER = (("any", "any"), ("0", "none"), ("1", "at most one T4"), ("2", "at most two T4s"))
TIME_FILTER = (("any", "any"), ("10", "10 min"), ("30", "30 min"), ("90", "1½ h"))  # minutes, at most
PLATFORM_FILTER = (("any", "any"), ("colab", "Colab"), ("kaggle", "Kaggle"), ("cloud", "your own GPU"))
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(min|minutes?|h|hours?)\b")


class SiteError(ValueError):
    """A catalog entry the site cannot show; the message says what to change."""


def pages_url(repository: str) -> str:
    """The GitHub Pages address of "owner/name": https://owner.github.io/name/ (a repo called
    owner.github.io is served at the root)."""
    owner, name = repository.split("/")
    host = f"{owner.lower()}.github.io"
    return f"https://{host}/" if name.lower() == host else f"https://{host}/{name}/"


# ---------------------------------------------------------------------------- catalog fields the cards read

def check_card_fields(entry) -> None:
    """The site's catalog keys, when present: purpose one of PURPOSES, cost a string, learn and
    prerequisites lists of strings. (Every real entry has all four: tests/test_site.py checks.)"""
    where = f"catalog.toml entry {entry.id}"
    if entry.purpose and entry.purpose not in PURPOSES:
        raise SiteError(f"{where}: purpose {entry.purpose!r} is not one of {list(PURPOSES)}")
    if not isinstance(entry.cost, str):
        raise SiteError(f"{where}: cost must be a string, e.g. \"free (Colab T4)\"")
    for key in ("learn", "prerequisites"):
        value = getattr(entry, key)
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise SiteError(f"{where}: {key} must be a list of non-empty strings")


def minutes(entry) -> float:
    """The first duration in expected_time ("15 min on a T4" -> 15, "about 8 h ..." -> 480): the time filter's key."""
    m = _DURATION.search(entry.expected_time)
    if not m:
        raise SiteError(f"catalog.toml entry {entry.id}: expected_time {entry.expected_time!r} names no duration such "
                        "as \"15 min\" or \"2 h\"; the site's time filter reads the first one")
    value = float(m.group(1))
    return value * 60 if m.group(2).startswith("h") else value


def gpu_class(entry) -> int:
    """Index into GPU_CLASSES of what the entry's accelerator asks for."""
    acc = entry.accelerator.lower().replace(" ", "").replace("×", "x")
    if not entry.gpu:
        return 0
    if "2xt4" in acc:
        return 2
    return 1 if acc.startswith("t4") else 3


def platforms(entry, badges) -> list[str]:
    """Where the entry opens: colab / kaggle (as its Open-in badges say) and cloud (your own GPU machine)."""
    return ([p for p, name in (("colab", "Colab"), ("kaggle", "Kaggle")) if any(name in b[0] for b in badges)]
            + (["cloud"] if entry.platform in ("cloud", "any") else []))


def needs_items(needs) -> list[str]:
    """The entry's needs (the catalog's [notebook.needs] table when it has one) as short lines."""
    if not needs:
        return []
    if not isinstance(needs, dict):
        return [str(n) for n in (needs if isinstance(needs, (list, tuple)) else [needs])]
    out = []
    for key, value in needs.items():
        name = str(key).replace("_", " ")
        if value in (None, "", [], {}, False):
            continue
        if value is True:
            out.append(name)
        elif isinstance(value, (list, tuple)):
            out.append(f"{name}: {', '.join(map(str, value))}")
        elif isinstance(value, dict):
            out.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
        else:
            out.append(f"{name}: {value}")
    return out


def _duration(mins: float) -> str:
    """15 -> "15 min", 90 -> "1.5 h", 480 -> "8 h"."""
    return f"{mins:g} min" if mins < 60 else f"{mins / 60:g} h"


def _short(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:g}{unit}"
    return str(n)


def run_facts(params: dict) -> list[tuple[str, str]]:
    """(label, value) of the model, layer, tokens, dictionary and data a notebook's parameters set."""
    facts = []
    if isinstance(params.get("MODEL_ID"), str):
        layer = params.get("LAYER", params.get("LAYERS"))
        where = ""
        if isinstance(layer, list):
            where = ", layers " + ", ".join(map(str, layer))
        elif isinstance(layer, int):
            where = f", layer {layer}"
        facts.append(("model", params["MODEL_ID"] + where))
    tokens = params.get("TOTAL_TOKENS", params.get("N_TOKENS"))
    if isinstance(tokens, int):
        facts.append(("tokens", f"{_short(tokens)} ({tokens:,})"))
    if isinstance(params.get("D_SAE"), int):
        k = f", TopK k = {params['K']}" if isinstance(params.get("K"), int) else ""
        facts.append(("dictionary", f"{params['D_SAE']:,} latents{k}"))
    data = params.get("DATASET")
    if isinstance(data, str) and data:
        facts.append(("data", _dataset(data)))
    elif isinstance(data, list) and data:
        facts.append(("data", " + ".join(_dataset(d) for d in data)))
    if isinstance(params.get("SAE"), str) and params["SAE"]:
        facts.append(("SAE", params["SAE"] + (f" / {params['SAE_ID']}" if params.get("SAE_ID") else "")))
    return facts


def _dataset(spec: str) -> str:
    """'hf:HuggingFaceFW/fineweb-edu:sample-10BT:train:text@0.7' -> 'HuggingFaceFW/fineweb-edu (70%)'."""
    body, _, weight = spec.partition("@")
    name = body.split(":")[1] if body.startswith("hf:") and body.count(":") >= 1 else body
    return name + (f" ({float(weight) * 100:g}%)" if weight else "")


# ---------------------------------------------------------------------------- HTML

def esc(text) -> str:
    return html.escape(str(text), quote=True)


def _li(items) -> str:
    return "".join(f"<li>{i}</li>" for i in items)


def _notebook_url(settings, entry) -> str:
    return f"https://github.com/{settings.repository}/blob/{settings.branch}/notebooks/{entry.id}.ipynb"


def _badges(entry, settings, badges) -> str:
    links = [f'<a class="badge {"colab" if "Colab" in label else "kaggle"}" href="{esc(link)}">{esc(label)}</a>'
             for label, _, link in badges]
    links.append(f'<a class="badge source" href="{esc(_notebook_url(settings, entry))}">notebook on GitHub</a>')
    return f'<p class="badges">{" ".join(links)}</p>'


def _prerequisite(text: str, titles: dict) -> str:
    """The text, escaped, with each catalog id in it as a link to that card (named by its title)."""
    if not titles:
        return esc(text)
    names = "|".join(re.escape(i) for i in sorted(titles, key=len, reverse=True))
    ids = re.compile(rf"(?<![\w.-])({names})(?![\w.-])")
    return ids.sub(lambda m: f'<a href="#{m.group(1)}">{esc(titles[m.group(1)])}</a>', esc(text))


def _sections(entry, titles: dict, needs_lines=None) -> str:
    """What you'll learn, what to know or run first, and what the notebook needs (when the catalog says:
    needs_lines(entry) when given, else needs_items of its needs table)."""
    out = []
    if entry.learn:
        out.append(f"<h4>What you'll learn</h4><ul class=\"learn\">{_li(esc(x) for x in entry.learn)}</ul>")
    if entry.prerequisites:
        out.append(f"<h4>Before you start</h4><ul class=\"prereq\">"
                   f"{_li(_prerequisite(x, titles) for x in entry.prerequisites)}</ul>")
    needs = needs_lines(entry) if needs_lines else needs_items(getattr(entry, "needs", None))
    if needs:
        out.append(f"<h4>Needs</h4><ul class=\"needs\">{_li(esc(x) for x in needs)}</ul>")
    return "".join(out)


def _card(entry, settings, params, badges, titles, tier: bool, needs_lines=None) -> str:
    """One notebook as an <article>: a tier card with every catalog field, or a compact card whose details fold.
    Its data-* attributes are what the CSS filter matches."""
    attrs = (f'id="{esc(entry.id)}" data-platform="{" ".join(platforms(entry, badges))}" '
             f'data-gpu="{gpu_class(entry)}" data-minutes="{minutes(entry):g}"')
    gpu = esc(entry.accelerator) if entry.gpu else "no GPU"
    title = f'<h3><a href="{esc(_notebook_url(settings, entry))}">{esc(entry.title)}</a></h3>'
    sections = _sections(entry, titles, needs_lines)
    if tier:
        facts = [("platform", f"{esc(entry.platform)} · {gpu}"), ("cost", esc(entry.cost))]
        facts += [(k, esc(v)) for k, v in run_facts(params)]
        facts.append(("time", esc(entry.expected_time)))
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        installs = ", ".join(esc(r) for r in entry.requirements) or "nothing beyond the platform"
        return (f'<article class="nb tier" {attrs}><p class="kicker">{esc(entry.level)}</p>{title}'
                f'<p class="pitch">{esc(entry.pitch)}</p><dl class="facts">{dl}</dl>{sections}'
                f'<p class="installs"><b>installs</b> {installs}</p>{_badges(entry, settings, badges)}</article>')
    pills = [f'<span class="pill level">{esc(entry.level)}</span>',
             f'<span class="pill time" title="{esc(entry.expected_time)}">{_duration(minutes(entry))}</span>',
             f'<span class="pill gpu">{gpu}</span>']
    more = [f"<p><b>time</b> {esc(entry.expected_time)}</p>"]
    more += [f"<p><b>cost</b> {esc(entry.cost)}</p>" if entry.cost else ""]
    more += [f"<p><b>{k}</b> {esc(v)}</p>" for k, v in run_facts(params) if k in ("model", "SAE")]
    return (f'<article class="nb" {attrs}>{title}<p class="meta">{" ".join(pills)}</p>'
            f'<p class="pitch">{esc(entry.pitch)}</p>'
            f'<details><summary>what you\'ll learn, what it needs</summary>{"".join(more)}{sections}'
            f'</details>{_badges(entry, settings, badges)}</article>')


def _radio_group(name: str, legend: str, choices) -> str:
    items = "".join(f'<label><input type="radio" name="{name}" id="{name}-{value}" value="{value}"'
                    f'{" checked" if value == "any" else ""}> {esc(text)}</label>' for value, text in choices)
    return f'<fieldset><legend>{esc(legend)}</legend>{items}</fieldset>'


def filter_css(entries) -> str:
    """The filter as CSS: a checked radio hides the cards it rules out (body:has(#id:checked) ...)."""
    rules = []
    for value, _ in PLATFORM_FILTER[1:]:
        rules.append(f'body:has(#platform-{value}:checked) .nb:not([data-platform~="{value}"])')
    for value, _ in GPU_FILTER[1:]:
        rules += [f'body:has(#gpu-{value}:checked) .nb[data-gpu="{c}"]'
                  for c in range(int(value) + 1, len(GPU_CLASSES))]
    times = sorted({f"{minutes(e):g}" for e in entries}, key=float)
    for value, _ in TIME_FILTER[1:]:
        rules += [f'body:has(#time-{value}:checked) .nb[data-minutes="{t}"]'
                  for t in times if float(t) > float(value)]
    return ",\n".join(rules) + "{display:none}\n"


def _head(title: str, description: str) -> str:
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)}</title><meta name="description" content="{esc(description)}">'
            '<link rel="icon" href="data:,"><link rel="stylesheet" href="style.css"></head>\n')


def _nav(current: str) -> str:
    links = [("index.html", "The ladder")] + [(page, spec[1]) for page, spec in VIEWERS.items()]
    items = "".join(f'<a href="{p}"{" aria-current=page" if p == current else ""}>{esc(t)}</a>' for p, t in links)
    return f'<header class="top"><nav>{items}</nav></header>\n'


def index_html(entries, settings, parameters: dict, badges: dict, needs_lines=None) -> str:
    """site/index.html."""
    titles = {e.id: e.title for e in entries}
    tiers = [e for e in entries if e.purpose == "ladder"]
    rest = [e for e in entries if e.purpose != "ladder"]
    start = "".join(_card(e, settings, parameters[e.id], badges[e.id], titles, True, needs_lines) for e in tiers)
    groups = []
    for key, (heading, blurb) in list(PURPOSES.items())[1:] + [("", ("Other notebooks", ""))]:
        members = [e for e in rest if (e.purpose or "") == key]
        if members:
            cards = "".join(_card(e, settings, parameters[e.id], badges[e.id], titles, False, needs_lines)
                            for e in members)
            groups.append(f'<section class="group" id="purpose-{key or "other"}"><h2>{esc(heading)}</h2>'
                          f'<p class="blurb">{esc(blurb)}</p><div class="grid">{cards}</div></section>')
    viewers = "".join(f'<li><a href="{page}">{esc(heading)}</a>: a <code>{esc(file)}</code>, {esc(writers)}</li>'
                      for page, (_, heading, file, writers, _) in VIEWERS.items())
    filters = (_radio_group("platform", "Opens in", PLATFORM_FILTER) + _radio_group("gpu", "GPU it needs", GPU_FILTER)
               + _radio_group("time", "Time it takes, at most", TIME_FILTER))
    repo = f"https://github.com/{settings.repository}"
    lede = ("Colab- and Kaggle-ready notebooks that train <b>sparse autoencoders</b> on language models, from a first "
            f"SAE on a free T4 to paper-grade SAEs on a 27B model, and then use them. {len(entries)} notebooks, "
            "each one file that runs with no checkout beside it. "
            f'Source: <a href="{esc(repo)}">{esc(settings.repository)}</a>.')
    ladder, blurb = PURPOSES["ladder"]
    return (_head("SAE notebook ladder", "Colab and Kaggle notebooks that train sparse autoencoders and use them.")
            + f'<body>\n{_nav("index.html")}<main>\n<h1>SAE notebook ladder</h1>\n<p class="lede">{lede}</p>\n'
            f'<form class="filters" aria-label="filter the notebooks">{filters}</form>\n'
            f'<section class="group" id="purpose-ladder"><h2>{esc(ladder)}</h2><p class="blurb">{esc(blurb)}</p>'
            f'<div class="tiers">{start}</div></section>\n' + "\n".join(groups)
            + '\n<section class="group" id="viewers"><h2>Viewers</h2><p class="blurb">Open what the notebooks write, '
              'from a Hugging Face <code>resolve/main/...</code> URL, a file or pasted text; a <code>?src=</code> URL '
              f'is a link you can share.</p><ul>{viewers}</ul></section>\n'
              f'<p class="shown" role="status"> of {len(entries)} notebooks shown</p>\n</main>\n'
              '<footer>Generated from <code>notebooks_src/catalog.toml</code> by <code>build_notebooks.py</code>.'
              "</footer>\n</body></html>\n")


def viewer_html(page: str, settings) -> str:
    """One viewer page of the site: the open-a-file controls around an empty view that viewer.js fills."""
    kind, heading, file, writers, example = VIEWERS[page]
    many = kind == "leaderboard"
    hub = f"https://huggingface.co/&lt;user&gt;/&lt;repo&gt;/resolve/main/{esc(example)}"
    share = f"{esc(pages_url(settings.repository))}{page}?src={hub}"
    if many:
        how = (f"Open any number of <code>{esc(file)}</code> files ({esc(writers)}) to rank them: give their URLs, "
               f"drop the files on this page, choose them, or paste their text. Files on the Hub are shared as "
               f"<code>{share}</code>, with one <code>src=</code> a file.")
    else:
        how = (f"Open a <code>{esc(file)}</code> ({esc(writers)}): give its URL, drop the file on this page, choose "
               f"it, or paste its text. A file on the Hub is shared as <code>{share}</code>.")
    multiple = " multiple" if many else ""
    clear = ' <button id="slv-clear" type="button">Clear</button>' if many else ""
    return (_head(f"{heading} · SAE notebook ladder", f"Open a {file} by URL, file drop or paste.")
            + f'<body class="viewer">\n{_nav(page)}<main>\n<h1>{esc(heading)}</h1>\n<p class="lede">{how}</p>\n'
            f'<form class="open" method="get" action=""><label>URL <input id="slv-src" name="src" type="url" '
            f'placeholder="{hub}" size="60"></label> <button type="submit">Open</button></form>\n'
            f'<p class="open"><label>File <input id="slv-file" type="file" accept=".json,application/json"{multiple}>'
            f"</label>{clear}</p>\n"
            '<details class="open"><summary>Paste JSON</summary><textarea id="slv-paste" rows="6" cols="80" '
            f'aria-label="{esc(file)} text"></textarea><br>'
            '<button id="slv-paste-go" type="button">Show</button></details>\n'
            '<p id="slv-msg" class="slv-muted" role="status" aria-live="polite"></p>\n'
            '<noscript><p class="slv-error">This viewer draws the file with JavaScript: turn it on for this page.</p>'
            "</noscript>\n"
            '<div id="slv-view" class="slv"></div>\n</main>\n'
            f'<script src="viewer.js" data-boot="{kind}"></script>\n</body></html>\n')


SITE_CSS = """
:root{--ink:#1b1b1f;--muted:#5f6470;--line:#d9dde4;--bg:#f6f7f9;--accent:#c2410c;--link:#1d4ed8}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 counter-reset:shown}
a{color:var(--link)}
code{font:13px ui-monospace,Menlo,Consolas,monospace;background:#eceef2;padding:0 3px;border-radius:3px;
 overflow-wrap:anywhere}
.top{background:#111827;padding:10px 20px}
.top nav{display:flex;flex-wrap:wrap;gap:4px 20px;max-width:1240px;margin:0 auto}
.top a{color:#e5e7eb;text-decoration:none;font-weight:600}
.top a[aria-current]{color:#fdba74}
main{max-width:1240px;margin:0 auto;padding:12px 20px 40px}
h1{font-size:30px;margin:18px 0 6px}
.lede{max-width:860px;color:#374151}
footer{max-width:1240px;margin:0 auto;padding:16px 20px 40px;color:var(--muted);font-size:13px}
.filters{display:flex;flex-wrap:wrap;gap:10px 18px;margin:14px 0 6px;padding:8px 0;border-bottom:1px solid var(--line)}
.filters fieldset{border:1px solid var(--line);border-radius:8px;padding:4px 10px 6px;margin:0;background:#fff}
.filters legend{font-size:12px;font-weight:700;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.filters label{margin-right:10px;white-space:nowrap;cursor:pointer}
.group{margin:26px 0}
.group h2{font-size:22px;margin:0 0 2px}
.blurb{color:var(--muted);margin:0 0 10px}
.tiers{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:16px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:14px}
.nb{counter-increment:shown;background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 16px;
 display:flex;flex-direction:column;gap:4px}
.nb:target{outline:3px solid #fdba74}
.nb h3{font-size:16px;margin:0}
.nb h3 a{color:var(--ink);text-decoration:none}
.nb h3 a:hover{text-decoration:underline}
.nb h4{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:10px 0 2px}
.nb ul{margin:0;padding-left:18px}
.nb .pitch{margin:2px 0;color:#374151;font-size:14px}
.nb details{font-size:14px}
.nb details summary{cursor:pointer;color:var(--muted)}
.nb details p{margin:4px 0}
.tier{border-top:5px solid var(--accent)}
.kicker{margin:0;font-size:12px;font-weight:700;text-transform:uppercase;letter-spacing:.06em;color:var(--accent)}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0;font-size:14px}
.facts dt{color:var(--muted)}
.facts dd{margin:0;overflow-wrap:anywhere}
.installs{font-size:12px;color:var(--muted);margin:8px 0 0}
.meta{margin:2px 0}
.pill{display:inline-block;font-size:12px;padding:1px 8px;border-radius:999px;background:#eef0f4;margin:1px 2px 1px 0}
.pill.level{background:#ffedd5;color:#9a3412}
.pill.gpu{background:#e0e7ff;color:#3730a3}
.badges{margin:auto 0 0;padding-top:8px;display:flex;flex-wrap:wrap;gap:6px}
.badge{display:inline-block;font-size:12px;font-weight:700;padding:3px 9px;border-radius:5px;text-decoration:none;
 color:#fff}
.badge.colab{background:#e37400}.badge.kaggle{background:#1c8ad6}.badge.source{background:#374151}
.shown{position:fixed;right:14px;top:8px;margin:0;background:#374151;color:#fff;padding:3px 10px;border-radius:6px;
 font-size:13px}
.shown::before{content:counter(shown)}
.viewer .open{margin:8px 0}
.viewer input[type=url]{font:inherit;padding:5px 8px;border:1px solid #c3c8d2;border-radius:6px;max-width:100%}
.viewer textarea{font:12px ui-monospace,Menlo,Consolas,monospace;width:min(100%,900px)}
.viewer button{font:inherit;padding:4px 12px}
.slv-dragging main{outline:3px dashed #2563eb;outline-offset:-6px}
#slv-view{margin-top:8px}
"""


# ---------------------------------------------------------------------------- the files

def viewer_assets(root: Path) -> tuple[str, str]:
    """(VIEWER_JS, VIEWER_CSS) of root/shared/views/viewer.py, read as constants (the module is not imported)."""
    path = Path(root) / "shared" / "views" / "viewer.py"
    if not path.is_file():
        raise SiteError(f"{path} not found: it holds the viewers' script (VIEWER_JS), which site/viewer.js is "
                        "written from")
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and len(node.targets) == 1:
            name = getattr(node.targets[0], "id", "")
            if name in ("VIEWER_JS", "VIEWER_CSS") and isinstance(node.value.value, str):
                found[name] = node.value.value
    missing = {"VIEWER_JS", "VIEWER_CSS"} - set(found)
    if missing:
        raise SiteError(f"{path} lacks the string constant(s) {sorted(missing)}")
    return found["VIEWER_JS"].lstrip("\n"), found["VIEWER_CSS"].lstrip("\n")


def site_files(root: Path, entries, settings, parameters: dict, badges: dict, needs_lines=None) -> dict[str, str]:
    """{"site/<file>": text} of the whole site. parameters: {id: the notebook's parameter values after the
    catalog's overrides}; badges: {id: build_notebooks.badges(entry)}; needs_lines: entry -> the lines saying
    what it needs (default: needs_items of the entry's `needs` table, when it has one)."""
    for e in entries:
        check_card_fields(e)
        minutes(e)
    js, viewer_css = viewer_assets(root)
    files = {f"{SITE}/index.html": index_html(entries, settings, parameters, badges, needs_lines),
             f"{SITE}/style.css": viewer_css + SITE_CSS.lstrip("\n") + filter_css(entries),
             f"{SITE}/viewer.js": js,
             f"{SITE}/.nojekyll": ""}
    files.update({f"{SITE}/{page}": viewer_html(page, settings) for page in VIEWERS})
    return files


def extras(root: Path, files: dict) -> list[str]:
    """Generated-looking files in site/ that this build no longer writes (site/screenshots/ is left alone)."""
    folder = Path(root) / SITE
    if not folder.is_dir():
        return []
    return sorted(f"{SITE}/{p.name}" for p in folder.iterdir()
                  if p.is_file() and p.suffix in (".html", ".js", ".css") and f"{SITE}/{p.name}" not in files)
