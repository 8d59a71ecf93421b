"""Papermill smoke run of every catalog notebook: the RENDERED notebooks/<id>.ipynb (so the vendored
core is what runs), with its [notebook.smoke] parameters, from a folder outside the repository,
with the repository off sys.path and no network; it must leave its [notebook.smoke_outputs].

Entries rendered from a source an earlier entry already uses (tier_recipe.py: 01 -> 08, 09, 10)
are not run again: test_same_source_renders_the_same_code proves their cells are the run entry's
apart from the title, the parameter values and the platform metadata. SAE_LADDER_SMOKE_ALL=1 runs
them anyway; an entry with `smoke_run = true` (the hybrid qwen3_5 rungs 02 and 03) always runs."""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest

import build_notebooks as bn
from conftest import REPO, write_fixture_repo

try:
    ENTRIES, CATALOG_ERROR = bn.load_catalog(REPO), None
except bn.BuildError as e:  # reported by the test below, not as a collection crash
    ENTRIES, CATALOG_ERROR = [], str(e)
RUN_FOR_SOURCE = {}  # source -> the first entry rendered from it: the one that is smoke-run
for _e in ENTRIES:
    RUN_FOR_SOURCE.setdefault(_e.source, _e)
# an entry marked smoke_run = true (a model family the run entry does not cover) is run itself
SAME_SOURCE = [e for e in ENTRIES if RUN_FOR_SOURCE[e.source] is not e and not e.smoke_run]
SMOKE_ALL = os.environ.get("SAE_LADDER_SMOKE_ALL", "") not in ("", "0")


# An IPython startup file for the kernel: appends to $SAE_LADDER_IMPORT_LOG the top-level name of
# every absolute import made by notebook code (__main__) or the vendored core (shared.*), i.e. what
# the notebook itself imports at run time, not what those libraries import in turn.
IMPORT_RECORDER = """\
import builtins as _b, os as _os

def _recorder(original, log, seen=set()):
    def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get("__name__") or ""
        if level == 0 and (importer == "__main__" or importer.split(".")[0] == "shared"):
            top = name.partition(".")[0]
            if top not in seen:
                seen.add(top)
                with open(log, "a", encoding="utf-8") as f:
                    f.write(top + "\\n")
        return original(name, globals, locals, fromlist, level)
    return recording_import

_b.__import__ = _recorder(_b.__import__, _os.environ["SAE_LADDER_IMPORT_LOG"])
del _b, _os, _recorder
"""


def run_notebook(nb_path: Path, parameters: dict, tmp_path: Path, monkeypatch,
                 env: dict[str, str | None] | None = None) -> tuple[Path, dict]:
    """Execute `nb_path` with papermill in tmp_path/run; return (run folder, executed notebook).

    `env` sets (or, for None, removes) variables after the offline defaults below. The kernel
    records what the notebook imports into tmp_path/imports.txt (see IMPORT_RECORDER).
    """
    import papermill as pm

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert not run_dir.resolve().is_relative_to(REPO), "the smoke run must happen outside the repository"
    # The kernel inherits this environment: keep the repository off its sys.path (pytest's own
    # `pythonpath` setting only edits this process's sys.path, but a PYTHONPATH would leak) and
    # keep it offline, headless and writing the vendored core under tmp_path.
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("SAE_LADDER_CORE_DIR", str(tmp_path / "core"))
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-record-imports.py").write_text(IMPORT_RECORDER)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("SAE_LADDER_IMPORT_LOG", str(tmp_path / "imports.txt"))
    for var, value in (env or {}).items():
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(str(nb_path), str(out), parameters=parameters, cwd=str(run_dir),
                        kernel_name="python3", progress_bar=False, execution_timeout=900)
    return run_dir, json.loads(out.read_text())


