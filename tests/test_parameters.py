"""Every catalog notebook's parameters are checked up front by shared.notebook.parameters.check_parameters,
by the rule families (shared/notebook/rules/) the notebook names: each parameter has a rule there, the smoke
values pass, and each bad value in the table below stops with a one-line ParameterError naming the
parameter (not a deep trace from inside a library)."""
import ast
import importlib
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: an unknown id must fail offline
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
from pathlib import Path

import pytest
import torch

import build_notebooks as bn
from conftest import REPO
from shared.model import layout
from shared.notebook import parameters
from shared.notebook.rules import planning, training

ENTRIES = bn.load_catalog(REPO)


def parameters_of(entry) -> dict:
    """The rendered notebook's parameters cell (catalog overrides applied) with its smoke values on top."""
    nb = json.loads((REPO / "notebooks" / f"{entry.id}.ipynb").read_text(encoding="utf-8"))
    (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    return {**bn.parameter_defaults("".join(cell["source"])), **entry.smoke}


def declared_of(entry) -> tuple:
    """The parameter names the rendered notebook's set-up declares (NOTEBOOK_PARAMETERS), as check_parameters reads them."""
    nb = json.loads((REPO / "notebooks" / f"{entry.id}.ipynb").read_text(encoding="utf-8"))
    (value,) = [node.value for cell in nb["cells"] if cell["cell_type"] == "code"
                for node in ast.parse("".join(cell["source"])).body if isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == [parameters.DECLARED]]
    return ast.literal_eval(value)


def notebook_globals(entry, rerun: bool = False, **injected) -> dict:
    """A rendered notebook's globals when its check runs, with papermill's `injected` values: its parameters cell
    with the smoke values, the install cell's and the vendored set-up's names, an upper-case module alias and, on
    a re-run in the same kernel, the checked P of the run before."""
    return {**parameters_of(entry), "REQUIREMENTS": list(entry.requirements), "CORE_HASH": "0" * 16,
            "NOTEBOOK_ID": entry.id, parameters.DECLARED: declared_of(entry), "CORE_DIR": Path("core"),
            "JSON": json, **({"P": parameters.Parameters({"SEED": 0})} if rerun else {}), **injected}


def families_of(entry) -> list:
    """The rule families the notebook's source names in its `check_parameters(globals(), ...)` call, in order."""
    tree = ast.parse((REPO / "notebooks_src" / entry.source).read_text(encoding="utf-8"))
    imported = {alias.asname or alias.name: alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "shared.notebook.rules" for alias in node.names}
    (call,) = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
               and getattr(node.func, "id", None) == "check_parameters"]
    return [importlib.import_module(f"shared.notebook.rules.{imported[arg.id]}") for arg in call.args[1:]]


def _missing_cuda() -> str:
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda:0"


