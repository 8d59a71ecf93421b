#!/usr/bin/env python
"""Render notebooks_src/ into self-contained notebooks/*.ipynb and the README catalog table.

Every `[[notebook]]` entry of notebooks_src/catalog.toml becomes notebooks/<id>.ipynb:

1. a title cell (title, pitch, level/platform/accelerator/time, Open-in-Colab/Kaggle badges, what the
   notebook needs from `[notebook.needs]` via `needs_lines`, and for a cloud entry how to run it on a
   rented GPU);
2. the source's cells (jupytext percent format), with the catalog's parameter overrides applied
   to the `parameters`-tagged cell, and without the markdown cells whose `when` condition the entry
   does not meet (`cell_applies`);
3. right after that cell, an install cell that pip-installs the catalog's `requirements` (what the
   notebook imports at run time beyond the platform's packages), only those missing or too old, and
   stops Run-all when pip changed a package the kernel had already imported;
4. the vendored core: the import closure of `shared/` as readable source, one cell per module,
   written at run time into a folder named by its content hash inside a folder only the user can
   write (nothing there that the cell did not write is kept), and put first on sys.path;
5. platform metadata (kernelspec, Colab's GPU type, Kaggle's accelerator and Internet), read from
   the catalog with no fallback.

Renders are deterministic (stable cell ids, no outputs, sorted JSON), so `--check` can fail CI
when notebooks/ or the README table is stale.

    python build_notebooks.py             # render every notebook and the README table
    python build_notebooks.py --check     # exit 1 naming each stale / missing / extra file
    python build_notebooks.py --only ID   # render one notebook
    python build_notebooks.py --root PATH # work on another checkout (tests use a copy)
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import build_site  # the ladder page and viewers (site/), generated with the notebooks

PLATFORMS = ("colab", "kaggle", "cloud", "any")
COLAB_PLATFORMS = ("colab", "any", "cloud")
KAGGLE_PLATFORMS = ("kaggle", "any")
NO_GPU = ("none", "cpu", "")
CORE_TAG = "sae-ladder-core"  # tag on every generated vendored-core cell
INSTALL_TAG = "sae-ladder-install"
README_START, README_END = "<!-- catalog:start -->", "<!-- catalog:end -->"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
KAGGLE_BADGE = "https://kaggle.com/static/images/open-in-kaggle.svg"
# jupytext bookkeeping that must not leak into rendered cells
JUPYTEXT_CELL_KEYS = {"lines_to_next_cell", "lines_to_end_of_cell_marker", "cell_marker",
                      "region_name", "title", "cell_depth"}
REQUIRED_KEYS = ("id", "source", "title", "pitch", "level", "platform", "accelerator",
                 "expected_time")
OPTIONAL_KEYS = ("requirements", "full_run_only", "parameters", "smoke", "smoke_outputs", "smoke_run", "needs")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
OPTIONAL_KEYS += build_site.CARD_KEYS  # purpose, cost, learn, prerequisites: read by the site's cards


class BuildError(ValueError):
    """A catalog, source or README problem; the message says what to change."""


@dataclass
class Entry:
    """One `[[notebook]]` table of the catalog."""
    id: str
    source: str
    title: str
    pitch: str
    level: str
    platform: str
    accelerator: str
    expected_time: str
    purpose: str = ""  # the site's card fields (build_site.py): its group, cost, what you'll learn, what first
    cost: str = ""
    learn: list = field(default_factory=list)
    prerequisites: list = field(default_factory=list)
    requirements: list = field(default_factory=list)
    full_run_only: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    smoke: dict = field(default_factory=dict)
    smoke_outputs: dict = field(default_factory=dict)
    smoke_run: bool = False  # smoke-run this entry even when an earlier entry shares its source
    needs: dict = field(default_factory=dict)  # [notebook.needs]: what a user must have (required; NEEDS_KEYS)

    @property
    def gpu(self) -> bool:
        return self.accelerator.strip().lower() not in NO_GPU


@dataclass
class Settings:
    """`[tool.ladder]` of pyproject.toml: where the badges point."""
    repository: str
    branch: str


# ---------------------------------------------------------------------------- catalog + settings

def load_settings(root: Path) -> Settings:
    path = root / "pyproject.toml"
    if not path.exists():
        raise BuildError(f"{path} not found; the build reads [tool.ladder] repository/branch from it")
    ladder = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get("ladder", {})
    repo, branch = ladder.get("repository"), ladder.get("branch", "main")
    if not isinstance(repo, str) or repo.count("/") != 1:
        raise BuildError(f'{path}: set [tool.ladder] repository = "owner/name" (got {repo!r})')
    return Settings(repository=repo, branch=str(branch))


def load_catalog(root: Path) -> list[Entry]:
    """Read and validate notebooks_src/catalog.toml."""
    path = root / "notebooks_src" / "catalog.toml"
    if not path.exists():
        raise BuildError(f"{path} not found; create it with one [[notebook]] table per notebook")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise BuildError(f"{path}: invalid TOML: {e}") from None
    unknown_top = sorted(set(data) - {"notebook"})
    if unknown_top:
        raise BuildError(f"{path}: unknown top-level keys {unknown_top}; use [[notebook]] tables only")
    entries, seen = [], set()
    for n, raw in enumerate(data.get("notebook", []), 1):
        where = f"{path.name} entry #{n} ({raw.get('id', '?')})"
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise BuildError(f"{where}: missing keys {missing}")
        unknown = sorted(set(raw) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
        if unknown:
            raise BuildError(f"{where}: unknown keys {unknown}; known keys are "
                             f"{list(REQUIRED_KEYS + OPTIONAL_KEYS)}")
        for k in REQUIRED_KEYS:
            if not isinstance(raw[k], str) or not raw[k].strip():
                raise BuildError(f"{where}: {k} must be a non-empty string")
        e = Entry(**raw)
        if not ID_RE.match(e.id):
            raise BuildError(f"{where}: id {e.id!r} must be letters, digits, '_', '-', '.'")
        if e.id in seen:
            raise BuildError(f"{path.name}: duplicate id {e.id!r}; every notebook needs its own id")
        seen.add(e.id)
        if e.platform not in PLATFORMS:
            raise BuildError(f"{where}: platform {e.platform!r} is not one of {list(PLATFORMS)}")
        if not (root / "notebooks_src" / e.source).is_file():
            raise BuildError(f"{where}: source notebooks_src/{e.source} does not exist; "
                             "write it or remove the entry")
        if not isinstance(e.requirements, list) or not all(isinstance(r, str) for r in e.requirements):
            raise BuildError(f"{where}: requirements must be a list of pip specs (strings)")
        for spec in e.requirements:
            _parse_requirement(spec, where)
        declared = {dist_name(r) for r in e.requirements}
        full = e.full_run_only
        if not isinstance(full, list) or not all(isinstance(r, str) and dist_name(r) in declared for r in full):
            raise BuildError(f"{where}: full_run_only must list distribution names from requirements "
                             f"(one of {sorted(declared)}), got {full!r}")
        if not isinstance(e.smoke_run, bool):
            raise BuildError(f"{where}: smoke_run must be true or false, got {e.smoke_run!r}")
        for k in ("parameters", "smoke"):
            if not isinstance(getattr(e, k), dict):
                raise BuildError(f"{where}: [notebook.{k}] must be a table")
        _check_smoke_outputs(e.smoke_outputs, where)
        _check_needs(e, where)
        _check_platform(e, where)
        entries.append(e)
    return entries


def _check_smoke_outputs(spec, where: str) -> None:
    """[notebook.smoke_outputs]: "<path under OUTPUT_DIR>" = [<keys its JSON must hold>], [] for any file."""
    if not isinstance(spec, dict):
        raise BuildError(f'{where}: [notebook.smoke_outputs] must be a table of "<file>" = [<keys>]')
    for rel, keys in spec.items():
        if not rel.strip() or rel.startswith("/") or "\\" in rel or ".." in PurePosixPath(rel).parts:
            raise BuildError(f"{where}: smoke_outputs file {rel!r} must be a relative path inside OUTPUT_DIR "
                             "with / separators")
        if not isinstance(keys, list) or not all(isinstance(k, str) and all(k.split(".")) for k in keys):
            raise BuildError(f'{where}: smoke_outputs "{rel}" must be a list of keys such as "model", '
                             '"fit.steps" or "*.l0" (strings, dot-separated, no empty part)')
        if keys and not rel.endswith(".json"):
            raise BuildError(f'{where}: smoke_outputs "{rel}" is not a .json file: list it with [] '
                             "(it must only exist)")


# [notebook.needs]: what a user must have before running; catalog.toml's header documents each key.
NEEDS_KEYS = {"memory_gb": "a number", "secrets": "a list of {name, required, why} tables",
              "gated": "a list of {model, licence} tables", "downloads": "a list of {what, gb} tables",
              "kaggle_internet": "true or false", "colab_drive": "true or false", "time_basis": "a string"}
TIME_BASES = ("measured", "estimated")  # time_basis starts with one of these
SECRET_WHERE = {  # where a notebook's secrets are set, by platform
    "colab": "Colab: the key icon (Secrets) in the left bar, with Notebook access switched on",
    "kaggle": "Kaggle: Add-ons > Secrets, then tick the secret for this notebook",
    "cloud": "on a rented machine, an environment variable (export NAME=...) before starting Jupyter or papermill",
}


def _check_needs(e: Entry, where: str) -> None:
    """[notebook.needs] must be there, hold every key of NEEDS_KEYS and nothing else, each of its type."""
    needs = e.needs
    if not isinstance(needs, dict) or not needs:
        raise BuildError(f"{where}: missing [notebook.needs]: say what the notebook needs "
                         f"({', '.join(NEEDS_KEYS)}; see catalog.toml's header)")
    missing, unknown = sorted(set(NEEDS_KEYS) - set(needs)), sorted(set(needs) - set(NEEDS_KEYS))
    if missing or unknown:
        raise BuildError(f"{where}: [notebook.needs] " + (f"lacks {missing}" if missing else f"has unknown keys {unknown}")
                         + f"; its keys are {list(NEEDS_KEYS)}")

    def bad(key: str, detail: str = ""):
        return BuildError(f"{where}: needs.{key} must be {NEEDS_KEYS[key]}{detail}, got {needs[key]!r}")

    def of_type(value, typ) -> bool:  # a TOML true is no number
        return isinstance(value, typ) and (typ is bool or not isinstance(value, bool))

    def table_list(key: str, fields: dict) -> None:
        items = needs[key]
        if not isinstance(items, list) or not all(
                isinstance(t, dict) and set(t) == set(fields) and all(of_type(t[f], typ) for f, typ in fields.items())
                for t in items):
            raise bad(key)

    mem = needs["memory_gb"]
    if isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem < 0 or (mem == 0) != (not e.gpu):
        raise bad("memory_gb", " (GiB per GPU the defaults are sized for; 0 exactly when accelerator is none)")
    for key in ("kaggle_internet", "colab_drive"):
        if not isinstance(needs[key], bool):
            raise bad(key)
    table_list("secrets", {"name": str, "required": bool, "why": str})
    table_list("gated", {"model": str, "licence": str})
    table_list("downloads", {"what": str, "gb": (int, float)})
    for s in needs["secrets"]:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", s["name"]) or not s["why"].strip():
            raise bad("secrets", " (NAME in capitals, a non-empty why)")
    for g in needs["gated"]:
        if g["licence"] != f"https://huggingface.co/{g['model']}":
            raise bad("gated", f" (licence: the model's page, https://huggingface.co/{g['model']})")
    if needs["gated"] and not any(s["name"] == "HF_TOKEN" and s["required"] for s in needs["secrets"]):
        raise bad("secrets", " (a gated model needs HF_TOKEN, required)")
    if any(d["gb"] < 0 for d in needs["downloads"]):
        raise bad("downloads", " (gb >= 0)")
    if not isinstance(needs["time_basis"], str) or not needs["time_basis"].startswith(TIME_BASES):
        raise bad("time_basis", " starting with 'measured' (on which device, when) or 'estimated' (from which "
                                "measurement, assuming what)")


def _gb(x: float) -> str:
    return f"{x:.2g}" if x < 1 else f"{x:.1f}".rstrip("0").rstrip(".")


def needs_lines(entry: Entry) -> list[str]:
    """What the notebook needs, as plain lines (no markup) for a title cell or a web page: the GPU and
    its memory, the expected time and what it rests on, secrets and where to set them on the entry's
    platforms, gated models and where their licence is accepted, downloads, Kaggle Internet, Drive."""
    n = entry.needs
    colab, kaggle = entry.platform in COLAB_PLATFORMS and entry.platform != "cloud", entry.platform in KAGGLE_PLATFORMS
    lines = [f"GPU: {entry.accelerator}, defaults sized for {_gb(n['memory_gb'])} GB per GPU" if entry.gpu
             else "GPU: none, runs on the CPU",
             f"Expected time: {entry.expected_time}. Basis: {n['time_basis']}"]
    for s in n["secrets"]:
        lines.append(f"Secret {s['name']} ({'required' if s['required'] else 'optional'}): {s['why']}")
    if n["secrets"]:
        places = [SECRET_WHERE[p] for p, on in (("colab", colab), ("kaggle", kaggle),
                                               ("cloud", entry.platform == "cloud")) if on]
        lines.append("Where to set secrets: " + "; ".join(places) + ". They are read, never printed or saved.")
    else:
        lines.append("Secrets: none")
    for g in n["gated"]:
        lines.append(f"Gated model {g['model']}: accept its licence at {g['licence']} (logged in as the account "
                     "of your HF_TOKEN), once")
    if n["downloads"]:
        lines.append("Downloads: " + "; ".join(f"{d['what']}, about {_gb(d['gb'])} GB" for d in n["downloads"]))
    else:
        lines.append("Downloads: none")
    if kaggle:
        lines.append("Kaggle: switch Internet on (Settings > Internet): the notebook downloads what it uses"
                     if n["kaggle_internet"] else "Kaggle: Internet can stay off")
    if colab:
        lines.append("Colab: asks once to authorise Google Drive, where the checkpoints go (they outlive the session)"
                     if n["colab_drive"] else "Colab: no Google Drive access is asked")
    return lines


def _has_key(data, parts: list[str]) -> bool:
    if not parts:
        return True
    if not isinstance(data, dict):
        return False
    head, rest = parts[0], parts[1:]
    if head == "*":  # every key at this level (and at least one), e.g. the layers of val_report.json
        return bool(data) and all(_has_key(v, rest) for v in data.values())
    return head in data and _has_key(data[head], rest)


def missing_smoke_outputs(entry: Entry, out_dir: Path) -> list[str]:
    """What of entry.smoke_outputs a smoke run left out of out_dir (its OUTPUT_DIR): one line each."""
    problems = []
    for rel, keys in entry.smoke_outputs.items():
        path = Path(out_dir) / rel
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"{rel}: missing or empty")
            continue
        if not rel.endswith(".json"):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            problems.append(f"{rel}: not JSON ({e})")
            continue
        problems += [f"{rel}: no key {k!r}" for k in keys if not _has_key(data, k.split("."))]
    return problems


def _parse_requirement(spec: str, where: str):
    from packaging.requirements import InvalidRequirement, Requirement
    try:
        return Requirement(spec)
    except InvalidRequirement as e:
        raise BuildError(f"{where}: bad requirement {spec!r}: {e}") from None


# ---------------------------------------------------------------------------- parameters

def py_literal(value, where: str = "parameter") -> str:
    """A one-line Python literal for a TOML value (strings double-quoted, like the sources)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise BuildError(f"{where}: nan/inf cannot be a parameter value")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v, where) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {py_literal(v, where)}" for k, v in value.items()) + "}"
    raise BuildError(f"{where}: unsupported value {value!r} ({type(value).__name__})")


