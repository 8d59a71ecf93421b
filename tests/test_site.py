"""The ladder page and viewers (site/, build_site.py): generated from the catalog and checked by
`build_notebooks.py --check`; opened in headless Chromium from a local server with the JSON the core
writes for the notebooks, a file of the wrong kind, a malformed one, and files full of markup payloads."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

import build_notebooks as bn
import build_site
from chromium import SKIP_REASON, Browser, executable
from conftest import REPO
from local_server import LocalServer


def entries():
    return bn.load_catalog(REPO)


# ---------------------------------------------------------------------------- the catalog and the build

def test_every_entry_has_the_card_fields_and_prerequisites_name_real_notebooks():
    ids = {e.id for e in entries()}
    for e in entries():
        assert e.purpose in build_site.PURPOSES, e.id
        assert e.cost.strip() and e.learn, e.id
        for text in e.prerequisites:  # a catalog-looking id in the text must be a real one (it becomes a link)
            for word in text.replace(",", " ").replace("(", " ").split():
                if word[:2].isdigit() and "_" in word:
                    assert word in ids, f"{e.id}: prerequisite names {word!r}, not a catalog id"
    tiers = [e.id for e in entries() if e.purpose == "ladder"]
    assert tiers == ["01_hobbyist_gemma2_2b_colab", "02_explorer_qwen35_4b_kaggle", "03_papergrade_qwen36_27b_cloud"]


def test_site_url_is_the_pages_address_of_the_repository():
    from shared.views import viewer

    assert viewer.SITE_URL == build_site.pages_url(bn.load_settings(REPO).repository)
    assert build_site.pages_url("OpenInterp/sae-notebook-ladder") == "https://openinterp.github.io/sae-notebook-ladder/"
    assert build_site.pages_url("someone/someone.github.io") == "https://someone.github.io/"


def run_build(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / "build_notebooks.py"), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120)


def test_check_fails_when_the_site_is_stale_missing_or_has_leftovers(fixture_repo):
    assert run_build(fixture_repo).returncode == 0
    index = fixture_repo / "site" / "index.html"
    assert "Demo notebook" in index.read_text() and (fixture_repo / "site" / "viewer.js").exists()
    assert run_build(fixture_repo, "--check").returncode == 0
    index.write_text(index.read_text().replace("Demo notebook", "hand edit"))
    (fixture_repo / "site" / "trace.html").unlink()
    (fixture_repo / "site" / "old_viewer.html").write_text("<p>gone</p>")
    shots = fixture_repo / "site" / "screenshots"
    shots.mkdir()
    (shots / "index.png").write_bytes(b"png")
    r = run_build(fixture_repo, "--check")
    assert r.returncode == 1
    assert {"stale: site/index.html", "missing: site/trace.html", "extra: site/old_viewer.html (not in the catalog)"} \
        <= set(r.stdout.splitlines())
    assert "screenshots" not in r.stdout  # committed images are not the build's
    assert run_build(fixture_repo).returncode == 0 and run_build(fixture_repo, "--check").returncode == 0
    assert not (fixture_repo / "site" / "old_viewer.html").exists() and (shots / "index.png").exists()


def test_a_catalog_entry_the_site_cannot_show_fails_in_one_line(fixture_repo):
    catalog = fixture_repo / "notebooks_src" / "catalog.toml"
    text = catalog.read_text()
    catalog.write_text(text.replace('level = "start here"', 'level = "start here"\npurpose = "fun"'))
    r = run_build(fixture_repo)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: catalog.toml entry 01_demo: purpose 'fun' is not one of {list(build_site.PURPOSES)}"]
    catalog.write_text(text.replace('expected_time = "1 min"', 'expected_time = "quick"'))
    r = run_build(fixture_repo)
    assert r.returncode == 2 and "expected_time 'quick' names no duration" in r.stderr


def test_filters_and_needs_are_read_from_the_catalog():
    by_id = {e.id: e for e in entries()}
    assert build_site.minutes(by_id["01_hobbyist_gemma2_2b_colab"]) == 180
    assert build_site.minutes(by_id["02_explorer_qwen35_4b_kaggle"]) == 25 * 60
    assert build_site.minutes(by_id["07_pick_your_tier"]) == 1
    ladder = ("07_pick_your_tier", "01_hobbyist_gemma2_2b_colab", "02_explorer_qwen35_4b_kaggle",
              "03_papergrade_qwen36_27b_cloud")
    assert [build_site.gpu_class(by_id[i]) for i in ladder] == [0, 1, 2, 3]
    assert build_site.needs_items({"accelerator": "T4", "secrets": ["HF_TOKEN"], "kaggle_internet": True,
                                   "drive": False, "gated_models": []}) \
        == ["accelerator: T4", "secrets: HF_TOKEN", "kaggle internet"]
    entry = replace(by_id["05_build_shareable_trace"])
    entry.needs = {"secrets": ["HF_TOKEN <for upload>"], "downloads": "2 GB"}  # [notebook.needs], once it lands
    settings = bn.load_settings(REPO)
    card = build_site._card(entry, settings, {}, bn.badges(entry, settings), {}, tier=False)
    assert '<ul class="needs"><li>secrets: HF_TOKEN &lt;for upload&gt;</li><li>downloads: 2 GB</li></ul>' in card
    card = build_site._card(entry, settings, {}, bn.badges(entry, settings), {}, tier=True,
                            needs_lines=lambda e: [f"GPU: {e.accelerator} <15 GB>"])  # build_notebooks' wording
    assert '<ul class="needs"><li>GPU: T4 &lt;15 GB&gt;</li></ul>' in card


def test_index_reads_without_a_script():
    index = (REPO / "site" / "index.html").read_text()
    assert "<script" not in index.lower()
    assert index.count('<article class="nb') == len(entries()) == 23


# ---------------------------------------------------------------------------- in the browser

def needs_browser(test):
    """A test in headless Chromium: skipped with the reason when none is installed; slow (the samples and the
    browser take ~20 s to set up), so `make test-fast` leaves it out."""
    return pytest.mark.slow(pytest.mark.skipif(executable() is None, reason=SKIP_REASON)(test))


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    from site_samples import write_samples

    return write_samples(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def server(samples):
    """The repository's site/ at /, the samples at /samples/, on 127.0.0.1."""
    folder = next(iter(samples.values())).parent

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(REPO / "site"), **kwargs)

        def translate_path(self, path):
            rel = urlsplit(path).path
            if rel.startswith("/samples/"):
                return str(folder / rel.removeprefix("/samples/"))
            return super().translate_path(path)

    with LocalServer.for_handler(Handler) as s:
        yield s


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: $SAE_LADDER_SCREENSHOTS when set (to refresh site/screenshots/), else a tmp dir."""
    folder = Path(os.environ.get("SAE_LADDER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if executable() is None:
        pytest.skip(SKIP_REASON)
    with Browser(tmp_path_factory.mktemp("chromium"), width=1280, height=900) as b:
        yield b


def opened(browser, url: str, ready: str = "document.readyState === 'complete'"):
    page = browser.open(url)
    page.wait_for(f"!!({ready})")
    return page


def shot(page, shots: Path, name: str) -> Path:
    """A screenshot of the page (its top 3000 px, in 256 colours) that must not be blank."""
    import numpy as np
    from PIL import Image

    path = page.screenshot(shots / name, max_height=3000)
    image = Image.open(path).convert("RGB")
    pixels = np.asarray(image, dtype=float)
    assert pixels.shape[0] > 200 and pixels.std() > 5, f"{name} looks blank"
    image.quantize(256).save(path, optimize=True)
    return path


VISIBLE = "Array.from(document.querySelectorAll('article.nb')).filter(a => a.offsetParent !== null).map(a => a.id)"


@needs_browser
def test_index_cards_links_badges_and_filters(browser, server, shots):
    page = opened(browser, server.url + "/index.html")
    settings = bn.load_settings(REPO)
    cards = page.eval("""Array.from(document.querySelectorAll('article.nb')).map(a => ({
        id: a.id, tier: a.classList.contains('tier'), title: a.querySelector('h3 a').textContent,
        links: Array.from(a.querySelectorAll('a')).map(x => [x.textContent, x.href, x.getAttribute('href')]),
        learn: Array.from(a.querySelectorAll('.learn li')).map(x => x.textContent),
        facts: Array.from(a.querySelectorAll('.facts dt')).map(x => x.textContent)}))""")
    by_id = {e.id: e for e in entries()}
    assert [c["id"] for c in cards if c["tier"]] == ["01_hobbyist_gemma2_2b_colab", "02_explorer_qwen35_4b_kaggle",
                                                     "03_papergrade_qwen36_27b_cloud"]
    assert sorted(c["id"] for c in cards) == sorted(by_id) and len(cards) == 23
    blob = f"https://github.com/{settings.repository}/blob/{settings.branch}/"
    for c in cards:
        e = by_id[c["id"]]
        assert c["title"] == e.title and c["learn"] == e.learn
        if c["tier"]:
            assert c["facts"] == ["platform", "cost", "model", "tokens", "dictionary", "data", "time"]
        expected = {label: link for label, _, link in bn.badges(e, settings)}
        for text, href, raw in c["links"]:
            if raw.startswith("#"):  # a prerequisite: the card it names is on the page
                assert raw[1:] in by_id and page.eval(f"!!document.getElementById({json.dumps(raw[1:])})")
            elif text.startswith("Open In"):
                assert href == expected.pop(text)
            else:  # the notebook on GitHub: the file exists in this checkout
                assert href.startswith(blob) and (REPO / href.removeprefix(blob)).is_file(), href
        assert not expected, f"{e.id}: badges missing {expected}"
    # the viewer links answer
    assert page.eval("Promise.all(Array.from(document.querySelectorAll('#viewers a')).map("
                     "a => fetch(a.href).then(r => r.status)))") == [200] * 4
    shot(page, shots, "index.png")

    def choose(*ids):
        page.eval("".join(f"document.getElementById('{i}').click();" for i in ids) + "0")
        return page.eval(VISIBLE)

    kaggle = [e.id for e in entries() if any("Kaggle" in b[0] for b in bn.badges(e, settings))]
    assert sorted(choose("platform-kaggle")) == sorted(kaggle)
    assert page.accessible_text(".shown") == f"{len(kaggle)} of 23 notebooks shown"  # a CSS counter of the cards shown
    assert choose("platform-any", "gpu-0") == ["07_pick_your_tier"]
    quick = choose("gpu-any", "time-10")
    assert quick and all(build_site.minutes(by_id[i]) <= 10 for i in quick)
    assert set(quick) == {e.id for e in entries() if build_site.minutes(e) <= 10}
    two_t4 = choose("time-any", "platform-kaggle", "gpu-2")
    assert set(two_t4) == set(kaggle) and "02_explorer_qwen35_4b_kaggle" in two_t4
    assert "02_explorer_qwen35_4b_kaggle" not in choose("gpu-1")
    assert page.problems == []


@needs_browser
def test_index_filters_with_javascript_off(browser, server):
    page = browser.open("about:blank")
    browser.call("Emulation.setScriptExecutionDisabled", {"value": True}, page.session)
    page.goto(server.url + "/index.html")
    browser.call("Emulation.setScriptExecutionDisabled", {"value": False}, page.session)
    assert len(page.eval(VISIBLE)) == 23
    page.eval("document.getElementById('gpu-0').click(), 0")  # CSS does the filtering
    assert page.eval(VISIBLE) == ["07_pick_your_tier"]


def viewer(browser, server, page_name: str, *srcs: str):
    query = "&".join(f"src={quote(s, safe=':/')}" for s in srcs)
    if not srcs:
        return opened(browser, f"{server.url}/{page_name}")
    return opened(browser, f"{server.url}/{page_name}?{query}",
                  "document.querySelector('#slv-view > *') || document.querySelector('#slv-msg.slv-error')")


def load(samples, name):
    return json.loads(samples[name].read_text())


@needs_browser
def test_trace_viewer_shows_tokens_features_and_counterfactuals(browser, server, samples, shots):
    data = load(samples, "trace.json")
    page = viewer(browser, server, "trace.html", "samples/trace.json")
    show = lambda t: t.replace("\n", "↵").replace("\t", "⇥")  # noqa: E731
    assert page.texts(".slv-strip .slv-tok") == [show(t) for t in data["tokens"]]
    assert page.texts(".slv-frow th") == [f"{f['id']} {f['name']}" for f in data["features"]]
    assert page.count(".slv-frow td") == len(data["features"]) * len(data["tokens"])
    second = data["features"][1]
    page.eval("document.querySelectorAll('.slv-frow')[1].click(), 0")
    assert page.texts(".slv-detail h3") == [f"{second['id']} {second['name']}"]
    alphas = sorted(data["counterfactuals"][second["id"]].items(), key=lambda x: float(x[0]))
    assert page.texts(".slv-cf tr") == [f"α = {a}{show(t)}" for a, t in alphas]
    peak = max(range(len(data["tokens"])), key=lambda t: data["activations"][1][t])  # the strip shades by the row
    assert page.eval(f"document.querySelectorAll('.slv-strip .slv-tok')[{peak}].getAttribute('style')") \
        == "background:rgba(234,88,12,0.850)"
    assert "showing samples/trace.json" in page.eval("document.getElementById('slv-msg').textContent")
    shot(page, shots, "trace.png")
    assert page.problems == []


@needs_browser
def test_circuit_viewer_draws_nodes_and_edges(browser, server, samples, shots):
    data = load(samples, "circuit.json")
    page = viewer(browser, server, "circuit.html", "samples/circuit.json")
    assert sorted(page.texts(".slv-nodes tbody td:first-child")) == sorted(n["id"] for n in data["nodes"])
    ends = zip(page.texts(".slv-edges tbody td:nth-child(1)"), page.texts(".slv-edges tbody td:nth-child(2)"))
    assert sorted(ends) == sorted((e["source"], e["target"]) for e in data["edges"])
    kinds = [n["kind"] for n in data["nodes"]]
    assert page.count("svg circle.slv-feature") == kinds.count("feature")
    assert page.count("svg polygon.slv-error-node") == kinds.count("error") == 2
    assert page.count("svg line.slv-edge") == len(data["edges"])
    widths = page.eval("Array.from(document.querySelectorAll('line.slv-edge'), l => +l.getAttribute('stroke-width'))")
    assert max(widths) == pytest.approx(6.0) and min(widths) < max(widths)  # width by |score|
    shot(page, shots, "circuit.png")
    assert page.problems == []


@needs_browser
def test_catalog_viewer_labels_search_and_nearest(browser, server, samples, shots):
    data = load(samples, "feature_catalog.json")
    feats = data["features"]
    page = viewer(browser, server, "catalog.html", "samples/feature_catalog.json")
    assert page.texts(".slv-feature-card h3") == [f"#{f['rank']} · {f['name']}" for f in feats]
    assert page.count(".slv-feature-card .slv-ex") == sum(len(f["top_activating_examples"]) for f in feats)
    facts = page.eval("Array.from(document.querySelector('.slv-feature-card .slv-facts').children, s => s.textContent)")
    scored = feats[0]["fuzzing_score"]
    assert f"fuzzing score {'–' if scored is None else format(scored, '.2f')}" in facts, facts
    # nearest by decoder cosine: the ids the catalog holds, linked when the neighbour is in the catalog
    first = page.eval("Array.from(document.querySelectorAll('.slv-feature-card:first-child .slv-nearest .slv-chip'),"
                      " c => [c.tagName, c.textContent])")
    ids = {f["id"] for f in feats}
    assert [t for t, _ in first] == ["A" if n["id"] in ids else "SPAN" for n in feats[0]["nearest"]]
    assert all(str(n["id"]) in text for n, (_, text) in zip(feats[0]["nearest"], first))
    # search by label
    target = feats[-1]
    word = target["name"]
    page.eval(f"var s = document.querySelector('.slv-search'); s.value = {json.dumps(word)};"
              "s.dispatchEvent(new Event('input')); 0")
    visible = page.eval("Array.from(document.querySelectorAll('.slv-feature-card:not([hidden])'), c => c.id)")
    assert f"slv-f-{target['id']}" in visible
    assert len(visible) == sum(word.lower() in f"{f['id']} {f['name']} {f['desc']}".lower() for f in feats)
    assert page.texts(".slv-count")[0].startswith(f"{len(visible)} of {len(feats)}")
    page.eval("var s = document.querySelector('.slv-search'); s.value = 'no label has this';"
              "s.dispatchEvent(new Event('input')); 0")
    assert page.count(".slv-feature-card:not([hidden])") == 0
    link = next((n["id"] for f in feats for n in f["nearest"] if n["id"] in ids), None)
    if link is not None:  # following a neighbour shows it even while the search hides it
        page.eval(f"document.querySelector('.slv-search').value = {json.dumps(f'latent {link}x')};"  # hides it
                  "document.querySelector('.slv-search').dispatchEvent(new Event('input')), 0")
        assert page.eval(f"document.getElementById('slv-f-{link}').hidden")
        page.eval(f"document.querySelector('a.slv-chip[href=\"#slv-f-{link}\"]').click(), 0")
        assert page.eval(f"!document.getElementById('slv-f-{link}').hidden && location.hash") == f"#slv-f-{link}"
    page.eval("var s = document.querySelector('.slv-search'); s.value = ''; s.dispatchEvent(new Event('input')); "
              "window.scrollTo(0, 0); history.replaceState(null, '', location.pathname + location.search); 0")
    shot(page, shots, "catalog.png")
    assert page.problems == []


@needs_browser
def test_leaderboard_ranks_reports_by_any_part(browser, server, samples, shots):
    reports = [load(samples, f"interpscore_{n}.json") for n in range(3)]
    page = viewer(browser, server, "leaderboard.html", *[f"samples/interpscore_{n}.json" for n in range(3)])
    def order():
        return page.texts(".slv-board tbody td:nth-child(2)")

    def by(key):
        return [r["sae_repo"] for r in sorted(reports, key=lambda r: -(r["interp_score"] if key == "interp_score"
                                                                       else r["components"][key]))]
    assert order() == by("interp_score")
    assert len(set(tuple(by(k)) for k in ["interp_score", "loss_recovered", "alive", "l0_score"])) > 1  # parts disagree
    for key in ("loss_recovered", "alive", "l0_score", "sparse_probing", "tpp", "interp_score"):
        page.eval(f"document.querySelector('th[data-key={key}] button').click(), 0")
        assert order() == by(key), key
        assert page.eval(f"document.querySelector('th[data-key={key}]').getAttribute('aria-sort')") == "descending"
    shot(page, shots, "leaderboard.png")
    # more reports dropped later join the board
    page.eval(drop_js([("extra.json", json.dumps({**reports[0], "sae_repo": "late/entry", "interp_score": 0.99}))]))
    page.wait_for("document.querySelectorAll('.slv-board tbody tr').length === 4")
    assert order()[0] == "late/entry"
    assert page.problems == []


def drop_js(files: list[tuple[str, str]]) -> str:
    """Script that drops files (name, text) on the page as a user's drag and drop would."""
    adds = "".join(f"dt.items.add(new File([{json.dumps(text)}], {json.dumps(name)}, {{type: 'application/json'}}));"
                   for name, text in files)
    return (f"(() => {{ const dt = new DataTransfer(); {adds} "
            "document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));"
            " return 0; })()")