# (name, bad value or f(params) -> bad value, applies-when(params) or None)
BAD = [
    ("MODEL_ID", "no-such/model", None), ("MODEL_ID", "", None),
    ("LAYER", 99, None), ("LAYER", [1, 1], None), ("LAYER", "first", None), ("LAYER", 2.5, None),
    ("LAYERS", "0,99", None), ("LAYERS", "", None), ("LAYERS", "3-1", None),
    ("SWEEP_LAYERS", "99", None),
    ("DATASET", "no-such-dataset", None), ("VAL_DATASET", "no-such-dataset", None),
    ("DATASET", [], None), ("DATASET", ["synthetic@0.7", "no-such-dataset@0.3"], None),
    ("DATASET", ["synthetic@0.7", "synthetic@-0.3"], None),
    ("CONTEXT_LEN", 0, None), ("MAX_LEN", -1, None), ("MAX_TEXT_TOKENS", -3, None),
    ("N_TRAIN", 0, None), ("N_TEST", 0, None), ("EVAL_DOCS", 0, None), ("EVAL_BATCHES", 0, None),
    ("PROMPT", "", None), ("CONCEPT", "no-such-concept", lambda p: not p.get("CONTRAST_PAIRS")),
    ("CONTRAST_PAIRS", [("only one side",)], None), ("N_PAIRS", -1, None),
    ("MONITOR_PROMPTS", "one string, not a list", None), ("STEER_PROMPTS", [], None),
    ("D_SAE", 0, None), ("K", lambda p: p["D_SAE"] + 1, None), ("K", 0, None),
    ("TOTAL_TOKENS", -5, None), ("BATCH_TOKENS", 0, None), ("MODEL_BATCH_SIZE", -1, None),
    ("BLOCK_BATCHES", 0, None), ("BLOCK_BATCHES", "big", None), ("LR", 0, lambda p: "OPTIMIZER" not in p), ("LR", -1e-3, None),
    ("LR_MIN", lambda p: p["LR"] * 10, None), ("WARMUP_STEPS", -1, None),
    ("DEAD_TOKENS_THRESHOLD", 0, None), ("CHECKPOINT_EVERY_TOKENS", 0, None), ("VAL_TOKENS", 0, None),
    ("BATCH_SIZE", 0, None), ("FIT_STEPS", 0, None), ("N_RESTARTS", 0, None), ("N_EPOCHS", 0, None),
    ("MAX_NEW_TOKENS", -1, None), ("TOP_K", 0, None), ("MAX_TOKENS_SHOWN", 0, None),
    ("TRY_PRETRAINED", "yes", None), ("OPTIMIZER", "lion", None), ("POOL", "max", None),
    ("PROBE_C", -1.0, None), ("TEST_FRAC", 1.5, None), ("VAL_FRAC", 0.8, None), ("NORM_FRACTION", 0, None), ("ALPHAS", [], None),
    ("GPU", "GTX-9000", None), ("BUDGET_MINUTES", 0, None), ("GOAL", "fun", None),
    ("MODEL_DEVICE", lambda p: _missing_cuda(), None), ("SAE_DEVICE", lambda p: _missing_cuda(), None),
    ("DEVICE", lambda p: _missing_cuda(), None), ("MODEL_DEVICE", "tpu-ish", None), ("MODEL_DTYPE", "fp8", None),
    ("CHECKPOINT_DIR", "hf:bad repo", None), ("RUN_NAME", "a/b", None), ("HF_REPO", "a/b/c", None),
    ("HF_PRIVATE", "yes", None), ("OUTPUT_DIR", "", None), ("SEED", "zero", None),
    ("HF_USERNAME", "alice/sae", None), ("HF_USERNAME", "alice smith", None), ("CHECKPOINT_EVERY_MINUTES", 0, None),
    ("ALLOW_UNRESUMABLE", "yes", None), ("ALLOW_STREAM_CHANGE", 1, None),

    ("FEATURE", -2, None), ("FEATURE", 1.5, None), ("FEATURE_CATALOG", 3, None), ("BASELINE_TOKENS", 0, None),
    ("FEATURE", "weather words", lambda p: not p.get("FEATURE_CATALOG")),
    ("FEATURE_CATALOG", "no/such/feature_catalog.json", None),
    ("LAYERS", [1], lambda p: "SPARSITY" in p or "SAE_IDS" in p),
    ("WATCH_FEATURES", [-1], None), ("WATCH_FEATURES", "5", None), ("PERCENTILE", 100, None),
    # a latent id beyond the SAE's width ("train-tiny": 4 x d_model), known before any weights load
    ("FEATURE", 999999, lambda p: p.get("SAE") == "train-tiny"),
    ("WATCH_FEATURES", [3, 99999], lambda p: p.get("SAE") == "train-tiny"),
    ("PROMPTS", [], None), ("PROMPTS", "no-such-dataset", None), ("N_PROMPTS", 0, None),
]

BAD += [  # using an SAE (04, 05)
    ("SAE", "", None), ("SAE", "no such sae", None), ("SAE_ID", 5, None),
    ("SAE_ID", "layer_99/width_16k/canonical", lambda p: p["SAE"] == "gemma-scope-2b-pt-res-canonical"),
    ("N_TOKENS", 0, None), ("N_FEATURES", 0, None), ("DETECTION_TOKENS", 0, None), ("JUDGE", "gpt", None),
    ("ANTHROPIC_MODEL", "", None), ("OPENAI_MODEL", "", None), ("CATALOG", "no/such/feature_catalog.json", None),
]

BAD += [  # Stage Gate G1 (11)
    ("PROBLEMS", "math", None), ("RESPONSES", "sample", None),
    ("RESPONSES", "dataset", lambda p: p.get("PROBLEMS") == "gsm8k"),
    ("N_EVAL", 0, None), ("N_SELECT", -1, None), ("PACK_SIZE", 0, None),
    ("HELPFUL_PACK", [-1], None), ("HARMFUL_PACK", "2", lambda p: not p.get("FEATURE_CATALOG")),
    ("HELPFUL_PACK", [999999], lambda p: p.get("SAE") == "train-tiny"),
    ("HARMFUL_PACK", [3], lambda p: p.get("HELPFUL_PACK") == []),
]

BAD += [  # circuits (14)
    ("TASK", "nope", None), ("METRIC", "accuracy", None), ("COUNTERFACTUAL", "noise", None),
    ("USE_QK_FIX", "yes", None), ("USE_GRADDROP", 1, None), ("TOP_N", 0, None),
]