def _assignments(src: str) -> dict[str, ast.expr]:
    """NAME -> value node of each top-level `NAME = value` in a parameters cell."""
    try:
        tree = ast.parse(src)
    except SyntaxError as e:
        raise BuildError(f"parameters cell is not plain Python ({e.msg}, line {e.lineno}); "
                         "use only `NAME = literal  # @param ...` lines there") from None
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            out[node.target.id] = node.value
    return out


def parameter_defaults(src: str) -> dict:
    """Values of the literal assignments in a parameters cell (non-literals are skipped)."""
    out = {}
    for name, node in _assignments(src).items():
        try:
            out[name] = ast.literal_eval(node)
        except ValueError:
            pass
    return out


def apply_overrides(src: str, overrides: dict, where: str = "parameters cell") -> str:
    """Replace the value of each overridden assignment, keeping the rest of its line (# @param)."""
    nodes = _assignments(src)
    unknown = sorted(set(overrides) - set(nodes))
    if unknown:
        raise BuildError(f"{where}: override(s) {unknown} name no parameter; "
                         f"the parameters cell defines {sorted(nodes)}")
    lines = [line.encode("utf-8") for line in src.split("\n")]  # ast col offsets are UTF-8 bytes
    for name in sorted(overrides, key=lambda k: (nodes[k].lineno, nodes[k].col_offset), reverse=True):
        node = nodes[name]
        new = py_literal(overrides[name], f"{where}: {name}").encode("utf-8")
        first, last = node.lineno - 1, node.end_lineno - 1
        lines[first:last + 1] = [lines[first][:node.col_offset] + new + lines[last][node.end_col_offset:]]
    return "\n".join(line.decode("utf-8") for line in lines)


