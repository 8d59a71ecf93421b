"""Shared test settings and fixtures.

- Offline: HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE and HF_DATASETS_OFFLINE are set here, at conftest
  import, i.e. before any test module imports transformers or huggingface_hub (both read them once,
  at import). Tests that talk to a local fake Hub take the `hub_online` fixture.
- Tiny models: `tiny_model(arch)` and `tiny_trained_model(arch)` give one shared (model, tokenizer)
  per session and process. Share them only read-only (hooks removed, monkeypatch undone); a test
  that changes weights, dtype or device loads its own with shared.models.load_model.
  tiny-trained weights come from the usual on-disk cache (shared.runtime.cache_dir: $SAE_LADDER_CACHE
  or ~/.cache/sae_ladder), keyed by recipe and published atomically, so xdist workers and later
  sessions reuse one training instead of retraining per worker; it is left as the user set it.
- `fixture_repo`: a small stand-alone repository (build script, catalog, source, shared/) in tmp_path,
  so the build and papermill tests do not depend on which real notebooks exist.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
for _var in OFFLINE_VARS:  # tiny models and the synthetic corpus never need the network
    os.environ[_var] = "1"

FIXTURE_SOURCE = '''\
# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# ## What you'll learn
# - that the build works

# %% tags=["parameters"]
N = 3  # @param {type:"integer"}
NAME = "tiny:gpt2"  # @param {type:"string"}
OUTPUT_DIR = "outputs/demo"  # @param {type:"string"}
SEED = 0  # @param {type:"integer"}

# %%
import json, os, sys
from shared import alpha
import shared.sub.deep

# %% [markdown]
# ## 1. Write the report

# %%
import shared
os.makedirs(OUTPUT_DIR, exist_ok=True)
report = {
    "n": N, "name": NAME, "value": alpha.value() + shared.sub.deep.Z,
    "executable": sys.executable, "shared_file": shared.__file__, "sys_path": sys.path,
    "cwd": os.getcwd(),
}
path = os.path.join(OUTPUT_DIR, "report.json")
with open(path, "w") as f:
    json.dump(report, f)
print(path)
'''

# shared/ of the fixture: alpha -> beta (top) and gamma (inside a function); sub.deep -> beta
# (two-dot import); unused -> delta is never imported by the notebook.
FIXTURE_SHARED = {
    "__init__.py": "",
    "alpha.py": "from . import beta\n\n\ndef value():\n    from .gamma import G\n    return beta.B + G\n",
    "beta.py": '"""Beta."""\nB = 1\n',
    # hostile text for the vendoring encoder: both triple quotes, backslashes, no final newline
    "gamma.py": 'S1 = "\'\'\'"\nS2 = \'"""\'\nG = 1 + \\\n    1\nPATH = r"C:\\dir"  # C:\\',
    "sub/__init__.py": "",
    "sub/deep.py": "from .. import beta\nZ = beta.B * 10\n",
    "unused.py": "from . import delta\n",
    "delta.py": "D = 4\n",
}

FIXTURE_CATALOG = '''\
[[notebook]]
id = "01_demo"
source = "demo.py"
title = "Demo notebook"
pitch = "Shows that the build works"
level = "start here"
platform = "any"
accelerator = "T4"
expected_time = "1 min"
requirements = ["packaging>=20", "torch>=999"]
[notebook.needs]
memory_gb = 15
secrets = [{name = "HF_TOKEN", required = true, why = "the gated demo model"}]
gated = [{model = "org/gated-demo", licence = "https://huggingface.co/org/gated-demo"}]
downloads = [{what = "demo weights", gb = 0.5}]
kaggle_internet = true
colab_drive = false
time_basis = "measured on a T4, 2025-01-01"
[notebook.parameters]
N = 5
[notebook.smoke]
N = 2
OUTPUT_DIR = "outputs/smoke"
[notebook.smoke_outputs]
"report.json" = ["n", "name", "value", "executable"]

[[notebook]]
id = "02_demo_kaggle"
source = "demo.py"
title = "Demo on Kaggle"
pitch = "The same source with other defaults"
level = "beyond"
platform = "kaggle"
accelerator = "none"
expected_time = "2 min"
[notebook.needs]
memory_gb = 0
secrets = []
gated = []
downloads = []
kaggle_internet = false
colab_drive = false
time_basis = "estimated from the first entry's measurement"
[notebook.parameters]
N = 7
NAME = "tiny:llama"
'''