BAD += [  # a k sweep of SAE architectures (12)
    ("ARCHITECTURES", [], None), ("ARCHITECTURES", "topk", None), ("ARCHITECTURES", ["topk", "topk"], None),
    ("ARCHITECTURES", ["topk", "batch_topk"], None),
    ("K_VALUES", [], None), ("K_VALUES", lambda p: [8, p["D_SAE"] + 1], None), ("K_VALUES", [16, 16], None),
    ("K_VALUES", [0.5], None),
]

BAD += [  # crosscoders (17)
    ("SPARSITY", "relu", None), ("L1_COEFFICIENT", -1e-3, None), ("DOMINANT_SHARE", 0.5, None),
    ("DOMINANT_SHARE", 1.2, None), ("PERSISTENT_SHARE", 0, None), ("PERSISTENT_SHARE", 0.6, None),
]

BAD += [  # InterpScore (18)
    ("PROBE_TASKS", [], None), ("PROBE_TASKS", "imdb", None), ("PROBE_TASKS", ["synthetic:topic"], None),
    ("PROBE_TASKS", ["no-such-dataset"], None), ("PROBE_TASKS", ["imdb", "stanfordnlp/imdb"], None),
    ("EVAL_TOKENS", 0, None), ("TOKENS_TRAINED", -1, None),
]

BAD += [  # sparse feature circuits (15)
    ("SAE_IDS", "blocks.2.hook_resid_post", None), ("SAE_IDS", [""], None),
    ("SAE_IDS", lambda p: list(p["SAE_IDS"]) + [""], None), ("NODE_METHOD", "eap", None), ("IG_STEPS", 0, None),
    ("TAU_NODE", -0.1, None), ("TAU_EDGE", float("nan"), None),
]

BAD += [  # edge-level circuits (16)
    ("TAU", -0.01, None), ("TAU", "small", None), ("ACDC_METRIC", "loss", None),
    ("EDGE_BUDGETS", [0, 5], None), ("EDGE_BUDGETS", "10", None), ("EDGE_BUDGETS", [], None),
    ("AUTOCIRCUIT_PYTHON", "/no/such/venv/bin/python", None),
]



CASES = [pytest.param(e, name, bad, id=f"{e.id}-{name}={bad if not callable(bad) else 'f'}")
         for e in ENTRIES for name, bad, when in BAD
         if name in parameters_of(e) and (when is None or when(parameters_of(e)))]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_every_parameter_has_a_rule_in_the_notebooks_families_and_a_bad_case(entry):
    """The parameters cell names only parameters that the families its check_parameters call names know."""
    names = set(parameters_of(entry))
    families = families_of(entry)
    known = {name for family in families for name in family.RULES}
    assert not names - known, (f"{entry.id}: {sorted(names - known)} have no rule in its families "
                               f"{[parameters.family_name(f) for f in families]}: name the family, or add rules "
                               "to the family of their concept in shared/notebook/rules/")
    assert parameters.family_name(families[0]) == "common", f"{entry.id}: name common first (MODEL_ID before LAYER)"
    assert not names - {name for name, _, _ in BAD}, f"{entry.id}: add bad values to BAD in this test"


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_smoke_parameters_pass(entry):
    """The smoke values CI injects pass, in the rendered notebook's globals (its own names and set-up beside them)."""
    params = parameters_of(entry)
    checked = parameters.check_parameters(notebook_globals(entry), *families_of(entry))
    assert set(checked) == set(params)
    assert checked == parameters.check_parameters(params)  # every family: the same values
    assert parameters.check_parameters(notebook_globals(entry, rerun=True), *families_of(entry)) == checked


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_a_rendered_notebook_declares_its_parameters_and_binds_no_other_setting(entry):
    """NOTEBOOK_PARAMETERS is what the parameters cell assigns, read as the command line reads a notebook's cell;
    every other upper-case name the notebook binds is one the check knows is no parameter (SETUP_NAMES), or P."""
    from shared.recipes import cli

    path = REPO / "notebooks" / f"{entry.id}.ipynb"
    assert declared_of(entry) == tuple(cli.cell_values(cli.parameters_cell(path)))
    nb = json.loads(path.read_text(encoding="utf-8"))
    bound = set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or "parameters" in cell["metadata"].get("tags", []):
            continue
        code = "\n".join(line for line in "".join(cell["source"]).split("\n") if not line.lstrip().startswith(("%", "!")))
        for statement in ast.parse(code).body:
            if isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
                bound.add(statement.name)
            elif isinstance(statement, (ast.Import, ast.ImportFrom)):
                bound |= {(alias.asname or alias.name).split(".")[0] for alias in statement.names}
            else:  # what the statement binds (a loop's variable too), not a comprehension's own variables
                inner = {id(n) for c in ast.walk(statement) if isinstance(c, ast.comprehension) for n in ast.walk(c.target)}
                bound |= {n.id for n in ast.walk(statement) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
                          and id(n) not in inner}
    upper = {name for name in bound if parameters._NAME.fullmatch(name)}
    assert upper - parameters.SETUP_NAMES <= {"P"}, (
        f"{entry.id} binds {sorted(upper - parameters.SETUP_NAMES - {'P'})}: a re-run's check would refuse them as "
        "settings that are no parameter; name them in lower case, or add them to parameters.SETUP_NAMES")