@needs_browser
def test_viewers_open_a_dropped_or_pasted_file(browser, server, samples):
    trace = samples["trace.json"].read_text()
    page = viewer(browser, server, "trace.html")
    assert page.eval("document.getElementById('slv-view').textContent") == ""
    page.eval(drop_js([("trace.json", trace)]))
    page.wait_for("document.querySelectorAll('.slv-frow').length")
    assert "trace.json (a dropped file" in page.eval("document.getElementById('slv-msg').textContent")
    circuit = samples["circuit.json"].read_text()
    page = viewer(browser, server, "circuit.html")
    page.eval(f"document.getElementById('slv-paste').value = {json.dumps(circuit)};"
              "document.getElementById('slv-paste-go').click(), 0")
    page.wait_for("document.querySelectorAll('.slv-nodes tbody tr').length")
    page = viewer(browser, server, "catalog.html")  # pasted anywhere on the page
    text = json.dumps(samples["feature_catalog.json"].read_text())
    page.eval(f"(() => {{ const dt = new DataTransfer(); dt.setData('text/plain', {text}); document.body.dispatchEvent("
              "new ClipboardEvent('paste', {clipboardData: dt, bubbles: true})); return 0; })()")
    page.wait_for("document.querySelectorAll('.slv-feature-card').length")
    assert page.problems == []


