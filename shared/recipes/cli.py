"""`python -m shared.train [--notebook ID] [--params FILE] [--set NAME=VALUE ...]`: a tier notebook's
training run as a job, on one process or under `torchrun --nproc-per-node N` (data parallel, see
training/distributed.py).

It takes the tier notebooks' parameters by the same names (MODEL_ID, LAYER, ..., tier.TIER_PARAMETERS).
`--notebook ID` (or a NOTEBOOK key in FILE) names the tier notebook whose defaults every parameter not
given takes, read from its rendered parameters cell (notebooks/<ID>.ipynb), so FILE (JSON or YAML) names
only what differs; without one, FILE names them all (a notebook itself, .ipynb, gives its parameters
cell). They are checked by the notebooks' own rules (notebook.parameters.check_parameters) and mapped by
tier.config_from_params, so a job resumes the checkpoints of a notebook with the same values and vice
versa. Rank 0 ends the run as the notebooks do (finish.validate_and_export: validation, the SAELens
export, the upload when asked, run_report.json into OUTPUT_DIR). An error is one line, printed once.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import textwrap
from pathlib import Path

from ..notebook.parameters import Parameters, check_parameters, closest
from ..notebook.run import start
from ..planning import models
from ..training import config, distributed, trainer
from . import finish, tier

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"  # the rendered notebooks beside shared/
NOTEBOOK_KEY = "NOTEBOOK"  # in a params file: the tier notebook whose defaults the file's parameters change
DESCRIPTION = ("A tier notebook's training run as a job, on one process or data parallel under torchrun, ending as "
               "the notebook ends (validation, SAELens export, the upload when asked, run_report.json). Name the "
               "notebook whose defaults to start from and give only what differs.")


def parameters_cell(path: str | Path) -> str:
    """The source of a notebook's (.ipynb) cell tagged "parameters"."""
    cells = [c for c in json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
             if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ValueError(f"{path}: the notebook has no cell tagged 'parameters'")
    source = cells[0]["source"]
    return source if isinstance(source, str) else "".join(source)


def _assignments(cell: str) -> list[ast.Assign]:
    return [node for node in ast.parse(cell).body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)]


def cell_values(cell: str) -> dict:
    """NAME -> value of each `NAME = literal` of a parameters cell."""
    return {node.targets[0].id: ast.literal_eval(node.value) for node in _assignments(cell)}


def cell_meanings(cell: str) -> dict[str, str]:
    """NAME -> what it means, in one line: the comment lines right under its assignment in the parameters
    cell (the notebook's own words for the user, so --help and the notebook say the same)."""
    lines = cell.split("\n")
    nodes = _assignments(cell)
    out = {}
    for node, after in zip(nodes, nodes[1:] + [None]):
        below = lines[node.end_lineno:(after.lineno - 1) if after else len(lines)]
        comments = [line.strip()[1:].strip() for line in below if line.strip().startswith("#")]
        if comments:
            out[node.targets[0].id] = " ".join(comments)
    return out