def _typo(name: str) -> str:
    return name[:-2] + name[-1] + name[-2]  # the last two letters swapped: OUTPUT_DIR -> OUTPUT_DRI


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_a_mistyped_parameter_is_a_one_line_error_naming_the_one_meant(entry):
    """papermill -p LAYRE 12 (it only warns): the check stops in one line naming the typo and the parameter meant,
    where the old check skipped it and the notebook ran with the default."""
    meant = "LAYER" if "LAYER" in declared_of(entry) else "OUTPUT_DIR"
    typo = "LAYRE" if meant == "LAYER" else _typo(meant)
    with pytest.raises(parameters.ParameterError) as e:
        parameters.check_parameters(notebook_globals(entry, **{typo: 12}), *families_of(entry))
    assert str(e.value) == f"{typo} = 12: not a parameter of this notebook; did you mean {meant}?"


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_a_parameter_of_another_notebook_is_a_one_line_error(entry):
    """A real parameter of another notebook (its name and smoke value) is no parameter of this one."""
    ours = declared_of(entry)
    other = next(e for e in ENTRIES if set(declared_of(e)) - set(ours))
    name = next(n for n in declared_of(other) if n not in ours)
    value = parameters_of(other)[name]
    with pytest.raises(parameters.ParameterError) as e:
        parameters.check_parameters(notebook_globals(entry, **{name: value}), *families_of(entry))
    message = str(e.value)
    assert message.startswith(f"{name} = {parameters.short(value)}: not a parameter of this notebook; ")
    assert "\n" not in message and ("did you mean" in message or f"its parameters are {', '.join(ours)}" in message)


def test_a_rerun_ignores_a_users_own_name_but_not_a_typo(capsys):
    """Run all again in the same kernel: the globals now hold what later cells bound, the user's own constants
    among them. A name far from every parameter is said to be ignored, in one line; a near-certain typo of one is
    still refused; on a first run (papermill, a fresh kernel) both are refused."""
    entry = next(e for e in ENTRIES if e.id.startswith("01_"))
    families = families_of(entry)
    parameters.check_parameters(notebook_globals(entry, rerun=True, MY_THRESHOLD=0.5), *families)
    out = capsys.readouterr().out
    assert out.startswith("MY_THRESHOLD is not a parameter of this notebook: ignored (a name a later cell bound on "
                          "the run before?)") and out.count("\n") == 1
    with pytest.raises(parameters.ParameterError, match="LAYRE = 12: not a parameter of this notebook; did you mean "
                                                        "LAYER"):
        parameters.check_parameters(notebook_globals(entry, rerun=True, LAYRE=12), *families)
    with pytest.raises(parameters.ParameterError, match="MY_THRESHOLD = 0.5: not a parameter"):
        parameters.check_parameters(notebook_globals(entry, MY_THRESHOLD=0.5), *families)


def test_an_undeclared_secret_looking_setting_is_refused_without_its_value():
    entry = next(e for e in ENTRIES if e.id.startswith("19_"))
    with pytest.raises(parameters.ParameterError) as e:
        parameters.check_parameters(notebook_globals(entry, HF_TOKEN="hf_not_for_print"), *families_of(entry))
    assert str(e.value).startswith("HF_TOKEN = ***: not a parameter of this notebook") and "hf_not" not in str(e.value)


@pytest.mark.parametrize("entry, name, bad", CASES)
def test_bad_value_is_a_one_line_error_naming_the_parameter(entry, name, bad):
    params = parameters_of(entry)
    value = bad(params) if callable(bad) else bad
    with pytest.raises(parameters.ParameterError) as e:
        parameters.check_parameters({**params, name: value}, *families_of(entry))
    message = str(e.value)
    assert message.startswith(f"{name} = {value!r}"[:40]) and "\n" not in message, message
    assert len(message) < 400 and isinstance(e.value, ValueError)


def test_sweep_architectures_are_the_registered_ones_with_a_k():
    from shared.training import sweep

    assert list(training.SWEEP_ARCHITECTURES) == sweep.k_architectures()


