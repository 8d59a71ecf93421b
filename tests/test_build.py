"""Tests of build_notebooks.py on a fixture repository in tmp_path (the real tree is never edited)."""
from __future__ import annotations

import ast
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import build_notebooks as bn
from conftest import FIXTURE_SHARED, REPO, write_fixture_repo


def run_build(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / "build_notebooks.py"), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120)


def load(root: Path, nb_id: str) -> dict:
    return json.loads((root / "notebooks" / f"{nb_id}.ipynb").read_text())


def src(cell: dict) -> str:
    return "".join(cell["source"])


def core_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if bn.CORE_TAG in c["metadata"].get("tags", []) and c["cell_type"] == "code"]


def params_cell(nb: dict) -> dict:
    (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    return cell


# ---------------------------------------------------------------------------- --check

def test_check_fresh_then_stale_after_source_edit(fixture_repo):
    r = run_build(fixture_repo)
    assert r.returncode == 0, r.stderr
    r = run_build(fixture_repo, "--check")
    assert r.returncode == 0, r.stdout + r.stderr

    src_path = fixture_repo / "notebooks_src" / "demo.py"
    src_path.write_text(src_path.read_text() + "\n# %%\nprint('new cell')\n")
    r = run_build(fixture_repo, "--check")
    assert r.returncode == 1
    assert "stale: notebooks/01_demo.ipynb" in r.stdout
    assert "stale: notebooks/02_demo_kaggle.ipynb" in r.stdout
    assert "README.md" not in r.stdout  # the table did not change


def test_check_names_missing_extra_and_stale_readme(fixture_repo):
    assert run_build(fixture_repo).returncode == 0
    (fixture_repo / "notebooks" / "02_demo_kaggle.ipynb").unlink()
    (fixture_repo / "notebooks" / "99_orphan.ipynb").write_text("{}")
    readme = fixture_repo / "README.md"
    readme.write_text(readme.read_text().replace("Shows that the build works", "hand edit"))
    r = run_build(fixture_repo, "--check")
    assert r.returncode == 1
    assert "missing: notebooks/02_demo_kaggle.ipynb" in r.stdout
    assert "extra: notebooks/99_orphan.ipynb" in r.stdout
    assert "stale: README.md" in r.stdout
    # a full build repairs all of it, and only the text between the markers is touched
    assert run_build(fixture_repo).returncode == 0
    assert run_build(fixture_repo, "--check").returncode == 0
    assert not (fixture_repo / "notebooks" / "99_orphan.ipynb").exists()
    text = readme.read_text()
    assert text.startswith("# Fixture\n\nIntro.\n\n<!-- catalog:start -->\n| notebook |")
    assert text.endswith("<!-- catalog:end -->\n\nEnd.\n")
    assert "[01_demo](notebooks/01_demo.ipynb)" in text and "old table" not in text


def test_only_renders_one(fixture_repo):
    r = run_build(fixture_repo, "--only", "02_demo_kaggle")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (fixture_repo / "notebooks").iterdir()] == ["02_demo_kaggle.ipynb"]
    assert run_build(fixture_repo, "--check", "--only", "02_demo_kaggle").returncode == 0
    assert run_build(fixture_repo, "--check", "--only", "01_demo").returncode == 1
    r = run_build(fixture_repo, "--only", "nope")
    assert r.returncode == 2 and "no such id" in r.stderr


def test_missing_readme_is_skipped_not_created(fixture_repo):
    (fixture_repo / "README.md").unlink()
    r = run_build(fixture_repo)
    assert r.returncode == 0 and "README.md not found" in r.stdout
    assert not (fixture_repo / "README.md").exists()


# ---------------------------------------------------------------------------- determinism

def test_renders_byte_identical_twice_and_anywhere(fixture_repo, tmp_path):
    bn.build(fixture_repo)
    first = {p.name: p.read_bytes() for p in (fixture_repo / "notebooks").iterdir()}
    for p in (fixture_repo / "notebooks").iterdir():
        p.unlink()
    bn.build(fixture_repo)
    assert {p.name: p.read_bytes() for p in (fixture_repo / "notebooks").iterdir()} == first
    other = write_fixture_repo(tmp_path / "elsewhere" / "checkout")  # no absolute paths leak in
    bn.build(other)
    assert {p.name: p.read_bytes() for p in (other / "notebooks").iterdir()} == first
    for blob in first.values():
        text = blob.decode()
        assert text.endswith("}\n") and str(tmp_path) not in text
        nb = json.loads(text)
        assert text == json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------- content