def read_parameters(path: str | Path) -> dict:
    """NAME -> value from a .json / .yaml file or a notebook's (.ipynb) cell tagged "parameters"."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--params {path}: no such file")
    if path.suffix == ".ipynb":
        return cell_values(parameters_cell(path))
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml  # PyYAML: a dependency of huggingface_hub and transformers

        params = yaml.safe_load(text)
    else:
        params = json.loads(text)
    if not isinstance(params, dict):
        raise ValueError(f"--params {path}: must map parameter names to values, e.g. {{\"MODEL_ID\": \"gpt2\"}}")
    return params


def tier_notebook(ref) -> Path:
    """The rendered tier notebook `ref` names: a path to its .ipynb, its id, or its number ("01", 1)."""
    ref = str(ref).strip()
    if ref.endswith(".ipynb"):
        if not Path(ref).is_file():
            raise ValueError(f"{NOTEBOOK_KEY} {ref}: no such file")
        return Path(ref)
    number = ref.zfill(2) if ref.isdigit() else None
    matches = [i for i in models.RELEASED_NOTEBOOKS if ref == i or i.split("_")[0] == number]
    if len(matches) != 1:
        raise ValueError(f"{NOTEBOOK_KEY} {ref}: not a tier notebook; name one of "
                         f"{', '.join(models.RELEASED_NOTEBOOKS)} (or its number, e.g. 01)")
    path = NOTEBOOKS_DIR / f"{matches[0]}.ipynb"
    if not path.is_file():
        raise ValueError(f"{NOTEBOOK_KEY} {ref}: {path} is not here (the rendered notebooks sit beside shared/ "
                         f"in the repository); give the path of {matches[0]}.ipynb instead")
    return path


def notebook_defaults(ref) -> dict:
    """The parameters cell of the tier notebook `ref` names (tier_notebook): NAME -> its default there."""
    path = tier_notebook(ref)
    defaults = cell_values(parameters_cell(path))
    if set(defaults) - set(tier.TIER_PARAMETERS):
        raise ValueError(f"{NOTEBOOK_KEY} {ref}: {path.name} is not a tier notebook (its parameters are not the "
                         f"tier recipe's); name one of {', '.join(models.RELEASED_NOTEBOOKS)}")
    return defaults


def _value(text: str):
    """A --set value: JSON (numbers, true/false, lists, quoted strings), else the bare string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parameters(params: dict, sets: list[str], defaults: dict | None = None) -> Parameters:
    """The parameters with the --set overrides, over a tier notebook's `defaults` when given, checked
    like the notebooks check them; one line if a name is unknown or missing."""
    params = dict(params)
    for item in sets:
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--set {item}: write NAME=VALUE, e.g. --set TOTAL_TOKENS=1000000")
        params[name.strip()] = _value(value)
    unknown = sorted(set(params) - set(tier.TIER_PARAMETERS))
    if unknown:
        close = {n: closest(n, tier.TIER_PARAMETERS) for n in unknown}
        hint = "; ".join(f"{n}: did you mean {c}?" for n, c in close.items() if c)
        raise ValueError(f"{', '.join(unknown)}: not a parameter of the tier notebooks{f' ({hint})' if hint else ''}; "
                         f"they take {', '.join(tier.TIER_PARAMETERS)}")
    params = {**tier.TIER_DEFAULTS, **(defaults or {}), **params}  # TIER_DEFAULTS: parameters newer than the file
    missing = [name for name in tier.TIER_PARAMETERS if name not in params]
    if missing:
        raise ValueError(f"missing parameter(s) {', '.join(missing)}: name the tier notebook whose defaults they "
                         f"take (--notebook 01, or {NOTEBOOK_KEY}: {models.RELEASED_NOTEBOOKS[0]} in the file), "
                         "or give every parameter (its parameters cell, or the .ipynb as --params)")
    return check_parameters(params)


def job_parameters(args: argparse.Namespace) -> Parameters:
    """The job's checked parameters from the command line: the notebook's defaults (--notebook, or the
    file's NOTEBOOK), the file's values, then --set."""
    given = read_parameters(args.params) if args.params else {}
    ref = given.pop(NOTEBOOK_KEY, None)
    ref = args.notebook or ref
    if ref is None and not args.params:
        raise ValueError("name the tier notebook whose defaults to run (--notebook 01) or a parameters file "
                         "(--params FILE), or both: see python -m shared.train --help")
    return parameters(given, args.set, notebook_defaults(ref) if ref is not None else None)