# ---------------------------------------------------------------------------- import closure

def _module_relpaths(shared_dir: Path, dotted: str) -> list[str] | None:
    """Files (relative to shared/) that importing `dotted` (e.g. shared.sub.x) executes, or None."""
    parts = dotted.split(".")
    if parts[0] != "shared":
        return None
    rels = ["__init__.py"]
    for i in range(1, len(parts)):
        stem = "/".join(parts[1:i + 1])
        if (shared_dir / stem / "__init__.py").is_file():
            rels.append(f"{stem}/__init__.py")
        elif i == len(parts) - 1 and (shared_dir / f"{stem}.py").is_file():
            rels.append(f"{stem}.py")
        else:
            return None
    return rels


def _imports(tree: ast.AST, package: str | None) -> list[tuple[str, bool]]:
    """(dotted module, must_exist) for every shared import anywhere in the tree.

    `package` is the dotted package of the module being scanned (for relative imports);
    None for notebook sources, where relative imports are not followed.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, True) for a in node.names if a.name.split(".")[0] == "shared"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue
                base = package.split(".")
                if node.level - 1 >= len(base):
                    raise BuildError(f"relative import beyond shared/ in package {package}")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
                if mod.split(".")[0] != "shared":
                    continue
            found.append((mod, True))
            found += [(f"{mod}.{a.name}", False) for a in node.names if a.name != "*"]
    return found


def core_closure(root: Path, code: str, where: str = "source") -> list[str]:
    """Sorted files of shared/ (relative paths) that `code` imports, followed recursively.

    Follows `import shared.x`, `from shared import x`, `from shared.x import y` in the code and
    relative or absolute imports inside the shared modules, including imports inside functions.
    shared/__init__.py is always included.
    """
    shared_dir = root / "shared"
    if not (shared_dir / "__init__.py").is_file():
        raise BuildError(f"{shared_dir}/__init__.py not found; the core package must exist")
    todo = [(where, None, code)]
    files = {"__init__.py"}
    scanned = set()
    while todo:
        name, package, text = todo.pop()
        try:
            tree = ast.parse(text)
        except SyntaxError as e:
            raise BuildError(f"{name}: cannot parse ({e.msg}, line {e.lineno})") from None
        for mod, must_exist in _imports(tree, package):
            rels = _module_relpaths(shared_dir, mod)
            if rels is None:
                if must_exist:
                    raise BuildError(f"{name}: imports {mod}, which is not a module under shared/")
                continue
            files.update(rels)
        for rel in sorted(files - scanned):
            scanned.add(rel)
            pkg = ".".join(["shared"] + rel.split("/")[:-1])  # package that holds this file
            todo.append((f"shared/{rel}", pkg, (shared_dir / rel).read_text(encoding="utf-8")))
    return sorted(files, key=lambda r: (r != "__init__.py", r))


# Imports a notebook never declares in `requirements`: the platform brings them (torch is never
# replaced; pip carries packaging; Colab/Kaggle/Jupyter modules), or the code imports them under
# try/except and runs without them (wandb, LLM SDKs, SAELens). tests/test_notebooks.py records
# what each smoke run imports and checks the catalog against it, leaving these out.
PLATFORM_MODULES = {"torch", "packaging", "pip", "google", "kaggle_secrets", "IPython", "ipykernel",
                    "ipywidgets", "matplotlib_inline"}
OPTIONAL_MODULES = {"wandb", "anthropic", "openai", "sae_lens"}


def dist_name(spec: str) -> str:
    """Normalised distribution name of a pip spec or a distribution name ("Foo_Bar>=1" -> "foo-bar")."""
    return re.split(r"[<>=!~\[; ]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def core_hash(files: dict[str, str]) -> str:
    """Content hash of the vendored closure (paths and sources); the activation cell recomputes it."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode("utf-8") + b"\0" + files[rel].encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def py_string_literal(text: str) -> str:
    """A readable Python literal for `text`: a raw triple-quoted string when that round-trips,
    else a triple-quoted string with backslashes and quotes escaped. The literal always holds one
    leading newline (so the module starts on its own line), which `_add_core_module` removes."""
    body = "\n" + text
    for q in ("'''", '"""'):
        lit = f"r{q}{body}{q}"
        if q not in body and not body.endswith((q[0], "\\")) and _round_trips(lit, body):
            return lit
    esc = []
    for ch in body:
        if ch in "\\'":
            esc.append("\\" + ch)
        elif ch in "\n\t" or ch.isprintable():
            esc.append(ch)
        else:
            esc.append(ch.encode("unicode_escape").decode("ascii"))
    lit = "'''" + "".join(esc) + "'''"
    if not _round_trips(lit, body):  # pragma: no cover - the escaped form is exact
        raise BuildError("cannot encode a shared module as a Python string literal")
    return lit


