"""The command line as a user meets it (`python -m shared.train`): a params file names only what differs
from a tier notebook's defaults (--notebook, or a NOTEBOOK key in the file), read from the rendered
notebook; a missing or wrong notebook reference is one line, printed once under torchrun; --help lists
every parameter with its default and meaning; and a job ends with the notebook's own files
(recipes.finish.validate_and_export)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest
import yaml

import build_notebooks as bn
from conftest import REPO
from shared.recipes import cli, tier

ENTRY = next(e for e in bn.load_catalog(REPO) if e.id == "01_hobbyist_gemma2_2b_colab")
NOTEBOOK_01 = REPO / "notebooks" / f"{ENTRY.id}.ipynb"


def _error(argv: list[str]) -> str:
    """The line main() exits with."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return str(e.value.code)


def test_help_lists_every_parameter_with_its_default_and_meaning(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    defaults = cli.read_parameters(NOTEBOOK_01)
    for name in tier.TIER_PARAMETERS:
        line = f"  {name} = {json.dumps(defaults[name])}"
        assert line in lines, name
        meaning = lines[lines.index(line) + 1]
        assert meaning.startswith(" " * 6) and len(meaning.split()) >= 3, (name, meaning)
    with pytest.raises(SystemExit):  # another notebook's defaults
        cli.main(["--notebook", "02", "--help"])
    assert '  MODEL_ID = "Qwen/Qwen3.5-4B"' in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_usage_error_is_printed_by_rank_0_alone(rank, monkeypatch, capsys):
    """Under torchrun every rank parses the same command line: a mistyped option is one usage error from
    rank 0, the others leave with the same exit code and print nothing."""
    monkeypatch.setenv("RANK", rank)
    with pytest.raises(SystemExit) as e:
        cli.main(["--notbook", "01"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    if rank == "0":
        assert "usage: python -m shared.train" in err and "unrecognized arguments: --notbook" in err
    else:
        assert err == ""


def test_meanings_are_the_notebook_parameter_cell_comments():
    """--help's meanings are read from the notebook's parameters cell, one per parameter (no second copy)."""
    cell = cli.parameters_cell(NOTEBOOK_01)
    meanings = cli.cell_meanings(cell)
    assert set(meanings) == set(tier.TIER_PARAMETERS)
    assert meanings["K"] == "latents each token keeps (TopK)"
    assert meanings["HF_PRIVATE"].startswith("a repo the upload creates is private")  # not HF_REPO's comment


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"notebook": None, "params": None, "set": [], **kw})


def test_a_file_names_only_what_differs_from_the_notebook(tmp_path):
    smoke = tmp_path / "smoke.yaml"
    smoke.write_text(yaml.safe_dump(dict(ENTRY.smoke)))
    with_key = tmp_path / "with_key.yaml"
    with_key.write_text(yaml.safe_dump({"NOTEBOOK": "01_hobbyist_gemma2_2b_colab", **ENTRY.smoke}))
    by_flag = cli.job_parameters(_args(notebook="01", params=str(smoke)))
    by_key = cli.job_parameters(_args(params=str(with_key)))
    assert dict(by_flag) == dict(by_key)
    defaults = cli.read_parameters(NOTEBOOK_01)
    assert by_flag.given == {**defaults, **ENTRY.smoke}  # the notebook's defaults, then the file's values
    P = cli.job_parameters(_args(notebook="1", params=str(smoke), set=["K=4"]))  # --set still wins
    assert P.K == 4 and P.LR == defaults["LR"]


def test_a_missing_or_wrong_notebook_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(dict(ENTRY.smoke)))
    line = _error(["--params", "params.yaml"])
    assert line.startswith("error: missing parameter(s) LR, LR_MIN, ") and "\n" not in line
    assert "--notebook 01" in line and f"NOTEBOOK: {ENTRY.id}" in line
    for ref, says in (("04", "NOTEBOOK 04: not a tier notebook; name one of 01_hobbyist_gemma2_2b_colab, "),
                      ("99", "NOTEBOOK 99: not a tier notebook"), ("missing.ipynb", "NOTEBOOK missing.ipynb: no such file")):
        line = _error(["--params", "params.yaml", "--notebook", ref])
        assert line.startswith(f"error: {says}") and "\n" not in line, line
    line = _error(["--set", "K=4"])
    assert line.startswith("error: name the tier notebook whose defaults to run (--notebook 01)")
    line = _error(["--notebook", "01", "--set", "BATCH_SIZE=3"])
    assert line.startswith("error: BATCH_SIZE: not a parameter of the tier notebooks (BATCH_SIZE: did you mean")


@pytest.mark.slow
def test_notebook_01_smoke_values_run_as_a_job_and_write_the_notebook_outputs(tmp_path, monkeypatch):
    """The file holds notebook 01's smoke values and its NOTEBOOK; the job writes what the notebook's smoke
    run must write (catalog smoke_outputs: val_report.json, the export, run_report.json with every key),
    figures aside."""
    monkeypatch.chdir(tmp_path)
    small = {"TOTAL_TOKENS": 4096, "CHECKPOINT_EVERY_TOKENS": 2048, "VAL_TOKENS": 1024}  # smaller still: a quick test
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"NOTEBOOK": "01", **ENTRY.smoke, **small}))
    cli.main(["--params", "params.yaml"])
    out = tmp_path / ENTRY.smoke["OUTPUT_DIR"]
    missing = [m for m in bn.missing_smoke_outputs(ENTRY, out) if not m.split(":")[0].endswith(".png")]
    assert missing == []
    report = json.loads((out / "run_report.json").read_text())
    assert report["export_reloads_identically"] == {str(ENTRY.smoke["LAYER"]): True} and report["hub"] == {}


@pytest.mark.slow
def test_a_parameter_error_under_torchrun_is_printed_once(tmp_path):
    """Two ranks read the same file and fail alike before joining: rank 0 says it, in one line."""
    import socket

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(dict(ENTRY.smoke)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "shared.train", "--params", "params.yaml"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert text.count("error: missing parameter(s) LR, LR_MIN, ") == 1, text[-3000:]