def message(page) -> str:
    page.wait_for("document.getElementById('slv-msg').className === 'slv-error'")
    msg = page.eval("document.getElementById('slv-msg').textContent")
    assert "\n" not in msg and page.eval("document.getElementById('slv-view').textContent") == ""
    return msg


@needs_browser
def test_wrong_malformed_or_missing_files_say_so_in_one_line(browser, server, samples, tmp_path, shots):
    folder = samples["trace.json"].parent
    trace = load(samples, "trace.json")
    (folder / "no_activations.json").write_text(json.dumps({k: v for k, v in trace.items() if k != "activations"}))
    (folder / "broken.json").write_text('{"tokens": ["a", ')
    bad_edge = {"source": "nowhere", "target": "L1.error", "score": 1}
    (folder / "bad_edge.json").write_text(json.dumps({**load(samples, "circuit.json"), "edges": [bad_edge]}))
    page = viewer(browser, server, "trace.html", "samples/circuit.json")
    assert message(page) == ("samples/circuit.json: not a trace.json: missing field 'tokens' "
                             "(it looks like a circuit.json: open it in circuit.html)")
    shot(page, shots, "trace_wrong_file.png")
    assert message(viewer(browser, server, "trace.html", "samples/no_activations.json")) \
        == "samples/no_activations.json: not a trace.json: missing field 'activations'"
    assert message(viewer(browser, server, "circuit.html", "samples/trace.json")).endswith(
        "not a circuit.json: missing field 'nodes' (it looks like a trace.json: open it in trace.html)")
    assert message(viewer(browser, server, "circuit.html", "samples/bad_edge.json")).endswith(
        "circuit.json: edge 0 source 'nowhere' is not a node id")
    assert message(viewer(browser, server, "catalog.html", "samples/broken.json")).startswith(
        "samples/broken.json: not JSON (")
    assert message(viewer(browser, server, "catalog.html", "samples/interpscore_0.json")).endswith(
        "missing field 'features' (it looks like an interpscore.json: open it in leaderboard.html)")
    page = viewer(browser, server, "leaderboard.html", "samples/interpscore_0.json", "samples/trace.json")
    page.wait_for("document.getElementById('slv-msg').className === 'slv-error'")
    assert page.eval("document.querySelectorAll('.slv-board tbody tr').length") == 1  # the good one still ranks
    assert page.eval("document.getElementById('slv-msg').textContent") == (
        "samples/trace.json: not an interpscore.json: missing field 'interp_score' (it looks like a trace.json: "
        "open it in trace.html)")
    assert message(viewer(browser, server, "trace.html", "samples/none.json")) == (
        "could not fetch samples/none.json: HTTP 404 (a private Hub repo answers so: make it public, "
        "or drop the file here)")
    assert message(viewer(browser, server, "trace.html", "javascript:window.__pwned=5")) \
        == "only http(s) URLs can be opened, not javascript:window.__pwned=5"
    assert page.eval("window.__pwned") is None