def test_rendered_structure(fixture_repo):
    bn.build(fixture_repo)
    for nb_id in ("01_demo", "02_demo_kaggle"):
        nb = load(fixture_repo, nb_id)
        assert nb["nbformat"] == 4 and nb["nbformat_minor"] == 5
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        params_cell(nb)
        ids = [c["id"] for c in nb["cells"]]
        assert len(set(ids)) == len(ids)
        for c in nb["cells"]:
            if c["cell_type"] == "code":
                assert c["outputs"] == [] and c["execution_count"] is None
            assert not set(c["metadata"]) & bn.JUPYTEXT_CELL_KEYS
        # parameters cell, then the install cell, then the vendored core
        i = nb["cells"].index(params_cell(nb))
        assert bn.INSTALL_TAG in nb["cells"][i + 1]["metadata"]["tags"]
        assert bn.CORE_TAG in nb["cells"][i + 2]["metadata"]["tags"]
        for c in core_cells(nb):
            assert c["metadata"]["jupyter"] == {"source_hidden": True}
            assert c["metadata"]["cellView"] == "form"

    one, two = load(fixture_repo, "01_demo"), load(fixture_repo, "02_demo_kaggle")
    title = src(one["cells"][0])
    assert title.startswith("# Demo notebook\n\nShows that the build works")
    assert "start here" in title and "T4" in title and "1 min" in title
    colab = "https://colab.research.google.com/github/someone/ladder/blob/dev/notebooks/01_demo.ipynb"
    kaggle = ("https://kaggle.com/kernels/welcome?src=https://github.com/someone/ladder/blob/dev/"
              "notebooks/01_demo.ipynb")
    assert colab in title and kaggle in title
    assert one["metadata"]["colab"] == {"provenance": [], "gpuType": "T4"}
    assert one["metadata"]["accelerator"] == "GPU"
    assert one["metadata"]["kaggle"] == {"accelerator": "nvidiaTeslaT4", "isGpuEnabled": True,
                                         "isInternetEnabled": True}
    title2 = src(two["cells"][0])  # kaggle-only, CPU
    assert "colab.research.google.com/github" not in title2 and "kaggle.com/kernels/welcome" in title2
    assert "accelerator" not in two["metadata"] and "gpuType" not in two["metadata"]["colab"]
    assert two["metadata"]["kaggle"]["accelerator"] == "none"
    assert two["metadata"]["kaggle"]["isGpuEnabled"] is False


def test_overrides_applied_and_param_comments_kept(fixture_repo):
    bn.build(fixture_repo)
    p1 = src(params_cell(load(fixture_repo, "01_demo")))
    p2 = src(params_cell(load(fixture_repo, "02_demo_kaggle")))
    assert 'N = 5  # @param {type:"integer"}' in p1
    assert 'NAME = "tiny:gpt2"  # @param {type:"string"}' in p1
    assert 'N = 7  # @param {type:"integer"}' in p2
    assert 'NAME = "tiny:llama"  # @param {type:"string"}' in p2
    assert bn.parameter_defaults(p2) == {"N": 7, "NAME": "tiny:llama", "OUTPUT_DIR": "outputs/demo", "SEED": 0}


def test_apply_overrides_multiline_and_unicode():
    cell = 'A = "é"  # @param\nLAYERS = [\n    1,\n    2,\n]  # @param {type:"raw"}\nB = 1.5'
    out = bn.apply_overrides(cell, {"LAYERS": [3, 4], "A": "ü \"q\"", "B": True})
    assert out == 'A = "ü \\"q\\""  # @param\nLAYERS = [3, 4]  # @param {type:"raw"}\nB = True'
    assert bn.parameter_defaults(out) == {"A": 'ü "q"', "LAYERS": [3, 4], "B": True}


def test_vendored_closure_is_exactly_the_imports_and_their_deps(fixture_repo):
    code = (fixture_repo / "notebooks_src" / "demo.py").read_text()
    expected = ["__init__.py", "alpha.py", "beta.py", "gamma.py", "sub/__init__.py", "sub/deep.py"]
    assert bn.core_closure(fixture_repo, code) == expected
    assert bn.core_closure(fixture_repo, "import os\n") == ["__init__.py"]
    assert bn.core_closure(fixture_repo, "import shared.unused") == ["__init__.py", "delta.py", "unused.py"]
    assert bn.core_closure(fixture_repo, "from shared.sub import deep") == [
        "__init__.py", "beta.py", "sub/__init__.py", "sub/deep.py"]
    with pytest.raises(bn.BuildError, match="shared.nope"):
        bn.core_closure(fixture_repo, "from shared.nope import x")

    bn.build(fixture_repo)
    vendored = [c for c in core_cells(load(fixture_repo, "01_demo")) if "_add_core_module(\"" in src(c)]
    assert [src(c).split('"')[1] for c in vendored] == expected
    files = {rel: (fixture_repo / "shared" / rel).read_text() for rel in expected}
    assert f'CORE_HASH = "{bn.core_hash(files)}"' in "".join(src(c) for c in core_cells(load(fixture_repo, "01_demo")))