def _round_trips(lit: str, body: str) -> bool:
    try:
        return ast.literal_eval(lit) == body
    except (SyntaxError, ValueError):
        return False


# ---------------------------------------------------------------------------- generated cells

def badges(entry: Entry, settings: Settings) -> list[tuple[str, str, str]]:
    """(label, image, link) of the Open-in-* badges that fit the entry's platform."""
    path = f"{settings.repository}/blob/{settings.branch}/notebooks/{entry.id}.ipynb"
    out = []
    if entry.platform in COLAB_PLATFORMS:
        out.append(("Open In Colab", COLAB_BADGE, f"https://colab.research.google.com/github/{path}"))
    if entry.platform in KAGGLE_PLATFORMS:
        out.append(("Open In Kaggle", KAGGLE_BADGE,
                    f"https://kaggle.com/kernels/welcome?src=https://github.com/{path}"))
    return out


def _badge_md(entry: Entry, settings: Settings) -> str:
    return " ".join(f"[![{label}]({img})]({link})" for label, img, link in badges(entry, settings))


def title_cell(entry: Entry, settings: Settings) -> str:
    """Title, pitch, facts and badges; what the notebook needs (before any code); for a cloud notebook, how
    to run it on a rented GPU."""
    facts = (f"**Level:** {entry.level} · **Platform:** {entry.platform} · "
             f"**Accelerator:** {entry.accelerator} · **Expected time:** {entry.expected_time}")
    needs = "### What it needs\n\n" + "\n".join(f"- {line}".replace("<", "&lt;") for line in needs_lines(entry))
    parts = [f"# {entry.title}", entry.pitch, facts, _badge_md(entry, settings), needs,
             cloud_run_cell(entry, settings) if entry.platform == "cloud" else ""]
    return "\n\n".join(p for p in parts if p)