def output_dir(nb: dict, parameters: dict, run_dir: Path) -> Path:
    (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    values = {**bn.parameter_defaults("".join(cell["source"])), **parameters}
    assert "OUTPUT_DIR" in values, "the parameters cell must define OUTPUT_DIR"
    return run_dir / values["OUTPUT_DIR"]


def imported_distributions(tmp_path: Path) -> set[str]:
    """Distributions the notebook imported at run time, less stdlib, the vendored core, and the
    platform's and optional modules (bn.PLATFORM_MODULES, bn.OPTIONAL_MODULES)."""
    from importlib.metadata import packages_distributions

    log = tmp_path / "imports.txt"
    assert log.exists(), "the import recorder did not run in the kernel (IPython startup file)"
    skip = set(sys.stdlib_module_names) | bn.PLATFORM_MODULES | bn.OPTIONAL_MODULES | {"shared", "__main__"}
    owners = packages_distributions()
    dists = set()
    for module in set(log.read_text().split()) - skip:
        found = owners.get(module)
        assert found, f"the notebook imported {module!r}, which no installed distribution provides"
        dists.update(bn.dist_name(d) for d in found)
    return dists


def assert_requirements_match_imports(entry, imported: set[str]):
    """The catalog's requirements are complete (everything imported is declared) and minimal
    (everything declared is imported, except full_run_only, which the smoke run must not import)."""
    declared = {bn.dist_name(r) for r in entry.requirements}
    full_only = {bn.dist_name(r) for r in entry.full_run_only}
    problems = []
    if imported - declared:
        problems.append(f"imports {sorted(imported - declared)} at run time; add them to its catalog requirements")
    if declared - full_only - imported:
        problems.append(f"declares {sorted(declared - full_only - imported)} but its smoke run never imports them: "
                        "drop them, or list them in full_run_only if only a full run (Hub data, push) imports them")
    if full_only & imported:
        problems.append(f"lists {sorted(full_only & imported)} in full_run_only, but its smoke run imports them")
    assert not problems, f"{entry.id} (smoke run imported {sorted(imported)}): " + "; ".join(problems)


def assert_completed(nb: dict):
    assert nb["metadata"]["papermill"]["exception"] in (None, False)
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            assert not [o for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_kernel_is_this_python():
    """ipykernel's python3 spec runs `python`, which jupyter_client replaces by sys.executable."""
    from jupyter_client.kernelspec import KernelSpecManager

    argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    bare = {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]}
    assert argv0 in bare or os.path.samefile(argv0, sys.executable), (
        f"kernel python3 runs {argv0}, not {sys.executable}; remove the stray kernelspec")


@pytest.mark.notebook
def test_fixture_notebook_runs_from_rendered_ipynb(tmp_path, monkeypatch):
    """End to end on a fixture catalog: render, run with papermill, read the report."""
    root = write_fixture_repo(tmp_path / "repo")
    bn.build(root)
    entry = next(e for e in bn.load_catalog(root) if e.id == "01_demo")
    run_dir, nb = run_notebook(root / "notebooks" / "01_demo.ipynb", entry.smoke, tmp_path, monkeypatch)
    assert_completed(nb)
    out = output_dir(nb, entry.smoke, run_dir)
    assert bn.missing_smoke_outputs(entry, out) == []
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 2 and report["name"] == "tiny:gpt2" and report["value"] == 13
    assert os.path.samefile(report["executable"], sys.executable)
    assert Path(report["shared_file"]).resolve().is_relative_to((tmp_path / "core").resolve())
    assert Path(report["cwd"]).resolve() == run_dir.resolve()
    on_path = {(Path(report["cwd"]) / p).resolve() for p in report["sys_path"]}  # "" is the kernel cwd
    assert REPO not in on_path and root.resolve() not in on_path
    assert not (run_dir / "shared").exists()  # the core never lands in the user's folder
    # the kernel recorded the notebook's own imports, and the install cell's packaging is the platform's
    assert {"json", "shared"} <= set((tmp_path / "imports.txt").read_text().split())
    assert imported_distributions(tmp_path) == set()


@pytest.mark.notebook
@pytest.mark.parametrize("entry", [pytest.param(e, id=e.id) for e in ENTRIES]
                         or [pytest.param(None, id="empty-catalog")])
def test_catalog_notebook(entry, tmp_path, monkeypatch):
    if CATALOG_ERROR:
        pytest.fail(f"notebooks_src/catalog.toml: {CATALOG_ERROR}")
    if entry is None:
        pytest.skip("the catalog has no notebooks yet")
    path = REPO / "notebooks" / f"{entry.id}.ipynb"
    fresh = bn.render_entry(REPO, entry, bn.load_settings(REPO))
    if not path.exists() or path.read_text(encoding="utf-8") != fresh:
        pytest.fail(f"notebooks/{entry.id}.ipynb is missing or stale; run `python build_notebooks.py`")
    if entry in SAME_SOURCE and not SMOKE_ALL:
        pytest.skip(f"same code as {RUN_FOR_SOURCE[entry.source].id} (test_same_source_renders_the_same_code); "
                    "SAE_LADDER_SMOKE_ALL=1 runs it")
    assert entry.smoke_outputs, f"{entry.id}: list what its smoke run writes in [notebook.smoke_outputs]"
    run_dir, nb = run_notebook(path, entry.smoke, tmp_path, monkeypatch)
    assert_completed(nb)
    out = output_dir(nb, entry.smoke, run_dir)
    reports = sorted(out.rglob("*.json")) if out.is_dir() else []
    assert reports, f"{entry.id} wrote no .json report into OUTPUT_DIR ({out})"
    assert_requirements_match_imports(entry, imported_distributions(tmp_path))
    missing = bn.missing_smoke_outputs(entry, out)
    assert not missing, f"{entry.id} smoke run, in {out}: " + "; ".join(missing)
    for claim in SMOKE_CLAIMS.get(entry.id, ()):
        claim(out)


def _steering_raises_the_feature(out: Path):
    """06: alpha = 3 raises the feature's activation on the generated text over alpha = 0."""
    report = json.loads((out / "interventions.json").read_text())
    act = {r["alpha"]: r["feature_activation"] for r in report["interventions"]}
    assert act[3.0] > act[0.0] and report["steered_up"] is True, act


def _interventions_in_trace_shape(out: Path):
    """06: interventions.json's counterfactuals have trace.json's shape, {"f<id>": {alpha: text}}."""
    report = json.loads((out / "interventions.json").read_text())
    texts = {f"{r['alpha']:g}": r["text"] for r in report["interventions"]}
    assert report["counterfactuals"] == {f"f{report['feature']}": texts}, report.get("counterfactuals")


def _layer_chosen_on_validation(out: Path):
    """23: the best layer has the highest validation accuracy, and its test accuracy is the one reported."""
    report = json.loads((out / "repe_report.json").read_text())
    rows = {r["layer"]: r for r in report["per_layer"]}
    assert rows[report["best_layer"]]["val_accuracy"] == max(r["val_accuracy"] for r in rows.values())
    assert report["best_layer_test_accuracy"] == rows[report["best_layer"]]["test_accuracy"]
    assert not set(report["split"]["test"]) & set(report["split"]["val"])


def _nothing_uploaded_unasked(out: Path):
    """11 (HF_REPO empty, as in the smoke run): nothing is uploaded."""
    assert json.loads((out / "upload.json").read_text())["hub"] == {}


# What a smoke run must show beyond its report's keys: the checks its issue names.
SMOKE_CLAIMS = {"06_steer_your_model": (_steering_raises_the_feature, _interventions_in_trace_shape),
                "11_stage_gate_g1": (_nothing_uploaded_unasked,),
                "23_repe_reading_vector": (_layer_chosen_on_validation,)}


@functools.lru_cache(maxsize=None)
def _cells(entry_id: str) -> tuple[list[dict], dict]:
    """(cells, metadata) of the notebook that entry_id renders to from its source now."""
    entry = next(e for e in ENTRIES if e.id == entry_id)
    nb = json.loads(bn.render_entry(REPO, entry, bn.load_settings(REPO)))
    return nb["cells"], nb["metadata"]


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.id) for e in SAME_SOURCE]
                         or [pytest.param(None, id="no-shared-source")])
