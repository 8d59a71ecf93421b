"""Self-contained HTML views of the notebooks' outputs: a feature catalog, a trace, a circuit, InterpScore
reports, drawn in the browser by the viewers' one script (shared/viewer.py), the same one the site's
viewer pages run.

`view(kind, data)` is an HTML fragment holding the data (as JSON in a `<script type="application/json">`
block, `<` escaped so no string can close it), the stylesheet and the script that draws it; `page` wraps
fragments into a whole document to save as a file, and `show` displays a fragment inline in Jupyter,
Colab, Kaggle or VS Code. Nothing is fetched from the network. The script puts every string of the
data into the page as text, never as markup.
"""
from __future__ import annotations

import hashlib
import html as _html
import json

from .viewer import FILES, VIEWER_CSS, VIEWER_JS, viewer_url

_MOUNT = ('(function(s){{var d=s?s.previousElementSibling:document.getElementById("{uid}-data");'
          'SaeLadderViewer.mount(d.previousElementSibling,"{kind}",JSON.parse(d.textContent),{title})}})'
          '(document.currentScript)')


def esc(text) -> str:
    """HTML-escape anything as text (quotes too, so it is safe inside attributes)."""
    return _html.escape(str(text), quote=True)


def _script_json(data) -> str:
    """JSON that cannot end its <script> block: <, > and & as \\u escapes (JSON.parse reads them back)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def view(kind: str, data, *, title: str = "") -> str:
    """`data` (a trace.json, circuit.json or feature_catalog.json dict, or one interpscore.json dict or a list
    of them for kind "leaderboard") as a self-contained HTML fragment; a file of the wrong kind shows one
    line saying which field is missing. NaN and infinities are refused (JSON has none)."""
    if kind not in FILES:
        raise ValueError(f"kind must be one of {', '.join(FILES)}, got {kind!r}")
    payload = _script_json(data)
    uid = "slv-" + hashlib.sha256(f"{kind}\0{title}\0{payload}".encode()).hexdigest()[:12]
    fallback = (f"This {FILES[kind]} view is drawn by a script, which this viewer did not run: open the saved "
                f".html file in a browser, or the {FILES[kind]} at {viewer_url(kind)}")
    mount = _MOUNT.format(uid=uid, kind=kind, title=_script_json(title))
    return (f"<style>{VIEWER_CSS}</style>"
            f'<div class="slv" id="{uid}"><p class="slv-nojs">{esc(fallback)}</p></div>'
            f'<script type="application/json" id="{uid}-data">{payload}</script>'
            f"<script>{VIEWER_JS}\n{mount}</script>")


def page(*fragments: str, title: str = "SAE features") -> str:
    """A whole HTML document around fragments (`view` output), for saving."""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
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