def cloud_run_cell(entry: Entry, settings: Settings) -> str:
    """How to run a cloud notebook on a rented GPU: as a notebook with papermill, or its training as a job."""
    import shlex

    name = settings.repository.split("/")[1]
    raw = f"https://raw.githubusercontent.com/{settings.repository}/{settings.branch}/notebooks/{entry.id}.ipynb"
    reqs = " ".join(shlex.quote(r) for r in entry.requirements)
    return f"""### Run it on a rented GPU

Colab's own runtimes and Kaggle offer no {entry.accelerator}: rent a machine with one (Python 3.10 or newer
and a CUDA build of PyTorch, as the usual GPU images have). The Colab badge above only opens the notebook
in Colab's editor, for a runtime you connect yourself (Connect > "Connect to a local runtime", pointed at
the rented machine's Jupyter). Or set the secrets above as environment variables there and run the
notebook as it is with papermill (`-p NAME VALUE` changes a parameter):

```bash
pip install {reqs} papermill ipykernel
wget {raw}
papermill {entry.id}.ipynb {entry.id}.run.ipynb
```

or run its training as a job from a checkout, on one GPU or data-parallel on several
(`torchrun --nproc-per-node N -m shared.train ...`); it reads this notebook's parameters, resumes its
checkpoints and ends with the same exports:

```bash
git clone https://github.com/{settings.repository} && cd {name} && pip install -e .
python -m shared.train --params notebooks/{entry.id}.ipynb
```"""


INSTALL_TEMPLATE = '''\
# @title Install what this runtime lacks (does nothing when everything is already present)
REQUIREMENTS = {requirements}


class RestartNeeded(RuntimeError):
    """pip changed a package this kernel had already imported: the old code stays loaded until a restart."""


def _install_missing(requirements):
    """pip-install only the requirements that are missing or too old (never an importable torch); then stop
    Run-all, in one line, if pip changed any package this kernel had already imported (dependencies too)."""
    import importlib, importlib.metadata, importlib.util, subprocess, sys
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip always carries a copy of packaging
        from pip._vendor.packaging.requirements import Requirement
    todo = []
    for spec in requirements:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate():
            continue
        if req.name.lower() == "torch" and importlib.util.find_spec("torch") is not None:
            continue  # keep the platform's CUDA build of torch
        try:
            have = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            todo.append(spec)
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            todo.append(spec)
    if not todo:
        print("all requirements present; nothing to install")
        return

    def imported_versions():  # {{distribution: version}} of the distributions whose modules are imported now
        owners, found = importlib.metadata.packages_distributions(), {{}}
        for module in {{name.partition(".")[0] for name in list(sys.modules)}}:
            for dist in owners.get(module, ()):
                try:
                    found[dist] = importlib.metadata.version(dist)
                except importlib.metadata.PackageNotFoundError:
                    pass
        return found

    before = imported_versions()
    print("installing:", " ".join(todo))
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *todo])
    importlib.invalidate_caches()
    changed = []
    for dist, old in sorted(before.items()):
        try:
            new = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            new = "removed"
        if new != old:
            changed.append(f"{{dist}} {{old}} -> {{new}}")
    if changed:  # said once: after the restart everything is present and nothing installs again
        raise RestartNeeded(f"RESTART NEEDED: pip changed {{', '.join(changed)}}, already imported by this kernel. "
                            "Restart the kernel (Colab: Runtime > Restart session; Kaggle: Run > Restart & clear "
                            "cell outputs), then run all cells again: this cell will find nothing to do.")
    print("installed; nothing this kernel had imported changed")


_install_missing(REQUIREMENTS)'''


def install_cell(requirements: list[str]) -> str:
    if not requirements:
        reqs = "[]"
    else:
        reqs = "[\n" + "".join(f"    {json.dumps(r)},\n" for r in requirements) + "]"
    return INSTALL_TEMPLATE.format(requirements=reqs)


CORE_INTRO = """\
### Vendored core (`shared/`, content hash `{hash}`)

The hidden cells below hold the project's `shared/` modules that this notebook uses
({modules}), as plain source. At run time they are written into a folder named by their
content hash inside a folder only you can write (`~/.cache/sae_ladder/core`, or `$SAE_LADDER_CORE_DIR`;
checked to be yours and closed to others, else a fresh private temporary folder), never into your
working folder. Anything there that this cell did not write (compiled bytecode, another module, a
link) is removed before the import, and that folder goes first on `sys.path`; so this notebook runs
with no checkout of the project beside it. Generated by `build_notebooks.py`; edit `shared/` in the repository,
not here."""

CORE_SETUP = '''\
# @title Vendored core: setup
CORE_HASH = "{hash}"  # sha256 (first 16 hex digits) of the module paths + sources below
NOTEBOOK_ID = "{notebook_id}"  # this notebook's catalog id; reports name it
# the names its parameters cell assigns: check_parameters refuses any other upper-case setting (a typo, another
# notebook's parameter) in one line
NOTEBOOK_PARAMETERS = {parameters}
_CORE_FILES = {{}}


def _add_core_module(relpath, source):
    """Register one module of the vendored `shared/` package (path relative to shared/)."""
    _CORE_FILES[relpath] = source[1:] if source.startswith("\\n") else source'''

CORE_MODULE = '''\
# @title shared/{rel}
_add_core_module("{rel}", {literal})'''