HOSTILE_CHECK = """(() => {
  const view = document.getElementById('slv-view') || document.body;
  const bad = [];
  view.querySelectorAll('script, img, iframe, object, embed').forEach(e => bad.push(e.tagName));
  view.querySelectorAll('*').forEach(e => { for (const a of e.attributes) {
    if (/^on/i.test(a.name)) bad.push(e.tagName + '@' + a.name);
    if (/href$/i.test(a.name) && /^\\s*javascript:/i.test(a.value)) bad.push(e.tagName + ' ' + a.value); } });
  return {pwned: window.__pwned === undefined ? null : window.__pwned, bad: bad, text: view.textContent};
})()"""


@needs_browser
@pytest.mark.parametrize("page_name, name", [("trace.html", "hostile_trace.json"),
                                             ("circuit.html", "hostile_circuit.json"),
                                             ("catalog.html", "hostile_feature_catalog.json")])
def test_markup_in_a_file_is_shown_as_text_and_never_runs(browser, server, samples, page_name, name, shots):
    from site_samples import PAYLOADS

    page = viewer(browser, server, page_name, f"samples/{name}")
    assert page.eval("document.getElementById('slv-msg').className") != "slv-error", \
        page.eval("document.getElementById('slv-msg').textContent")
    if page_name == "catalog.html":  # follow the links and type in the search too
        page.eval("document.querySelectorAll('.slv-view a, #slv-view a').forEach(a => a.click()); 0")
    if page_name == "trace.html":
        page.eval("document.querySelectorAll('.slv-frow').forEach(r => r.click()); 0")
    page.eval("new Promise(r => setTimeout(r, 300))")  # an <img onerror> would have fired by now
    seen = page.eval(HOSTILE_CHECK)
    assert seen["pwned"] is None and seen["bad"] == []
    shown = [p for p in PAYLOADS if p in seen["text"]]
    assert len(shown) >= 3, f"payloads should be visible as text, saw {shown}"
    shot(page, shots, f"hostile_{page_name.replace('.html', '.png')}")
    assert page.problems == []
    # the check sees a payload that was inserted as markup
    page.eval("document.getElementById('slv-view').insertAdjacentHTML('beforeend', "
              f"{json.dumps(PAYLOADS[1])}), new Promise(r => setTimeout(r, 300))")
    seen = page.eval(HOSTILE_CHECK)
    assert seen["pwned"] == 2 and "IMG" in seen["bad"] and "IMG@onerror" in seen["bad"]