@pytest.mark.parametrize("text", [
    "", "x = 1\n", "s = '''a'''\n", 's = """a"""\n', "both = '''x''' + \"\"\"y\"\"\"\n",
    "ends with backslash \\", "ends with quote '", 'ends with dquote "', "tab\tand\x0cformfeed\n",
    "unicode é ✓\n", "cr\rcr\n", "\\'''\n",
])
def test_string_literal_round_trips(text):
    lit = bn.py_string_literal(text)
    assert ast.literal_eval(lit) == "\n" + text
    if "'''" not in text and not text.endswith(("'", "\\")) and "\r" not in text:
        assert lit.startswith("r'''")  # the readable form whenever it is safe


# ---------------------------------------------------------------------------- running the generated cells

def _script_from_cells(nb: dict, tags: str) -> str:
    return "\n\n".join(src(c) for c in nb["cells"]
                       if c["cell_type"] == "code" and tags in c["metadata"].get("tags", []))


def test_core_cells_import_the_vendored_shared_not_the_repos(fixture_repo, tmp_path):
    bn.build(fixture_repo)
    nb = load(fixture_repo, "01_demo")
    empty = tmp_path / "empty"
    empty.mkdir()
    core_dir = tmp_path / "core"
    script = tmp_path / "scripts" / "run_core.py"
    script.parent.mkdir()
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(fixture_repo)!r})\n"
        "import shared.alpha  # the checkout's copy, imported first on purpose\n"
        f"assert shared.__file__.startswith({str(fixture_repo)!r})\n"
        + _script_from_cells(nb, bn.CORE_TAG) + "\n"
        "import shared, shared.alpha, shared.gamma, shared.sub.deep\n"
        "print(json.dumps({'core_dir': str(CORE_DIR), 'shared': shared.__file__, 'alpha': shared.alpha.__file__,\n"
        "                  'deep': shared.sub.deep.__file__, 'value': shared.alpha.value(), 'Z': shared.sub.deep.Z}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["SAE_LADDER_CORE_DIR"] = str(core_dir)
    r = subprocess.run([sys.executable, str(script)], cwd=empty, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    root = Path(out["core_dir"])
    assert root.parent == core_dir.resolve()
    for key in ("shared", "alpha", "deep"):
        assert Path(out[key]).resolve().is_relative_to(root), out
    assert out["value"] == 3 and out["Z"] == 10  # B + G = 1 + 2
    assert list(empty.iterdir()) == []  # nothing written into the user's folder
    for rel, text in FIXTURE_SHARED.items():  # hostile sources survive byte for byte
        if rel in ("unused.py", "delta.py"):
            assert not (root / "shared" / rel).exists()
        else:
            assert (root / "shared" / rel).read_text() == text
    # a second run reuses the folder; an edited cell goes to a folder named by the new hash
    r = subprocess.run([sys.executable, str(script)], cwd=empty, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["core_dir"] == str(root)
    script.write_text(script.read_text().replace("B = 1", "B = 2"))
    r = subprocess.run([sys.executable, str(script)], cwd=empty, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "vendored core was edited" in r.stdout
    out2 = json.loads(r.stdout.strip().splitlines()[-1])
    assert out2["core_dir"] != str(root) and out2["value"] == 4


EVIL_ALPHA = """\
import pathlib
pathlib.Path({marker!r}).write_text("their code ran")


def value():
    return 666
"""


def _plant(core_dir: Path, digest: str, how: str, tmp_path: Path) -> Path:
    """Prepare core_dir as another user (or a careless earlier run) could have left it; returns the marker file
    that their code writes if it is ever imported."""
    import py_compile
    import importlib.util

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil_alpha.py"
    evil.write_text(EVIL_ALPHA.format(marker=str(marker)))
    pkg = core_dir / digest / "shared"
    if how == "symlinked-folder":  # their folder, full of their modules, where ours should be
        theirs = tmp_path / "theirs"
        (theirs / "sub").mkdir(parents=True)
        for rel in FIXTURE_SHARED:
            (theirs / rel).write_text(evil.read_text() if rel == "alpha.py" else "")
        pkg.parent.mkdir(parents=True)
        pkg.symlink_to(theirs, target_is_directory=True)
        return marker
    # the right sources, with a compiled alpha that is theirs: an unchecked-hash .pyc is used without
    # comparing it with the source, so keeping "files already there with the right text" runs their code
    for rel, text in FIXTURE_SHARED.items():
        if rel not in ("unused.py", "delta.py"):
            (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
            (pkg / rel).write_text(text)
    pyc = Path(importlib.util.cache_from_source(str(pkg / "alpha.py")))
    pyc.parent.mkdir()
    py_compile.compile(str(evil), cfile=str(pyc), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    if how == "open-folder":  # ours, but left writable by everyone
        for folder in (core_dir, core_dir / digest):
            folder.chmod(0o777)
    if how == "foreign-owner":  # another user's folder at our path
        for path in [core_dir, *core_dir.rglob("*")]:
            os.chown(path, 65534, 65534)
        core_dir.chmod(0o777)
    return marker


@pytest.mark.parametrize("how", ["pyc", "symlinked-folder", "open-folder", "foreign-owner"])
def test_vendored_core_never_imports_what_it_did_not_write(fixture_repo, tmp_path, how):
    """A shared machine: the core's folder path is predictable, so someone may plant a compiled module,
    a symlinked folder, or own the folder. Nothing of theirs is ever imported, and what we write lands in a
    folder only we can write."""
    import re
    import stat

    if how == "foreign-owner" and os.getuid() != 0:
        pytest.skip("making a folder another user's needs root")
    bn.build(fixture_repo)
    nb = load(fixture_repo, "01_demo")
    cells = _script_from_cells(nb, bn.CORE_TAG)
    digest = re.search(r'CORE_HASH = "([0-9a-f]+)"', cells).group(1)
    core_dir = tmp_path / "core"
    marker = _plant(core_dir, digest, how, tmp_path)
    script = tmp_path / "run_core.py"
    script.write_text(cells + "\nimport json, shared.alpha\n"
                      "print(json.dumps({'core_dir': str(CORE_DIR), 'alpha': shared.alpha.__file__, "
                      "'value': shared.alpha.value()}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}
    env["SAE_LADDER_CORE_DIR"] = str(core_dir)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["value"] == 3 and not marker.exists(), f"their code ran ({how})"
    root = Path(out["core_dir"])
    assert Path(out["alpha"]).resolve().is_relative_to(root)
    st = os.lstat(root)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077 == 0
    if how == "foreign-owner":  # theirs is left alone; ours is elsewhere
        assert not root.is_relative_to(core_dir) and "is not a private folder of yours" in r.stdout
    else:
        assert root == (core_dir / digest).resolve() and os.lstat(core_dir).st_mode & 0o077 == 0
    if how == "symlinked-folder":  # the link is gone, their folder untouched
        assert not (root / "shared").is_symlink() and "666" in (tmp_path / "theirs" / "alpha.py").read_text()


def test_install_cell_is_a_no_op_when_everything_is_present(fixture_repo, tmp_path):
    bn.build(fixture_repo)
    cell = _script_from_cells(load(fixture_repo, "01_demo"), bn.INSTALL_TAG)
    assert '"torch>=999"' in cell  # importable torch is never touched, even when "too old"
    guard = ("import subprocess\n"
             "def _no(*a, **k): raise AssertionError('pip was called: %r' % (a,))\n"
             "subprocess.check_call = subprocess.run = _no\n")
    script = tmp_path / "install.py"
    script.write_text(guard + cell)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "nothing to install" in r.stdout
    # and it does want what is missing or too old
    script.write_text(guard + cell.replace('"packaging>=20"', '"packaging>=9999", "surely-not-a-package-xyz"'))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "packaging>=9999 surely-not-a-package-xyz" in r.stdout


FAKE_SITE = """\
import os, shutil, subprocess, sys
SITE = sys.argv[1]
sys.path.insert(0, SITE)


def dist(name, version, top):  # a minimal installed distribution: its module and its dist-info
    os.makedirs(os.path.join(SITE, top), exist_ok=True)
    with open(os.path.join(SITE, top, "__init__.py"), "w") as f:
        f.write(f"VERSION = {version!r}\\n")
    info = os.path.join(SITE, f"{name.replace('-', '_')}-{version}.dist-info")  # as pip names it
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n")
    with open(os.path.join(info, "top_level.txt"), "w") as f:
        f.write(top + "\\n")


def upgrade(name, old, new, top):
    shutil.rmtree(os.path.join(SITE, f"{name.replace('-', '_')}-{old}.dist-info"))
    dist(name, new, top)


dist("fake-dep", "1.0", "fake_dep")
import fake_dep  # the platform imported it before the notebook ran (as Colab does transformers)
PIP = os.environ["FAKE_PIP"]  # what `pip install` does here, offline


def fake_pip(cmd, *a, **k):
    if PIP == "upgrade-dep":  # installs fake-main and, as its dependency, a newer fake-dep
        dist("fake-main", "2.0", "fake_main")
        upgrade("fake-dep", "1.0", "2.0", "fake_dep")
    elif PIP == "install-new":  # installs fake-main only
        dist("fake-main", "2.0", "fake_main")
    return 0


subprocess.check_call = fake_pip
"""


@pytest.mark.parametrize("pip, requirement, restart", [
    ("upgrade-dep", "fake-main>=2", "fake-dep 1.0 -> 2.0"),  # a dependency pip upgraded, never declared
    ("install-new", "fake-main>=2", None),  # merely missing: nothing imported changed
    ("nothing", "fake-dep>=2", None),  # declared too old but pip changed nothing: no restart asked
])
def test_install_cell_stops_run_all_when_pip_changed_an_imported_package(fixture_repo, tmp_path, pip, requirement,
                                                                         restart):
    """The restart is decided on what pip actually changed among the imported distributions (transformers 5
    also upgrades huggingface_hub and tokenizers), and it stops Run-all: the cell raises, in one line."""
    bn.build(fixture_repo)
    cell = _script_from_cells(load(fixture_repo, "01_demo"), bn.INSTALL_TAG)
    script = tmp_path / "install.py"
    script.write_text(FAKE_SITE + cell.replace('"packaging>=20"', json.dumps(requirement)))
    (tmp_path / "site").mkdir()
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "site")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "FAKE_PIP": pip})
    assert f"installing: {requirement}" in r.stdout
    if restart is None:
        assert r.returncode == 0 and "RESTART" not in r.stdout + r.stderr, r.stderr
    else:
        assert r.returncode != 0 and "RESTART" not in r.stdout
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("RestartNeeded: RESTART NEEDED: pip changed fake-dep 1.0 -> 2.0") and restart in last
        assert last.count("RESTART NEEDED") == 1


# ---------------------------------------------------------------------------- errors

def _edit_catalog(root: Path, old: str, new: str):
    path = root / "notebooks_src" / "catalog.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("old,new,message", [
    ('source = "demo.py"', 'source = "nope.py"', "notebooks_src/nope.py does not exist"),
    ('id = "02_demo_kaggle"', 'id = "01_demo"', "duplicate id '01_demo'"),
    ('platform = "kaggle"', 'platform = "laptop"', "platform 'laptop' is not one of"),
    ("N = 7", "M = 7", "override(s) ['M'] name no parameter"),
    ("N = 2", "NN = 2", "[notebook.smoke]"),
    ('title = "Demo on Kaggle"', 'titel = "x"', "missing keys ['title']"),
    ('requirements = ["packaging>=20"', 'requirements = ["packaging>>20"', "bad requirement"),
    ('requirements = ["packaging>=20"', 'full_run_only = ["datasets"]\nrequirements = ["packaging>=20"',
     "full_run_only must list distribution names from requirements"),
    ('requirements = ["packaging>=20"', 'smoke_run = "yes"\nrequirements = ["packaging>=20"',
     "smoke_run must be true or false"),
    # [notebook.needs]: there, complete, typed, consistent
    ("[notebook.needs]\nmemory_gb = 0\nsecrets = []\ngated = []\ndownloads = []\nkaggle_internet = false\n"
     "colab_drive = false\ntime_basis = \"estimated from the first entry's measurement\"\n", "",
     "missing [notebook.needs]"),
    ("colab_drive = false\ntime_basis = \"measured", "time_basis = \"measured", "lacks ['colab_drive']"),
    ("kaggle_internet = false\n", "kaggle_internet = false\nwifi = true\n", "unknown keys ['wifi']"),
    ("memory_gb = 15", "memory_gb = 0", "needs.memory_gb must be a number"),
    ("memory_gb = 0\n", "memory_gb = 15\n", "0 exactly when accelerator is none"),
    ('why = "the gated demo model"}', 'why = "the gated demo model", extra = 1}', "needs.secrets must be"),
    ('required = true, why = "the gated demo model"', 'required = false, why = "the gated demo model"',
     "a gated model needs HF_TOKEN, required"),
    ('licence = "https://huggingface.co/org/gated-demo"', 'licence = "https://example.com/licence"',
     "licence: the model's page, https://huggingface.co/org/gated-demo"),
    ('gb = 0.5', 'gb = "0.5"', "needs.downloads must be"),
    ('time_basis = "measured on a T4, 2025-01-01"', 'time_basis = "about right"', "starting with 'measured'"),
    # platform metadata from the catalog, without fallbacks
    ('accelerator = "T4"', 'accelerator = "96 GB GPU"', "'96 GB GPU' is not a Colab GPU"),
    ('accelerator = "none"\nexpected_time = "2 min"\n[notebook.needs]\nmemory_gb = 0',
     'accelerator = "L4"\nexpected_time = "2 min"\n[notebook.needs]\nmemory_gb = 22', "'L4' is not a Kaggle accelerator"),
])
def test_clear_errors(fixture_repo, old, new, message):
    _edit_catalog(fixture_repo, old, new)
    with pytest.raises(bn.BuildError) as e:
        bn.render_all(fixture_repo)
    assert message in str(e.value)
    if "duplicate" in message:  # the CLI reports the same message with exit code 2
        r = run_build(fixture_repo, "--check")
        assert r.returncode == 2 and message in r.stderr


def test_source_without_parameters_cell_is_an_error(fixture_repo):
    path = fixture_repo / "notebooks_src" / "demo.py"
    path.write_text(path.read_text().replace('# %% tags=["parameters"]', "# %%"))
    with pytest.raises(bn.BuildError, match="tagged parameters"):
        bn.render_all(fixture_repo)


OUTPUTS = '"report.json" = ["n", "name", "value", "executable"]'


@pytest.mark.parametrize("new,message", [
    ('"report.json" = "n"', 'smoke_outputs "report.json" must be a list of keys'),
    ('"report.json" = ["n", 3]', 'smoke_outputs "report.json" must be a list of keys'),
    ('"report.json" = ["a..b"]', "no empty part"),
    ('"../report.json" = []', "must be a relative path inside OUTPUT_DIR"),
    ('"/tmp/report.json" = []', "must be a relative path inside OUTPUT_DIR"),
    ('"plot.png" = ["n"]', 'smoke_outputs "plot.png" is not a .json file'),
])
def test_smoke_outputs_bad_shape_is_a_clear_error(fixture_repo, new, message):
    _edit_catalog(fixture_repo, OUTPUTS, new)
    with pytest.raises(bn.BuildError, match="01_demo") as e:
        bn.load_catalog(fixture_repo)
    assert message in str(e.value)


def test_smoke_outputs_must_be_a_table(fixture_repo):
    _edit_catalog(fixture_repo, "[notebook.smoke_outputs]\n" + OUTPUTS + "\n", "")
    _edit_catalog(fixture_repo, 'expected_time = "1 min"\n', 'expected_time = "1 min"\nsmoke_outputs = ["report.json"]\n')
    with pytest.raises(bn.BuildError, match=r"01_demo.*\[notebook.smoke_outputs\] must be a table"):
        bn.load_catalog(fixture_repo)


def test_missing_smoke_outputs_names_each_absent_file_and_key(fixture_repo, tmp_path):
    (entry,) = [e for e in bn.load_catalog(fixture_repo) if e.id == "01_demo"]
    entry.smoke_outputs = {"report.json": ["n", "layers.*.l0", "cfg.k"], "plot.png": [], "sub/x.json": []}
    (tmp_path / "report.json").write_text(json.dumps({"n": 1, "layers": {"2": {"l0": 3}, "4": {"fvu": 0}},
                                                      "cfg": {"k": 8}}))
    (tmp_path / "plot.png").write_bytes(b"")
    assert bn.missing_smoke_outputs(entry, tmp_path) == [
        "report.json: no key 'layers.*.l0'", "plot.png: missing or empty", "sub/x.json: missing or empty"]
    (tmp_path / "report.json").write_text(json.dumps({"n": 1, "layers": {"2": {"l0": 3}, "4": {"l0": 0}},
                                                      "cfg": {"k": 8}}))
    (tmp_path / "plot.png").write_bytes(b"\x89PNG")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.json").write_text("{not json")
    assert bn.missing_smoke_outputs(entry, tmp_path) == ["sub/x.json: not JSON (Expecting property name "
                                                         "enclosed in double quotes: line 1 column 2 (char 1))"]
    (tmp_path / "sub" / "x.json").write_text("{}")
    assert bn.missing_smoke_outputs(entry, tmp_path) == []
    entry.smoke_outputs = {"report.json": ["layers.*"], "sub/x.json": ["*"]}  # "*" needs at least one key
    assert bn.missing_smoke_outputs(entry, tmp_path) == ["sub/x.json: no key '*'"]


# ---------------------------------------------------------------------------- the real catalog

def test_real_catalog_renders_and_checks(tmp_path):
    """The repository's own catalog renders (in a copy) and every entry has parameters and badges."""
    root = tmp_path / "copy"
    root.mkdir()
    for name in ("build_notebooks.py", "pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, root / name)
    for name in ("notebooks_src", "shared"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "notebooks").mkdir()
    bn.build(root)
    assert bn.check(root) == []
    entries = bn.load_catalog(root)
    settings = bn.load_settings(root)
    for e in entries:
        nb = load(root, e.id)
        params_cell(nb)
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        links = [link for _, _, link in bn.badges(e, settings)]
        assert links and all(link in src(nb["cells"][0]) for link in links)
        assert e.smoke_outputs, f"{e.id}: list what its smoke run writes in [notebook.smoke_outputs]"


def test_install_cell_installs_the_declared_requirements_only():
    """The install cell holds the catalog's requirements, not the imports of the vendored closure:
    notebook 19 vendors shared/readouts/lens.py, whose lazy `from tqdm.auto import tqdm` (the tuned lens's fit)
    it never runs, so it must not install tqdm (tests/test_notebooks.py checks each declaration against its
    smoke run's imports)."""
    entry = next(e for e in bn.load_catalog(REPO) if e.id == "19_logit_lens")
    nb = _rendered(entry.id)
    (cell,) = [src(c) for c in nb["cells"] if bn.INSTALL_TAG in c["metadata"].get("tags", [])]
    listed = ast.literal_eval(cell.split("REQUIREMENTS = ", 1)[1].split("\n\n", 1)[0])
    assert listed == entry.requirements
    vendored = "".join(src(c) for c in nb["cells"] if bn.CORE_TAG in c["metadata"].get("tags", []))
    assert '_add_core_module("readouts/lens.py"' in vendored and "tqdm" not in {bn.dist_name(r) for r in listed}


# ---------------------------------------------------------------------------- what a notebook needs, per platform

GATED_FAMILIES = (r"^google/gemma", r"^meta-llama/", r"^mistralai/")  # licences to accept on the Hub


REAL = bn.load_catalog(REPO)


@functools.lru_cache(maxsize=None)
def _rendered(entry_id: str) -> dict:
    """The notebook the real catalog's entry renders to now."""
    entry = next(e for e in REAL if e.id == entry_id)
    return json.loads(bn.render_entry(REPO, entry, bn.load_settings(REPO)))


def _rendered_defaults(entry) -> dict:
    """The entry's parameter defaults as its notebook renders them (source defaults, catalog overrides)."""
    return bn.parameter_defaults(src(params_cell(_rendered(entry.id))))


@pytest.mark.parametrize("entry", REAL, ids=lambda e: e.id)
def test_every_entry_declares_its_needs_and_flags_its_gated_default_models(entry):
    """Every gated default model (Gemma, Llama, Mistral families) is flagged with its licence page and
    HF_TOKEN required; Drive is declared exactly where CHECKPOINT_DIR = "auto" asks for it on Colab; and
    the title cell says all of it before any code."""
    import re

    defaults = _rendered_defaults(entry)
    model = defaults.get("MODEL_ID", "")
    gated = {g["model"] for g in entry.needs["gated"]}
    expected = {model} if any(re.search(f, model) for f in GATED_FAMILIES) else set()
    assert gated == expected, f"{entry.id}: MODEL_ID {model!r}: needs.gated must be {sorted(expected)}"
    token = [s for s in entry.needs["secrets"] if s["name"] == "HF_TOKEN"]
    assert not expected or (token and token[0]["required"]), f"{entry.id}: a gated model needs HF_TOKEN, required"
    assert entry.needs["colab_drive"] == (defaults.get("CHECKPOINT_DIR") == "auto"), entry.id
    assert entry.needs["kaggle_internet"] or not entry.needs["downloads"], f"{entry.id} downloads: Internet on"
    nb = _rendered(entry.id)
    title, first_code = src(nb["cells"][0]), next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
    assert first_code > 0
    for line in bn.needs_lines(entry):  # plain text; in markdown "<user>" would read as a tag
        assert line.replace("<", "&lt;") in title, f"{entry.id}: the title cell lacks {line!r}"
    assert entry.needs["time_basis"].replace("<", "&lt;") in title and entry.expected_time in title
    for g in entry.needs["gated"]:
        assert g["licence"] in title


def test_needs_lines_say_where_secrets_are_set_on_the_entrys_platforms():
    by_id = {e.id: e for e in REAL}
    colab = " ".join(bn.needs_lines(by_id["01_hobbyist_gemma2_2b_colab"]))
    assert "Secrets" in colab and "Notebook access" in colab and "Kaggle" not in colab
    assert "accept its licence at https://huggingface.co/google/gemma-2-2b" in colab and "Google Drive" in colab
    kaggle = " ".join(bn.needs_lines(by_id["02_explorer_qwen35_4b_kaggle"]))
    assert "Add-ons > Secrets" in kaggle and "Internet on" in kaggle and "Colab" not in kaggle
    both = " ".join(bn.needs_lines(by_id["04_discover_features"]))
    assert "Notebook access" in both and "Add-ons > Secrets" in both
    assert "ANTHROPIC_API_KEY (optional)" in both and "HF_TOKEN (required)" in both
    assert "Secrets: none" in bn.needs_lines(by_id["07_pick_your_tier"])


@pytest.mark.parametrize("entry", REAL, ids=lambda e: e.id)
def test_platform_metadata_comes_from_the_catalog(entry):
    """No fallback: Colab's gpuType only where Colab offers the accelerator, Kaggle's accelerator id only on
    a Kaggle entry, Internet as the entry declares it."""
    meta = _rendered(entry.id)["metadata"]
    gpu_type = meta["colab"].get("gpuType")
    assert gpu_type == bn.COLAB_GPU_TYPES.get(entry.accelerator), entry.id
    if entry.platform in ("kaggle", "any"):
        assert meta["kaggle"] == {"accelerator": "nvidiaTeslaT4" if "T4" in entry.accelerator else "none",
                                  "isGpuEnabled": entry.gpu, "isInternetEnabled": entry.needs["kaggle_internet"]}
    else:
        assert "kaggle" not in meta
    if entry.id.startswith("03_"):  # the 96 GB notebook says no T4 anywhere in its metadata
        assert "T4" not in json.dumps(meta) and "accelerator" not in meta


def test_cloud_notebook_says_how_to_run_on_a_rented_gpu():
    entry = next(e for e in REAL if e.platform == "cloud")
    title = src(_rendered(entry.id)["cells"][0])
    assert "### Run it on a rented GPU" in title
    assert "pip install " + " ".join(f"'{r}'" if any(c in r for c in "<>") else r for r in entry.requirements) in title
    assert f"papermill {entry.id}.ipynb" in title and f"python -m shared.train --params notebooks/{entry.id}.ipynb" in title
    assert "Add-ons" not in title and "Notebook access" not in title  # neither Kaggle's nor Colab's secrets
    # its Colab badge opens an editor for a runtime the user connects, and the cell says so before anyone clicks
    assert any("Colab" in label for label, _, _ in bn.badges(entry, bn.load_settings(REPO)))
    assert "Colab's own runtimes and Kaggle offer no" in title and "Connect to a local runtime" in title


def test_use_your_sae_notebooks_read_an_sae():
    """The level "use your SAE" is for notebooks that read one: an SAE (or SAE_IDS) parameter."""
    for e in REAL:
        if e.level == "use your SAE":
            defaults = _rendered_defaults(e)
            assert "SAE" in defaults or "SAE_IDS" in defaults, f"{e.id} is labelled 'use your SAE' but reads none"


# ---------------------------------------------------------------------------- cells for some entries only

WHEN_CELLS = '''
# %% [markdown] when="platform=kaggle"
# KAGGLE-ONLY

# %% [markdown] when="platform!=kaggle"
# NOT-KAGGLE

# %% [markdown] when="NAME~^tiny:ll"
# LLAMA-ONLY

# %% [markdown] when="N=5,6"
# N-FIVE-OR-SIX
'''


def test_when_renders_a_cell_only_where_its_condition_holds(fixture_repo):
    path = fixture_repo / "notebooks_src" / "demo.py"
    path.write_text(path.read_text() + WHEN_CELLS)
    bn.build(fixture_repo)
    shown = {nb_id: "".join(src(c) for c in load(fixture_repo, nb_id)["cells"]) for nb_id in ("01_demo", "02_demo_kaggle")}
    # 01_demo: platform any, NAME tiny:gpt2, N = 5; 02_demo_kaggle: platform kaggle, NAME tiny:llama, N = 7
    assert "NOT-KAGGLE" in shown["01_demo"] and "N-FIVE-OR-SIX" in shown["01_demo"]
    assert "KAGGLE-ONLY" not in shown["01_demo"] and "LLAMA-ONLY" not in shown["01_demo"]
    assert "KAGGLE-ONLY" in shown["02_demo_kaggle"] and "LLAMA-ONLY" in shown["02_demo_kaggle"]
    assert "NOT-KAGGLE" not in shown["02_demo_kaggle"] and "N-FIVE-OR-SIX" not in shown["02_demo_kaggle"]
    for nb_id in shown:  # the condition is the build's: it does not leak into the notebook
        assert all("when" not in c["metadata"] for c in load(fixture_repo, nb_id)["cells"])


@pytest.mark.parametrize("cell, message", [
    ('# %% when="platform=kaggle"\nprint(1)\n', "may only hide narrative (markdown)"),
    ('# %% [markdown] when="NOPE=1"\n# x\n', "names 'NOPE', which is neither platform"),
    ('# %% [markdown] when="platform"\n# x\n', "is not KEY=a,b"),
    ('# %% [markdown] when="NAME~(("\n# x\n', "bad regex"),
])
def test_when_errors_are_clear(fixture_repo, cell, message):
    path = fixture_repo / "notebooks_src" / "demo.py"
    path.write_text(path.read_text() + "\n" + cell)
    with pytest.raises(bn.BuildError, match=r"demo\.py") as e:
        bn.render_all(fixture_repo)
    assert message in str(e.value)


def test_tier_recipe_sections_render_only_where_they_apply():
    """No hybrid or Kaggle text in the Colab notebooks (01, 10), no Kaggle or Colab text in the cloud one (03),
    the Gemma-2-2B healthy ranges only in 01."""
    text = {e.id[:2]: "".join(src(c) for c in _rendered(e.id)["cells"]
                              [1:] if c["cell_type"] == "markdown" and bn.CORE_TAG not in c["metadata"].get("tags", []))
            for e in REAL if e.source == "tier_recipe.py"}
    for nb in ("01", "10"):
        assert "Gated-DeltaNet" not in text[nb] and "Kaggle" not in text[nb] and "2xT4" not in text[nb], nb
    assert "Kaggle" not in text["03"] and "Colab" not in text["03"] and "Gated-DeltaNet" in text["03"]
    for nb in ("02", "08", "09"):
        assert "Kaggle" in text[nb] and "Two GPUs" in text[nb] and "Colab" not in text[nb], nb
    assert "Gated-DeltaNet" in text["02"] and "Gated-DeltaNet" not in text["08"]
    assert "senator1/sae-gemma2-2b-layer12-v9c" in text["01"] and "senator1" not in text["10"]
    assert all("What a healthy run shows here" in t for t in text.values())