CORE_ACTIVATE = '''\
# @title Vendored core: write to a private folder and import it from there
def _private_folder(path):
    """`path` made (mode 0700) or found as a real folder owned by this user and closed to others; None when it
    is a link, not a folder, or someone else's: then nothing in it is read."""
    import os, stat
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        return None
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours but open to others: close it (what they may have planted is removed below)
    return path


def _activate_core(files, stamped_hash, notebook_id=""):
    """Write the vendored modules to <private folder>/<hash>/shared, keeping nothing else there (no bytecode
    we did not write, no other module, no link), and import `shared` from there; `shared.CORE_HASH` and
    `shared.NOTEBOOK_ID` then say which core and notebook run (reports record them)."""
    import hashlib, importlib, os, shutil, sys, tempfile
    from pathlib import Path

    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode("utf-8") + b"\\0" + files[rel].encode("utf-8") + b"\\0")
    digest = h.hexdigest()[:16]
    if digest != stamped_hash:
        print(f"note: the vendored core was edited (hash {{digest}}, built as {{stamped_hash}}); using the edited copy")
    try:
        base = Path(os.environ.get("SAE_LADDER_CORE_DIR")
                    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sae_ladder" / "core")
    except RuntimeError:  # no home folder
        base = None
    root = base is not None and _private_folder(base) and _private_folder(base / digest)
    if not root:
        root = tempfile.mkdtemp(prefix=f"sae_ladder_core-{{digest}}-")  # new, random name, mode 0700
        print(f"note: {{base}} is not a private folder of yours; the vendored core goes to {{root}}")
    root = Path(root).resolve()
    wanted_files = {{Path("shared", rel) for rel in files}}
    wanted_dirs = {{parent for f in wanted_files for parent in f.parents if parent != Path(".")}}
    for folder, dirs, names in os.walk(root, topdown=False):  # links are listed, never followed
        for name in names + dirs:
            path = Path(folder) / name
            rel = path.relative_to(root)
            if name.startswith(".") and name.endswith(".tmp") and not path.is_symlink():
                continue  # another run's module being written (below); never imported
            if path.is_symlink() or (rel not in wanted_dirs if path.is_dir() else rel not in wanted_files):
                (shutil.rmtree if path.is_dir() and not path.is_symlink() else os.unlink)(path)
    for rel, text in sorted(files.items()):
        path = root / "shared" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        tmp = path.with_name(f".{{path.name}}.{{os.getpid()}}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="\\n") as f:
            f.write(text)
        os.replace(tmp, path)  # atomic: a concurrent run never sees half a module
    for name in [n for n in sys.modules if n == "shared" or n.startswith("shared.")]:
        del sys.modules[name]  # forget any other `shared` imported before
    stale = [str(base.resolve()) if base is not None else str(root), os.path.join(tempfile.gettempdir(), "sae_ladder_core-")]
    sys.path[:] = [p for p in sys.path if not str(p).startswith(tuple(stale))]
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    import shared
    where = Path(shared.__file__).resolve()
    if root not in where.parents:
        raise RuntimeError(f"`shared` was imported from {{where}}, not from the vendored core in {{root}}; "
                           "restart the runtime and run the notebook from the top")
    shared.CORE_HASH, shared.NOTEBOOK_ID = digest, notebook_id
    print(f"vendored core {{digest}}: {{len(files)}} modules in {{root / 'shared'}}")
    return root


CORE_DIR = _activate_core(_CORE_FILES, CORE_HASH, NOTEBOOK_ID)'''


def core_cells(root: Path, relpaths: list[str], notebook_id: str = "", parameters: tuple[str, ...] = ()
               ) -> tuple[str, list[str]]:
    """(intro markdown, code cells) that vendor the given shared/ files; the set-up names the notebook and its
    parameters (`parameters`: the names its parameters cell assigns)."""
    files = {rel: catalog_module(load_catalog(root)) if rel == CATALOG_MODULE  # as this build writes it
             else (root / "shared" / rel).read_text(encoding="utf-8") for rel in relpaths}
    digest = core_hash(files)
    shown = ", ".join(f"`{r}`" for r in relpaths)
    cells = [CORE_SETUP.format(hash=digest, notebook_id=notebook_id, parameters=_names_literal(parameters))]
    cells += [CORE_MODULE.format(rel=rel, literal=py_string_literal(files[rel])) for rel in relpaths]
    cells.append(CORE_ACTIVATE.format())
    return CORE_INTRO.format(hash=digest, modules=shown), cells


def _names_literal(names: tuple[str, ...]) -> str:
    """A tuple of names as Python source, wrapped under 120 columns."""
    if not names:
        return "()"
    body = textwrap.fill(", ".join(json.dumps(n) for n in names), 115, initial_indent="    ",
                         subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)
    return f"(\n{body},\n)"


# ---------------------------------------------------------------------------- generated catalog module

CATALOG_MODULE = "notebook/catalog.py"  # shared/notebook/catalog.py: the catalog's facts, for code that runs inside a notebook
CATALOG_FIELDS = ("id", "source", "title", "level", "platform", "accelerator", "expected_time")


def catalog_module(entries: list[Entry]) -> str:
    """Source of shared/notebook/catalog.py: one dict per catalog entry (CATALOG_FIELDS), in catalog order.

    Generated so that vendored code (planning.models: which tier notebooks are released) reads the catalog with no
    checkout beside it; `--check` fails when it is stale like any rendered file.
    """
    rows = "".join(f"    {json.dumps({k: getattr(e, k) for k in CATALOG_FIELDS}, ensure_ascii=False)},\n"
                   for e in entries)
    return ('"""The notebook catalog (notebooks_src/catalog.toml) as data. Generated by build_notebooks.py: '
            'do not edit."""\n\n'
            f"NOTEBOOKS = (\n{rows})\n")


# ---------------------------------------------------------------------------- notebook

# What each platform's notebook metadata calls a catalog accelerator. No fallback: an entry whose platform
# offers no such accelerator is a catalog error (_check_platform), never a guess.
COLAB_GPU_TYPES = {"T4": "T4", "L4": "L4", "A100": "A100"}  # Colab's `gpuType` values
# Kaggle's accelerator ids (Kaggle/kaggle-cli docs/kernels.md lists NvidiaTeslaT4, NvidiaTeslaP100, ...;
# notebooks Kaggle saves spell them lowerCamel). Kaggle's T4 accelerator is two T4s: "T4" and "2xT4" are it.
KAGGLE_ACCELERATORS = {"none": "none", "T4": "nvidiaTeslaT4", "2xT4": "nvidiaTeslaT4", "P100": "nvidiaTeslaP100"}