def parameters_help(ref=None) -> str:
    """Every tier parameter with the default of notebook `ref` (default: the first tier notebook) and
    its meaning (cell_meanings), for --help."""
    ref = ref or models.RELEASED_NOTEBOOKS[0]
    try:
        path = tier_notebook(ref)
        cell = parameters_cell(path)
    except ValueError as e:
        return f"parameters: {', '.join(tier.TIER_PARAMETERS)} ({e})"
    values, meanings = cell_values(cell), cell_meanings(cell)
    lines = textwrap.wrap(f"parameters, with the defaults of {path.stem} (--notebook for another tier notebook's: "
                          f"{', '.join(n.split('_')[0] for n in models.RELEASED_NOTEBOOKS)}); values are JSON, as "
                          "--set takes them:", 100)
    for name in tier.TIER_PARAMETERS:
        lines.append(f"  {name} = {json.dumps(values.get(name, tier.TIER_DEFAULTS.get(name)))}")
        lines += textwrap.wrap(meanings.get(name, ""), 100, initial_indent=" " * 6, subsequent_indent=" " * 6,
                               break_on_hyphens=False)
    return "\n".join(lines)


class _OneRankParser(argparse.ArgumentParser):
    """An ArgumentParser that prints (usage, errors, --help) on torchrun's rank 0 only: every rank parses the
    same command line, so the others would print the same text again. Exit codes are unchanged."""

    def _print_message(self, message, file=None):
        if distributed.launched_rank() == 0:
            super()._print_message(message, file)


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    wants_help = any(a in ("-h", "--help") for a in argv)
    notebook = None
    if wants_help:
        first = argparse.ArgumentParser(add_help=False)
        first.add_argument("--notebook")
        notebook = first.parse_known_args(argv)[0].notebook
    parser = _OneRankParser(prog="python -m shared.train", description=textwrap.fill(DESCRIPTION, 100),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=parameters_help(notebook) if wants_help else None)
    parser.add_argument("--notebook", metavar="ID",
                        help="the tier notebook whose defaults the parameters not given take: its number (01), "
                             f"id or .ipynb; a params file may name it instead ({NOTEBOOK_KEY}: 01)")
    parser.add_argument("--params", metavar="FILE",
                        help="the parameters that differ (.json or .yaml), or every parameter (.ipynb: a "
                             "notebook's parameters cell)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override one parameter")
    parser.add_argument("--collective-timeout", type=float, default=None, metavar="SECONDS",
                        help=f"how long a rank waits for the others before failing (default "
                             f"${distributed.TIMEOUT_ENV} or {distributed.DEFAULT_TIMEOUT_S:g})")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    try:
        try:
            P = job_parameters(args)
            world = distributed.world_size()
            if world > 1:
                config.check_world(tier.config_from_params(P, checkpoint_dir="-"), world)
        except ValueError as e:  # every rank read the same parameters: rank 0 says it for all
            sys.exit(f"error: {e}" if distributed.launched_rank() == 0 else 1)
        run(P, distributed.init(args.collective_timeout))
    except distributed.Unanimous as e:  # every rank raised it alike (NaN/inf in training): rank 0 says it for all,
        if distributed.launched_rank() == 0:  # at once (the launcher ends the job as soon as one rank leaves)
            print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except (ValueError, distributed.RankFailure) as e:  # one line, no traceback
        sys.exit(f"error: {e}")
    finally:
        distributed.shutdown()


def run(P: Parameters, group: distributed.Group | None) -> trainer.TrainResult:
    """Train as the notebook does; rank 0 then validates, exports, uploads and reports
    (finish.validate_and_export)."""
    main_rank = group is None or group.main
    if not main_rank:
        sys.stdout = open(os.devnull, "w")  # one rank speaks
    nb = start(P)
    kw = {}
    cfg = tier.config_from_params(P)
    if group is not None and str(P.MODEL_DEVICE).startswith("cuda"):
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        kw["device"] = device
        cfg.sae_device = device
    max_memory = tier.spread_max_memory(P)  # MODEL_DEVICE "spread": room kept for the SAE, as the notebook does
    if max_memory is not None:
        kw["max_memory"] = max_memory
    model, tokenizer = nb.load_model(**kw)
    result = trainer.train(cfg, model, tokenizer)
    if main_rank:
        finish.validate_and_export(P, nb, cfg, model, tokenizer, result)
    if group is not None:
        group.barrier()
    return result


if __name__ == "__main__":
    main()