FIXTURE_PYPROJECT = '''\
[project]
name = "fixture"
version = "0"

[tool.ladder]
repository = "someone/ladder"
branch = "dev"
'''

FIXTURE_README = "# Fixture\n\nIntro.\n\n<!-- catalog:start -->\nold table\n<!-- catalog:end -->\n\nEnd.\n"


def peer_python(env_var: str, venv: str, module: str, make_target: str) -> str:
    """The interpreter of a peer package's own venv (tuned-lens, sae-bench, auto-circuit), or pytest.skip
    with the reason: env_var names another interpreter (used as given), else REPO/venv, which is skipped
    when it is missing or a half-built venv (`make` went on after a failed install) cannot import module."""
    import subprocess

    given = os.environ.get(env_var)
    if given:
        return given
    python = REPO / venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no {module} interpreter at {python}: run `make {make_target}` (or set {env_var})")
    probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"{venv} is incomplete ({last}): rerun `make {make_target}` (or set {env_var})")
    return str(python)


def write_fixture_repo(root: Path) -> Path:
    """Create the fixture repository under `root` (build script copied from the real repo)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "build_notebooks.py", root / "build_notebooks.py")
    shutil.copy(REPO / "build_site.py", root / "build_site.py")  # the site build, and the viewers' script it reads
    (root / "shared" / "views").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "shared" / "views" / "viewer.py", root / "shared" / "views" / "viewer.py")
    (root / "pyproject.toml").write_text(FIXTURE_PYPROJECT)
    (root / "README.md").write_text(FIXTURE_README)
    (root / "notebooks").mkdir(exist_ok=True)
    src = root / "notebooks_src"
    src.mkdir(exist_ok=True)
    (src / "catalog.toml").write_text(FIXTURE_CATALOG)
    (src / "demo.py").write_text(FIXTURE_SOURCE)
    for rel, text in FIXTURE_SHARED.items():
        path = root / "shared" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def fixture_repo(tmp_path: Path) -> Path:
    return write_fixture_repo(tmp_path / "repo")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest single-threaded, above all on a busy CI machine (use per module with
    `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hub_online(monkeypatch):
    """Undo the session's offline mode for one test that points the real huggingface_hub client at a
    local fake Hub (tests/fake_hub.py): the client read HF_HUB_OFFLINE into a constant at import."""
    import huggingface_hub.constants

    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def _model_getter(kind: str):
    """arch -> the one (model, tokenizer) of `<kind>:<arch>` on `device` (default: the default device)."""
    import torch

    from shared import runtime
    from shared.model import loading

    loaded = {}

    def get(arch: str, device=None):
        dev = runtime.default_device() if device is None else torch.device(device)
        if (arch, str(dev)) not in loaded:
            loaded[arch, str(dev)] = loading.load_model(f"{kind}:{arch}", device=dev)
        return loaded[arch, str(dev)]

    return get


@pytest.fixture(scope="session")
def tiny_model():
    """`tiny_model("llama")` -> (model, tokenizer) of tiny:llama (seed 0, float32), shared read-only."""
    return _model_getter("tiny")


@pytest.fixture(scope="session")
def tiny_trained_model():
    """`tiny_trained_model("gpt2")` -> (model, tokenizer) of tiny-trained:gpt2, shared read-only."""
    return _model_getter("tiny-trained")