def _check_platform(e: Entry, where: str) -> None:
    """The entry's accelerator must be one its platform's metadata can name (cloud: any accelerator)."""
    if e.gpu and e.platform in ("colab", "any") and e.accelerator not in COLAB_GPU_TYPES:
        raise BuildError(f"{where}: accelerator {e.accelerator!r} is not a Colab GPU ({', '.join(COLAB_GPU_TYPES)}); "
                         "use one, or platform = \"cloud\"")
    if e.platform in KAGGLE_PLATFORMS and (e.accelerator if e.gpu else "none") not in KAGGLE_ACCELERATORS:
        raise BuildError(f"{where}: accelerator {e.accelerator!r} is not a Kaggle accelerator "
                         f"({', '.join(KAGGLE_ACCELERATORS)}); use one, or platform = \"cloud\"")


def _platform_metadata(entry: Entry) -> dict:
    """kernelspec, Colab's GPU type where Colab offers it, Kaggle's accelerator and Internet where the entry runs on Kaggle."""
    colab = {"provenance": []}
    meta = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": colab,
    }
    if entry.gpu and entry.accelerator in COLAB_GPU_TYPES:
        colab["gpuType"] = COLAB_GPU_TYPES[entry.accelerator]
        meta["accelerator"] = "GPU"
    if entry.platform in KAGGLE_PLATFORMS:
        meta["kaggle"] = {"accelerator": KAGGLE_ACCELERATORS[entry.accelerator if entry.gpu else "none"],
                          "isGpuEnabled": entry.gpu, "isInternetEnabled": entry.needs["kaggle_internet"]}
    return meta


# A source cell that applies to some entries only carries `when` in its metadata (percent format:
# `# %% [markdown] when="platform=kaggle"`): KEY=a,b (any of), KEY!=a,b, KEY~regex, KEY!~regex, where KEY
# is `platform` or `accelerator` of the entry or a parameter NAME, compared with its rendered default.
# Narrative only: code is the same for every entry of a source, so one smoke run covers them all.
WHEN_KEY = "when"
_WHEN = re.compile(r"^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>!=|!~|=|~)\s*(?P<value>.+?)\s*$")


def cell_applies(condition: str, entry: Entry, parameters: dict, where: str = "cell") -> bool:
    """Whether a cell with `when = condition` belongs in the entry's notebook (parameters: the rendered defaults)."""
    m = _WHEN.match(condition) if isinstance(condition, str) else None
    if m is None:
        raise BuildError(f'{where}: when="{condition}" is not KEY=a,b / KEY!=a,b / KEY~regex / KEY!~regex')
    key, op, value = m["key"], m["op"], m["value"]
    if key in ("platform", "accelerator"):
        actual = getattr(entry, key)
    elif key in parameters:
        actual = parameters[key] if isinstance(parameters[key], str) else repr(parameters[key])
    else:
        raise BuildError(f'{where}: when="{condition}" names {key!r}, which is neither platform, accelerator nor '
                         f"a parameter ({', '.join(sorted(parameters))})")
    if op in ("=", "!="):
        hit = actual in [v.strip() for v in value.split(",")]
    else:
        try:
            hit = re.search(value, actual) is not None
        except re.error as e:
            raise BuildError(f'{where}: when="{condition}": bad regex ({e})') from None
    return hit != op.startswith("!")


def _source_cells(root: Path, entry: Entry):
    import jupytext
    path = root / "notebooks_src" / entry.source
    nb = jupytext.reads(path.read_text(encoding="utf-8"), fmt="py:percent")
    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(params) != 1 or nb.cells[params[0]].cell_type != "code":
        raise BuildError(f"notebooks_src/{entry.source}: needs exactly one code cell tagged "
                         f'parameters (`# %% tags=["parameters"]`), found {len(params)}')
    return nb.cells, params[0]


def parameters_of(root: Path, entry: Entry) -> dict:
    """The notebook's parameter values as rendered: the source's parameters cell with the catalog's overrides."""
    cells, p = _source_cells(root, entry)
    return parameter_defaults(apply_overrides(cells[p].source, entry.parameters, f"notebooks_src/{entry.source}"))


def render_entry(root: Path, entry: Entry, settings: Settings) -> str:
    """The notebook JSON text for one catalog entry."""
    import nbformat
    root = Path(root)
    where = f"notebooks_src/{entry.source} ({entry.id})"
    cells, p = _source_cells(root, entry)
    params_src = apply_overrides(cells[p].source, entry.parameters, f"{where} parameters")
    apply_overrides(params_src, {k: 0 for k in entry.smoke}, f"{where} [notebook.smoke]")  # names exist
    code = "\n\n".join(c.source for c in cells if c.cell_type == "code")
    code = "\n".join(line for line in code.split("\n") if not line.lstrip().startswith(("%", "!")))
    closure = core_closure(root, code, where)
    intro, vendored = core_cells(root, closure, entry.id, tuple(_assignments(params_src)))

    hidden = {"cellView": "form", "collapsed": True, "jupyter": {"source_hidden": True}}
    defaults = parameter_defaults(params_src)
    out = [("markdown", title_cell(entry, settings), {})]
    for i, c in enumerate(cells):
        meta = {k: v for k, v in c.metadata.items() if k not in JUPYTEXT_CELL_KEYS and k != WHEN_KEY}
        if WHEN_KEY in c.metadata:
            cell_where = f"{where} cell {i}"
            if c.cell_type != "markdown":
                raise BuildError(f"{cell_where}: `when` may only hide narrative (markdown): the code of a source "
                                 "must be the same for all its entries, so one smoke run covers them")
            if not cell_applies(c.metadata[WHEN_KEY], entry, defaults, cell_where):
                continue
        out.append((c.cell_type, params_src if i == p else c.source, meta))
        if i == p:
            out.append(("code", install_cell(entry.requirements), {"tags": [INSTALL_TAG]}))
            out.append(("markdown", intro, {"tags": [CORE_TAG]}))
            out += [("code", src, {**hidden, "tags": [CORE_TAG]}) for src in vendored]

    nb = nbformat.v4.new_notebook()
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata = _platform_metadata(entry)
    for i, (kind, src, meta) in enumerate(out):
        cell = nbformat.v4.new_code_cell(src) if kind == "code" else (
            nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_raw_cell(src))
        cell.metadata = meta
        cell.id = hashlib.sha256(f"{entry.id}:{i}".encode()).hexdigest()[:12]
        if kind == "code":
            cell.outputs, cell.execution_count = [], None
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nbformat.writes(nb, version=4) + "\n"


