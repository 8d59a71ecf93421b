"""`python -m shared.train --params FILE [--set NAME=VALUE ...]`: a tier notebook's training run as a
job, on one process or under `torchrun --nproc-per-node N` (data parallel, see distributed.py).

FILE holds the tier notebooks' parameters by the same names (MODEL_ID, LAYER, ..., see
train.TIER_PARAMETERS): JSON, YAML, or the notebook itself (.ipynb: its "parameters" cell). They are
checked by the notebooks' own rules (notebook.check_parameters) and mapped by the notebooks' own
train.config_from_params, so a job resumes the checkpoints of a notebook with the same values and
vice versa. Rank 0 validates and exports the SAEs into OUTPUT_DIR (and uploads them when HF_REPO is set).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path

from . import distributed, notebook, train


def read_parameters(path: str | Path) -> dict:
    """NAME -> value from a .json / .yaml file or a notebook's (.ipynb) cell tagged "parameters"."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--params {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        cells = [c for c in json.loads(text)["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        if not cells:
            raise ValueError(f"--params {path}: the notebook has no cell tagged 'parameters'")
        source = "".join(cells[0]["source"])
        return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(source).body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    if path.suffix in (".yaml", ".yml"):
        import yaml  # PyYAML: a dependency of huggingface_hub and transformers

        params = yaml.safe_load(text)
    else:
        params = json.loads(text)
    if not isinstance(params, dict):
        raise ValueError(f"--params {path}: must map parameter names to values, e.g. {{\"MODEL_ID\": \"gpt2\"}}")
    return params


def _value(text: str):
    """A --set value: JSON (numbers, true/false, lists, quoted strings), else the bare string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parameters(params: dict, sets: list[str]) -> notebook.Parameters:
    """The parameters with the --set overrides, checked like the notebooks check them; one line if
    a name is unknown or missing."""
    params = dict(params)
    for item in sets:
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--set {item}: write NAME=VALUE, e.g. --set TOTAL_TOKENS=1000000")
        params[name.strip()] = _value(value)
    params = {**train.TIER_DEFAULTS, **params}  # parameters newer than the file
    unknown = sorted(set(params) - set(train.TIER_PARAMETERS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a parameter of the tier notebooks; they take "
                         f"{', '.join(train.TIER_PARAMETERS)}")
    missing = [name for name in train.TIER_PARAMETERS if name not in params]
    if missing:
        raise ValueError(f"missing parameter(s) {', '.join(missing)}: copy the notebook's parameters cell "
                         "(or pass the .ipynb as --params)")
    return notebook.check_parameters(params)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True, help="the tier notebook's parameters: .json, .yaml or .ipynb")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override one parameter")
    parser.add_argument("--collective-timeout", type=float, default=None, metavar="SECONDS",
                        help=f"how long a rank waits for the others before failing (default "
                             f"${distributed.TIMEOUT_ENV} or {distributed.DEFAULT_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    try:
        P = parameters(read_parameters(args.params), args.set)
        group = distributed.init(args.collective_timeout)
        if group is not None:
            train.check_world(train.config_from_params(P, checkpoint_dir="-"), group.world)
        run(P, group)
    except (ValueError, distributed.RankFailure) as e:  # one line, no traceback
        sys.exit(f"error: {e}")
    finally:
        distributed.shutdown()


def run(P: notebook.Parameters, group: distributed.Group | None) -> train.TrainResult:
    """Train as the notebook does; rank 0 then validates, exports and uploads."""
    main_rank = group is None or group.main
    if not main_rank:
        sys.stdout = open(os.devnull, "w")  # one rank speaks
    nb = notebook.start(P)
    kw = {}
    cfg = train.config_from_params(P)
    if group is not None and str(P.MODEL_DEVICE).startswith("cuda"):
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        kw["device"] = device
        cfg.sae_device = device
    max_memory = train.spread_max_memory(P)  # MODEL_DEVICE "spread": room kept for the SAE, as the notebook does
    if max_memory is not None:
        kw["max_memory"] = max_memory
    model, tokenizer = nb.load_model(**kw)
    result = train.train(cfg, model, tokenizer)
    if main_rank:
        _validate_and_export(P, nb, cfg, model, tokenizer, result)
    if group is not None:
        group.barrier()
    return result


def _validate_and_export(P, nb, cfg, model, tokenizer, result) -> None:
    from . import data, evaluate, export, models, sessions

    val_batches = train.validation_batches(cfg, tokenizer, P.VAL_TOKENS, dataset=P.VAL_DATASET or None)
    sparsity: dict = {}
    report = evaluate.evaluate_saes(model, tokenizer, result.saes, val_batches, sparsity=sparsity)
    print(evaluate.summarize(report))
    data_name = train.dataset_name(cfg)  # one string for a mix too, as the notebooks write it
    evaluate.write_val_report(report, nb.out_dir / "val_report.json", model=P.MODEL_ID,
                              tokens_trained=result.tokens, val_dataset=P.VAL_DATASET or data_name)
    repo_id = sessions.export_repo(P.HF_REPO, P.HF_USERNAME, P.RUN_NAME)
    info = export.ExportInfo(model_name=P.MODEL_ID, layers_path=models.layers_path(model),
                             context_size=P.CONTEXT_LEN, dataset_path=data_name, tokens_trained=result.tokens,
                             repo_id=repo_id, **data.context_tokens(tokenizer).export_fields())
    folders = export.export_run(result.saes, nb.out_dir / "export", info, report=report, sparsity=sparsity)
    uploads = export.upload_export(folders, repo_id, private=P.HF_PRIVATE)
    nb.write_report("run_report.json", {
        "model": P.MODEL_ID, "layers": list(cfg.layers), "tokens_trained": result.tokens, "steps": result.steps,
        "resumed_from": result.resumed_from, "checkpoint_dir": cfg.checkpoint_dir, "resume": result.resume,
        "validation": report,
        "export": {str(layer): str(folder) for layer, folder in folders.items()}, "hub": uploads,
    })


if __name__ == "__main__":
    main()