def test_same_source_renders_the_same_code(entry):
    """An entry that is not smoke-run renders code cell for code cell as the run entry of its source,
    apart from the parameter values its catalog entry sets; so the run entry's smoke run, with its
    parameter values, covers it. (Narrative may differ: the title cell, and markdown cells whose `when`
    leaves them out of one entry, which the build allows on markdown only.)"""
    if entry is None:
        pytest.skip("no two catalog entries share a source")
    run = RUN_FOR_SOURCE[entry.source]
    (ours, meta), (theirs, _) = _cells(entry.id), _cells(run.id)
    ours, theirs = ([c for c in cells if c["cell_type"] == "code"] for cells in (ours, theirs))
    assert meta["kernelspec"]["name"] == "python3"
    assert len(ours) == len(theirs), f"{entry.id} and {run.id} have different code cells"
    (p,) = [i for i, c in enumerate(ours) if "parameters" in c["metadata"].get("tags", [])]
    def code(cell: dict, notebook_id: str) -> list[str]:  # the vendored set-up names its own notebook
        return [line.replace(repr(notebook_id).replace("'", '"'), "<id>") if line.startswith("NOTEBOOK_ID = ")
                else line for line in cell["source"]]

    for i, (a, b) in enumerate(zip(ours, theirs)):
        if i == p:  # the parameters cell, compared below
            continue
        assert (a["cell_type"], code(a, entry.id), a["metadata"]) == (b["cell_type"], code(b, run.id), b["metadata"]), (
            f"{entry.id} cell {i} differs from {run.id}'s")
    ours_p, theirs_p = (bn.parameter_defaults("".join(c[p]["source"])) for c in (ours, theirs))
    assert ours_p.keys() == theirs_p.keys()
    changed = {k for k in ours_p if ours_p[k] != theirs_p[k]}
    assert changed <= set(entry.parameters) | set(run.parameters), (
        f"{entry.id}: parameters {sorted(changed - set(entry.parameters) - set(run.parameters))} differ from "
        f"{run.id}'s but neither catalog entry sets them")
    for k in entry.parameters:
        assert ours_p[k] == entry.parameters[k], k