def test_gpu_and_goal_rules_name_the_planners_classes_and_goals():
    """GPU and GOAL (notebook 07) are checked against names written out in rules/planning.py, so 07's first
    cell does not vendor the planner: they are the planner's own, and GPU reads a name as gpus.gpu_class does."""
    from shared.planning import gpus, recommend

    assert planning.GPU_CLASSES == tuple(gpus.GPU_CLASSES) and planning.GOALS == recommend.GOALS
    for given in ("t4", " h100-80 ", "2XT4", None):
        assert planning.RULES["GPU"](given, None) == gpus.gpu_class(given).name
    with pytest.raises(ValueError, match="unknown GPU class 'GTX-9000'; use one of T4, 2xT4"):
        planning.RULES["GPU"]("GTX-9000", None)


def test_crosscoder_sparsity_is_a_crosscoder_architecture():
    """SPARSITY (17) is checked against names written out in rules/crosscoders.py: saes.crosscoder's own."""
    from shared.notebook.rules import crosscoders
    from shared.saes import crosscoder

    for name in crosscoder.ARCHITECTURES:
        assert crosscoders.RULES["SPARSITY"](name, None) == name
    with pytest.raises(ValueError, match="must be one of 'topk', 'l1'"):
        crosscoders.RULES["SPARSITY"]("relu", None)


@pytest.mark.parametrize("entry_id, name, value, says", [
    ("06_steer_your_model", "FEATURE", "weather words", "set FEATURE_CATALOG to a feature_catalog.json"),
    ("12_batchtopk_vs_topk", "ARCHITECTURES", ["topk", "batch_topk"], "'batch_topk' is not an architecture with a k"),
    ("17_train_crosscoder", "LAYERS", [1], "a crosscoder reads and writes at least 2 layers"),
])
def test_bad_value_says_what_to_set(entry_id, name, value, says):
    entry = next(e for e in ENTRIES if e.id == entry_id)
    with pytest.raises(parameters.ParameterError, match=f"^{name} = ") as e:
        parameters.check_parameters({**parameters_of(entry), name: value}, *families_of(entry))
    assert says in str(e.value)


def test_each_parameter_name_has_one_family():
    """A name means one thing everywhere: no two families hold a rule of the same name."""
    seen = {}
    for family in parameters.every_family():
        assert family.__doc__ and family.RULES, f"{family.__name__}: a docstring and a RULES table"
        for name in family.RULES:
            assert name not in seen, f"{name} is in both {seen[name]} and {parameters.family_name(family)}"
            seen[name] = parameters.family_name(family)
    assert parameters.family_name(parameters.every_family()[0]) == "common"


def test_a_parameter_of_a_family_the_notebook_does_not_name_is_a_one_line_error(tmp_path):
    """A parameters cell with TAU but a check_parameters call that names only common: one line naming TAU and
    the family whose rules know it; upper-case globals no family knows (REQUIREMENTS) are no parameters."""
    from shared.notebook.rules import circuits, common

    params = {"MODEL_ID": "tiny:gpt2", "OUTPUT_DIR": str(tmp_path), "SEED": 0, "REQUIREMENTS": ["torch"]}
    assert set(parameters.check_parameters(params, common)) == {"MODEL_ID", "OUTPUT_DIR", "SEED"}
    with pytest.raises(parameters.ParameterError) as e:
        parameters.check_parameters({**params, "TAU": 0.1}, common)
    assert str(e.value) == ("TAU = 0.1: no rule family this notebook names (common) checks TAU; the circuits family "
                            "does: add it to check_parameters")
    assert parameters.check_parameters({**params, "TAU": 0.1}, common, circuits).TAU == 0.1
    declared = ["MODEL_ID", "OUTPUT_DIR", "SEED", "TAU"]  # declared, yet no named family checks it: still this error
    with pytest.raises(parameters.ParameterError, match="^TAU = 0.1: no rule family this notebook names"):
        parameters.check_parameters({**params, "TAU": 0.1}, common, declared=declared)


def _rule_family_imports(name: str) -> set[str]:
    """The other rule families a family's module imports (`from .saes import within_sae`)."""
    tree = ast.parse((REPO / "shared" / "notebook" / "rules" / f"{name}.py").read_text(encoding="utf-8"))
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
            and node.module}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_a_notebook_vendors_only_the_rule_families_it_names(entry):
    """Vendoring follows imports: a notebook carries the families its check names and those they build on
    (features and evals check latent ids with saes', evals reads PROBE_TASKS with data's dataset rule), never
    another; the engine imports none. So only the circuit notebooks carry the circuits family."""
    named = {parameters.family_name(f) for f in families_of(entry)}
    expected = named | {dep for name in named for dep in _rule_family_imports(name)}
    source = (REPO / "notebooks_src" / entry.source).read_text(encoding="utf-8")
    vendored = {Path(rel).stem for rel in bn.core_closure(REPO, source)
                if rel.startswith("notebook/rules/") and not rel.endswith("__init__.py")}
    assert vendored == expected
    assert ("circuits" in vendored) == entry.id.startswith(("14_", "15_", "16_"))
    if entry.id.startswith("19_"):
        assert vendored == {"common", "readouts"}


