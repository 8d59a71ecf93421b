"""The core's shape, read from its code: every import of shared/ (those inside functions too, which a
notebook's vendoring follows as well) forms an acyclic graph, each module imports only from its own
package or a lower layer, and every subpackage's __init__.py is a docstring that imports nothing, so a
notebook vendors only the modules it uses."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1] / "shared"

# Lowest first. A module imports from its own package or from a layer below its own, never from a peer
# in its layer or from above: runtime and hub are leaves, planning (the VRAM and time model) sits above
# the trainer's memory terms and the notebook catalog it reads, recipes (the notebooks' vocabulary) sits
# on everything, and shared/train.py is only the `python -m shared.train` entry point on top.
LAYERS = (
    {"runtime"},
    {"hub"},
    {"data"},
    {"model"},
    {"saes"},
    {"training"},
    {"readouts", "circuits", "views", "features", "notebook"},
    {"evals", "planning"},
    {"recipes"},
    {"train"},
)
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SHARED.rglob("*.py")):
        name = ".".join(("shared",) + path.relative_to(SHARED).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _package(module: str) -> str:
    """The package a module of shared/ belongs to ("shared.saes.topk" -> "saes"; "shared.hub" -> "hub")."""
    return module.split(".")[1]


def _imports(module: str) -> set[str]:
    """The modules of shared/ that `module` imports anywhere in its code (a name imported from a package
    that is itself a module counts as that module)."""
    path = MODULES[module]
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module or ""
            targets = [f"{base}.{a.name}" for a in node.names] if base.startswith("shared") else []
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.startswith("shared.")]
        else:
            continue
        for target in targets:
            while target not in MODULES:
                assert "." in target, f"{module}: imports {target}, which is not a module of shared/"
                target = target.rsplit(".", 1)[0]
            if target not in (module, "shared"):
                found.add(target)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_package_has_a_layer():
    packages = {_package(m) for m in MODULES if m != "shared"}
    assert packages <= set(RANK), f"place {sorted(packages - set(RANK))} in LAYERS"


def test_the_import_graph_has_no_cycle():
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module)


def test_nothing_imports_upward_or_from_a_peer():
    wrong = [f"{module} imports {target}" for module, targets in GRAPH.items() if module != "shared"
             for target in targets
             if _package(target) != _package(module) and RANK[_package(target)] >= RANK[_package(module)]]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("init", sorted(p for p in SHARED.rglob("__init__.py") if p.parent != SHARED))
def test_a_subpackage_init_is_a_docstring_that_imports_nothing(init):
    tree = ast.parse(init.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{init.relative_to(SHARED.parent)}: say what the package holds"
    assert len(tree.body) == 1, f"{init.relative_to(SHARED.parent)}: holds more than its docstring"


def test_the_graph_sees_imports_inside_functions():
    """The reader above is what the checks rest on: it finds a lazy import (load.check_sae_fits reads
    the model's width inside the function) and resolves a package's module imported by name."""
    assert "shared.model.layout" in GRAPH["shared.saes.load"]
    assert {"shared.recipes.cli"} == GRAPH["shared.train"]
    assert "shared.saes.topk" in GRAPH["shared.saes.architectures"]


def test_registry_and_runtime_are_leaves():
    """The architecture registry imports no architecture (they register themselves with it), and runtime
    (where am I, devices, dtypes, secrets) imports nothing of the core."""
    assert GRAPH["shared.saes.registry"] == set() and GRAPH["shared.runtime"] == set()
    assert not {m for m in GRAPH["shared.saes.batchtopk"] if _package(m) == "training"}  # the reducer is handed in


def test_checkpoints_and_exports_name_no_module_of_the_core(tmp_path):
    """What a run writes (the checkpoint's state and manifest, the export's cfg.json and neuronpedia.json)
    names no Python module of shared/: a module can move without stranding a checkpoint or an export."""
    import re

    from shared.model.loading import load_model
    from shared.recipes.tiny_sae import train_tiny_sae

    model, tok = load_model("tiny:gpt2", device="cpu")
    train_tiny_sae(model, tok, "tiny:gpt2", 1, "synthetic", tmp_path, total_tokens=1024, d_sae=64, k=4,
                   context_len=32)
    written = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in tmp_path.rglob("*.json")}
    assert {"blocks.1.hook_resid_post/cfg.json", "blocks.1.hook_resid_post/neuronpedia.json"} <= set(written)
    assert any(name.endswith("state.json") for name in written) and any("manifest" in n for n in written)
    named = {name: sorted(set(re.findall(r"\bshared[./][\w./]*", text))) for name, text in written.items()}
    assert not any(named.values()), named
