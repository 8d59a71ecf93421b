"""shared.notebook's set-up and output helpers: start, load_model's summary, save_figure, write_report."""
from __future__ import annotations

import json

import pytest

from shared import runtime
from shared.notebook import parameters
from shared.notebook.run import reportable_parameters, start


def _params(tmp_path, **kw):
    return {"MODEL_ID": "tiny:gpt2", "DEVICE": "", "OUTPUT_DIR": str(tmp_path / "out" / "nb"), "SEED": 3,
            "lowercase": 1, "CORE_DIR": "not a parameter", **kw}


def test_start_checks_makes_the_folder_and_seeds(tmp_path, capsys):
    import torch

    run = start(_params(tmp_path))
    assert run.out_dir.is_dir() and run.seed == 3 and run.params.DEVICE is None
    first = torch.rand(3)
    runtime.seed_everything(3)
    assert torch.equal(first, torch.rand(3))  # start seeded with SEED
    out = capsys.readouterr().out
    assert "seed 3" in out and str(run.out_dir) in out
    with pytest.raises(parameters.ParameterError, match="^SEED = -1: must be >= 0$"):
        start(_params(tmp_path, SEED=-1))
    assert start(parameters.check_parameters(_params(tmp_path))).raw == run.raw  # checked params work too


def test_load_model_prints_one_summary_line(tmp_path, capsys):
    run = start(_params(tmp_path))
    capsys.readouterr()
    model, tok = run.load_model()
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("tiny:gpt2: 4 decoder blocks at") and "on cpu" in line and run.model_id == "tiny:gpt2"


def test_save_figure_and_report_stamp(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = start(_params(tmp_path, HF_TOKEN="hf_secret", OPENAI_API_KEY="sk-x", TOTAL_TOKENS=100))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    assert run.save_figure(fig, "a.png").stat().st_size > 0
    plt.plot([1, 0])
    assert run.save_figure(plt, "b.png").is_file()
    path = run.write_report("r.json", {"model": "kept as given", "value": 1.5, "where": tmp_path})
    report = json.loads(path.read_text())
    assert report["model"] == "kept as given" and report["value"] == 1.5 and report["where"] == str(tmp_path)
    stamp = report["run"]
    assert stamp["model"] == "tiny:gpt2" and stamp["seed"] == 3 and stamp["notebook"] == "nb"
    assert stamp["parameters"] == {"MODEL_ID": "tiny:gpt2", "DEVICE": "", "OUTPUT_DIR": str(tmp_path / "out" / "nb"),
                                   "SEED": 3, "TOTAL_TOKENS": 100}
    assert "hf_secret" not in path.read_text() and "sk-x" not in path.read_text()
    assert len(stamp["core_hash"]) == 16 and stamp["core"] == "checkout" and stamp["written_at"]
    with pytest.raises(ValueError, match="'run' is the stamp's"):
        run.write_report("bad.json", {"run": 1})


def test_secrets_never_reach_a_report_even_under_a_rule_name(tmp_path):
    run = start(_params(tmp_path))
    run.raw["MODEL_ID"] = runtime.Secret("hf_hidden")  # a Secret value is dropped whatever its name
    assert "MODEL_ID" not in reportable_parameters(run.raw)


def test_one_layer_reads_a_single_layer_and_refuses_several():
    from shared.notebook.parameters import ParameterError, Parameters

    assert Parameters({"LAYER": [3]}, given={"LAYER": -1}).one_layer() == 3
    with pytest.raises(ParameterError, match=r"^LAYER = \[1, 2\]: this notebook reads one layer"):
        Parameters({"LAYER": [1, 2]}, given={"LAYER": [1, 2]}).one_layer()