def test_layer_normalisation_and_devices():
    params = {"MODEL_ID": "tiny:llama", "LAYER": -1, "LAYERS": "0-2", "SWEEP_LAYERS": "", "SAE_DEVICE": "auto",
              "MODEL_DEVICE": "spread", "DEVICE": "", "MODEL_DTYPE": "bfloat16", "IGNORED": 1, "lowercase": 2}
    P = parameters.check_parameters(params)
    assert P.LAYER == [3] and P.LAYERS == [0, 1, 2] and P.SWEEP_LAYERS == []
    assert P.MODEL_DEVICE == "spread" and P.SAE_DEVICE == ("cpu" if not torch.cuda.is_available() else P.SAE_DEVICE)
    assert P.DEVICE is None and P.MODEL_DTYPE == torch.bfloat16 and "IGNORED" not in P


def test_resolve_layers_forms_and_errors():
    r = layout.resolve_layers
    assert r(-1, 4) == [3] and r([0, -1], 4) == [0, 3] and r((2, 1), 4) == [2, 1]
    assert r("all", 4) == [0, 1, 2, 3] and r("middle", 26) == [13] and r("2", 4) == [2] and r("-1", 4) == [3]
    assert r("0,3, 1", 4) == [0, 3, 1] and r("0-2", 4) == [0, 1, 2] and r("-2--1", 4) == [2, 3]
    assert r([1, -3], 4, dedupe=True) == [1] and r("", 4, allow_empty=True) == []
    for bad, fragment in [(4, "out of range"), (-5, "out of range"), ([1, -3], "twice"), ("", "No layers"),
                          ("one", "comma-separated"), (1.0, "not a layer spec"), (True, "not a layer spec"),
                          ("3-1", "backwards")]:
        with pytest.raises(ValueError, match=fragment) as e:
            r(bad, 4)
        assert "\n" not in str(e.value)


def test_resolve_layers_reads_a_model():
    from shared.model import loading

    model, _ = loading.load_model("tiny:gpt2", device="cpu")
    config = loading.load_config("tiny:gpt2")  # what the first cell has before the weights load
    assert layout.n_layers(model) == layout.n_layers(config) == 4
    assert layout.resolve_layers(-1, model) == layout.resolve_layers(-1, config) == [3]


# --------------------------------------------------------------------------------------------- papermill

def _rendered(notebook_id: str):
    entry = next(e for e in ENTRIES if e.id == notebook_id)
    return REPO / "notebooks" / f"{notebook_id}.ipynb", entry


@pytest.mark.notebook
def test_notebook_01_trains_on_layer_minus_one(tmp_path, monkeypatch):
    from test_notebooks import assert_completed, output_dir, run_notebook

    path, entry = _rendered("01_hobbyist_gemma2_2b_colab")
    params = {**entry.smoke, "LAYER": -1, "TOTAL_TOKENS": 8000, "VAL_TOKENS": 1000}
    run_dir, nb = run_notebook(path, params, tmp_path, monkeypatch)
    assert_completed(nb)
    report = json.loads((output_dir(nb, params, run_dir) / "run_report.json").read_text())
    assert report["layers"] == [3]  # the tiny Gemma-2 has 4 blocks: -1 is block 3 everywhere
    assert list(report["export"]) == ["3"] and list(report["export_reloads_identically"].values()) == [True]