@needs_browser
def test_a_notebook_upload_is_shared_by_its_viewer_url(browser, server, samples, tmp_path, hub_online, capsys):
    """An output uploaded by the notebooks' own call (hub.upload_files, the real huggingface_hub client)
    to a local Hub opens in the viewer from the URL the notebook prints; a private repo's does not, and the
    notebook says so."""
    from huggingface_hub import HfApi

    from hub_store import StoreHub
    from shared import hub
    from shared.views import viewer as share

    trace = tmp_path / "trace.json"
    shutil.copy(samples["trace.json"], trace)
    with StoreHub() as store:
        api = HfApi(endpoint=store.url, token="hf_test")
        for private in (False, True):
            repo = f"someone/{'private' if private else 'public'}-traces"
            upload = hub.upload_files([trace], repo, private=private, token="hf_test", api=api, path_in_repo="traces")
            assert upload["ok"] and upload["private"] is private
            assert upload["file_urls"] == [f"{store.url}/{repo}/resolve/main/traces/trace.json"]
            url, lines = share.share_lines(upload, "trace", trace, site=server.url + "/")
            assert url == f"{server.url}/trace.html?src={store.url}/{repo}/resolve/main/traces/trace.json"
            assert lines[0] == f"share trace.json: {url}" and (len(lines) == 2) is private
            page = opened(browser, url, "document.querySelector('#slv-view > *') || "
                                        "document.getElementById('slv-msg').className === 'slv-error'")
            if private:
                assert "HTTP 401 (a private Hub repo answers so" in message(page)
            else:
                assert page.count(".slv-frow") == len(load(samples, "trace.json")["features"])
    assert share.share_lines({}, "trace", trace)[1] == [
        f"view trace.json: open {share.SITE_URL}trace.html and drop {trace} on the page"]