def readme_table(entries: list[Entry], settings: Settings) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")
    rows = ["| notebook | what it does | level | platform | GPU | time | open |",
            "|---|---|---|---|---|---|---|"]
    for e in entries:
        rows.append(f"| [{e.id}](notebooks/{e.id}.ipynb) | {esc(e.pitch)} | {esc(e.level)} | "
                    f"{e.platform} | {esc(e.accelerator) if e.gpu else 'none'} | "
                    f"{esc(e.expected_time)} | {_badge_md(e, settings)} |")
    return "\n".join(rows)


def update_readme(text: str, table: str) -> str:
    """README text with the catalog table between the markers replaced."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise BuildError(f"README.md lacks the markers {README_START} ... {README_END}; "
                         "add them where the catalog table belongs")
    return text[:start + len(README_START)] + "\n" + table + "\n" + text[end:]


def render_all(root: Path, only: str | None = None) -> tuple[dict[str, str], list[str]]:
    """({relative path: text} of everything the build owns, notes). README is included if it exists."""
    root = Path(root)
    settings, entries = load_settings(root), load_catalog(root)
    if only is not None:
        picked = [e for e in entries if e.id == only]
        if not picked:
            raise BuildError(f"--only {only}: no such id; catalog ids: {[e.id for e in entries]}")
        return {f"notebooks/{only}.ipynb": render_entry(root, picked[0], settings)}, []
    files = {f"shared/{CATALOG_MODULE}": catalog_module(entries)}
    files.update({f"notebooks/{e.id}.ipynb": render_entry(root, e, settings) for e in entries})
    files.update(build_site.site_files(root, entries, settings, {e.id: parameters_of(root, e) for e in entries},
                                       {e.id: badges(e, settings) for e in entries}, needs_lines=needs_lines))
    notes = []
    readme = root / "README.md"
    if readme.exists():
        files["README.md"] = update_readme(readme.read_text(encoding="utf-8"), readme_table(entries, settings))
    else:
        notes.append("README.md not found; skipped the catalog table")
    return files, notes


def _extras(root: Path, files: dict[str, str]) -> list[str]:
    return sorted([f"notebooks/{p.name}" for p in (root / "notebooks").glob("*.ipynb")
                   if f"notebooks/{p.name}" not in files] + build_site.extras(root, files))


def check(root: Path, only: str | None = None) -> list[str]:
    """Problems ('stale: path', 'missing: path', 'extra: path'); empty when everything is fresh."""
    root = Path(root)
    files, _ = render_all(root, only)
    problems = []
    for rel, text in files.items():
        path = root / rel
        if not path.exists():
            problems.append(f"missing: {rel}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"stale: {rel}" + (" (catalog table)" if rel == "README.md" else ""))
    if only is None:
        problems += [f"extra: {rel} (not in the catalog)" for rel in _extras(root, files)]
    return problems


def build(root: Path, only: str | None = None) -> list[str]:
    """Write every rendered file that changed and remove notebooks no longer in the catalog."""
    root = Path(root)
    generated = root / "shared" / CATALOG_MODULE  # first: the notebooks that vendor it import it
    text = catalog_module(load_catalog(root))
    if (root / "shared").is_dir() and (not generated.exists() or generated.read_text(encoding="utf-8") != text):
        generated.parent.mkdir(exist_ok=True)
        generated.write_text(text, encoding="utf-8")
    files, notes = render_all(root, only)
    (root / "notebooks").mkdir(exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        notes.append(f"wrote {rel}")
    if only is None:
        for rel in _extras(root, files):
            (root / rel).unlink()
            notes.append(f"removed {rel} (not in the catalog)")
    return notes


def smoke_run(root: Path, notebook_id: str, out: Path) -> Path:
    """Run the rendered notebook `notebook_id` with its catalog smoke parameters, with `out` as its folder.

    The executed notebook is written beside what the notebook produced, as `<id>.executed.ipynb`.
    """
    import papermill as pm

    entries = {e.id: e for e in load_catalog(root)}
    if notebook_id not in entries:
        raise BuildError(f"no notebook {notebook_id!r} in the catalog; known: {', '.join(sorted(entries))}")
    entry = entries[notebook_id]
    path = root / "notebooks" / f"{notebook_id}.ipynb"
    if not path.exists() or path.read_text(encoding="utf-8") != render_entry(root, entry, load_settings(root)):
        raise BuildError(f"notebooks/{notebook_id}.ipynb is missing or stale: run `python build_notebooks.py`")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    executed = out / f"{notebook_id}.executed.ipynb"
    print(f"running {path.name} with its smoke parameters {entry.smoke} in {out}")
    pm.execute_notebook(str(path), str(executed), parameters=entry.smoke, cwd=str(out), kernel_name="python3")
    print(f"done: {executed}")
    return executed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="render in memory; exit 1 if anything is stale")
    ap.add_argument("--only", metavar="ID", help="render only this catalog id")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent,
                    help="repository root (default: the folder of this script)")
    ap.add_argument("--smoke-run", metavar="ID", help="run the rendered notebook ID with its smoke parameters")
    ap.add_argument("--out", type=Path, default=Path("demo"), help="folder for --smoke-run (default: demo)")
    args = ap.parse_args(argv)
    try:
        if args.smoke_run:
            smoke_run(args.root, args.smoke_run, args.out)
            return 0
        if args.check:
            problems = check(args.root, args.only)
            for p in problems:
                print(p)
            if problems:
                print("notebooks are out of date: run `python build_notebooks.py`", file=sys.stderr)
                return 1
            print("notebooks are up to date")
            return 0
        for note in build(args.root, args.only):
            print(note)
        return 0
    except (BuildError, build_site.SiteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