@pytest.mark.notebook
def test_notebook_stops_in_the_check_cell_with_one_line(tmp_path, monkeypatch):
    import papermill as pm

    from test_notebooks import run_notebook

    path, entry = _rendered("01_hobbyist_gemma2_2b_colab")
    with pytest.raises(pm.PapermillExecutionError) as e:
        run_notebook(path, {**entry.smoke, "BATCH_TOKENS": 0}, tmp_path, monkeypatch)
    assert e.value.ename == "ParameterError" and e.value.evalue == "BATCH_TOKENS = 0: must be >= 1"
    nb = json.loads((tmp_path / "executed.ipynb").read_text())
    (failed,) = [c for c in nb["cells"] if c["cell_type"] == "code"
                 and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert "check_parameters(globals(), common" in "".join(failed["source"])
    (error,) = [o for o in failed["outputs"] if o.get("output_type") == "error"]
    # rule, header, the cell's frame, check_parameters' frame, the message: no library internals
    assert len(error["traceback"]) <= 5 and sum(t.count("\n") + 1 for t in error["traceback"]) < 40, error["traceback"]
    assert not list(Path(tmp_path / "run").rglob("*.json"))  # stopped before anything ran


@pytest.mark.notebook
@pytest.mark.parametrize("entry_id, name, value", [
    ("06_steer_your_model", "FEATURE", "weather words"),
    ("12_batchtopk_vs_topk", "ARCHITECTURES", ["topk", "batch_topk"]),
    ("17_train_crosscoder", "LAYERS", [1]),
])
def test_mistyped_parameter_stops_in_the_first_cell_before_anything_is_written(entry_id, name, value, tmp_path,
                                                                              monkeypatch):
    """Mistakes that used to surface later as a library ValueError (12, 17: after OUTPUT_DIR was made) or
    as "feature catalog '.' is not a file" (06) stop the check cell with one line in the parameter's name."""
    import papermill as pm

    from test_notebooks import run_notebook

    path, entry = _rendered(entry_id)
    params = {**entry.smoke, name: value}
    with pytest.raises(pm.PapermillExecutionError) as e:
        run_notebook(path, params, tmp_path, monkeypatch)
    assert e.value.ename == "ParameterError" and e.value.evalue.startswith(f"{name} = {value!r}"), e.value.evalue
    nb = json.loads((tmp_path / "executed.ipynb").read_text())
    (failed,) = [c for c in nb["cells"] if c["cell_type"] == "code"
                 and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert "check_parameters(globals(), common" in "".join(failed["source"])
    assert not (tmp_path / "run" / params["OUTPUT_DIR"]).exists()  # nothing made, nothing written


@pytest.mark.notebook
@pytest.mark.parametrize("name, value, says", [
    ("LAYRE", 12, "LAYRE = 12: not a parameter of this notebook; did you mean LAYER?"),
    ("TAU", 0.1, "TAU = 0.1: not a parameter of this notebook; its parameters are MODEL_ID, LAYER, "),  # 16's
])
def test_papermill_setting_no_parameter_stops_in_the_check_cell(name, value, says, tmp_path, monkeypatch):
    """papermill -p injects a name the notebook does not have (papermill only warns): the check cell stops with
    one line, before anything is written, instead of running with the default."""
    import papermill as pm

    from test_notebooks import run_notebook

    path, entry = _rendered("01_hobbyist_gemma2_2b_colab")
    params = {**entry.smoke, name: value}
    with pytest.raises(pm.PapermillExecutionError) as e:
        run_notebook(path, params, tmp_path, monkeypatch)
    assert e.value.ename == "ParameterError" and e.value.evalue.startswith(says), e.value.evalue
    assert "\n" not in e.value.evalue
    nb = json.loads((tmp_path / "executed.ipynb").read_text())
    (failed,) = [c for c in nb["cells"] if c["cell_type"] == "code"
                 and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert "check_parameters(globals(), common" in "".join(failed["source"])
    assert not (tmp_path / "run" / params["OUTPUT_DIR"]).exists()


def test_edit_residual_accepts_a_negative_layer():
    """hooks.edit_residual resolves layers like capture does: -1 edits the last block."""
    from shared.model import capture, hooks, loading

    model, tok = loading.load_model("tiny:llama", device="cpu")
    ids = tok("The cat sat on the mat", return_tensors="pt").input_ids
    with hooks.edit_residual(model, {-1: lambda h: torch.zeros_like(h)}):
        edited = capture.capture_residuals(model, ids, [3, -1], stop_early=False)
    assert list(edited) == [3] and torch.count_nonzero(edited[3]) == 0
    with pytest.raises(ValueError, match="out of range"):
        with hooks.edit_residual(model, {4: lambda h: h}):
            pass


def test_dataset_mix_and_auto_buffer_reach_the_train_config():
    """A DATASET list is a weighted mix and BLOCK_BATCHES = "auto" sizes the buffer from free memory:
    both pass the check and land in the TrainConfig the tier notebooks and the command line build."""
    from shared.recipes import tier

    mix = ["synthetic@0.7", "synthetic@0.2", "synthetic@0.1"]
    entry = next(e for e in ENTRIES if e.id == "01_hobbyist_gemma2_2b_colab")
    P = parameters.check_parameters({**parameters_of(entry), "DATASET": mix, "BLOCK_BATCHES": "auto"})
    cfg = tier.config_from_params(P, "unused-checkpoints")
    assert cfg.dataset == tuple(mix) and cfg.block_batches == "auto"
    single = tier.config_from_params(parameters.check_parameters(parameters_of(entry)), "unused-checkpoints")
    assert single.dataset == ("synthetic",)


# --------------------------------------------------------------------------------------------- the SAE's site

SAE_NOTEBOOKS = [e for e in ENTRIES if {"SAE", "SAE_ID", "LAYER"} <= set(parameters_of(e))]


@pytest.mark.parametrize("entry", SAE_NOTEBOOKS, ids=lambda e: e.id)
def test_sae_of_another_layer_stops_in_the_first_cell(entry):
    """SAE_ID = "layer_20/..." with LAYER = 2 reads block 2's output through block 20's SAE: stopped in the
    parameter check, naming SAE_ID and LAYER, before any download (the release's path says the layer)."""
    params = {**parameters_of(entry), "SAE": "gemma-scope-2b-pt-res-canonical",
              "SAE_ID": "layer_20/width_16k/canonical", "LAYER": 2}
    with pytest.raises(parameters.ParameterError) as e:
        parameters.check_parameters(params)
    assert str(e.value) == ("SAE_ID = 'layer_20/width_16k/canonical': this SAE reads the residual stream after "
                            "block 20 (blocks.20.hook_resid_post), but LAYER is 2: make LAYER 20, or pick the SAE "
                            "for layer 2")


@pytest.mark.parametrize("name, bad, words", [
    ("FEATURE", 64, "latent id 64 beyond the SAE's 64 latents (ids 0..63)"),
    ("WATCH_FEATURES", [1, 70, 80], "latent ids 70, 80 beyond the SAE's 64 latents"),
    ("HELPFUL_PACK", [100], "latent id 100 beyond"),
])
def test_latent_ids_beyond_a_folder_sae_stop_in_the_first_cell(name, bad, words, tmp_path):
    """A local folder's cfg.json says its width: an id past it stops in the first cell, in the parameter's
    words, not after the model loads and the SAE runs."""
    folder = tmp_path / "blocks.2.hook_resid_post"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps({"d_in": 64, "d_sae": 64, "architecture": "standard",
                                                  "metadata": {"hook_name": "blocks.2.hook_resid_post"}}))
    params = {"MODEL_ID": "tiny:llama", "LAYER": 2, "SAE": str(folder), "SAE_ID": "", "HELPFUL_PACK": [2],
              "HARMFUL_PACK": [1]}
    with pytest.raises(parameters.ParameterError) as e:
        parameters.check_parameters({**params, name: bad})
    assert str(e.value).startswith(f"{name} = {bad!r}: {words}") and "\n" not in str(e.value)
    assert parameters.check_parameters({**params, name: 63 if name == "FEATURE" else [63]})


def test_latent_ids_checked_once_the_sae_loads():
    """Where nothing could be read before (a Hub repo offline), sae_for_notebook checks the loaded SAE:
    its hook against LAYER, the latent ids against its width, in the parameters' words."""
    from shared.notebook.rules import saes

    P = parameters.Parameters({"SAE": "someone/saes", "SAE_ID": "blocks.3", "LAYER": [3], "FEATURE": 500,
                             "HELPFUL_PACK": [1, 2]}, given={"FEATURE": 500})
    with pytest.raises(parameters.ParameterError, match=r"^FEATURE = 500: latent id 500 beyond the SAE's 256 latents"):
        saes.check_loaded_sae(P, "blocks.3.hook_resid_post", 256, 3)
    with pytest.raises(parameters.ParameterError, match=r"^SAE_ID = 'blocks\.3': this SAE reads the MLP output"):
        saes.check_loaded_sae(P, "blocks.3.hook_mlp_out", 1024, 3)
    saes.check_loaded_sae(P, "blocks.3.hook_resid_post", 1024, 3)


def test_sfc_sae_ids_each_checked_against_its_layer():
    """15: one SAE per LAYERS entry, each id's hook against its own layer, in the first cell (offline the
    release's ids are its hooks, as SAELens names them)."""
    entry = next(e for e in ENTRIES if "SAE_IDS" in parameters_of(e))
    params = {**parameters_of(entry), "SAE": "pythia-70m-deduped-res-sm", "LAYERS": [1, 2],
              "SAE_IDS": ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]}
    with pytest.raises(parameters.ParameterError, match=r"^SAE_IDS = .*: entry 'blocks\.3\.hook_resid_post': this SAE "
                                                      r"reads the residual stream after block 3 .*LAYERS\[1\] is 2"):
        parameters.check_parameters(params)
    assert parameters.check_parameters({**params, "SAE_IDS": ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]})
