"""What a user already has keeps working: a checkpoint and an SAELens export written by the core before
its second shape (tests/data/legacy, made by make_fixture.py at the commit run.json names) resume and load
with today's core, to the same weights and encodings; so does a checkpoint of notebook 17's old crosscoder loop
(crosscoder/, made by make_crosscoder_fixture.py), to the weights that loop's uninterrupted run ended with."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fixture was written: the run must replay bitwise
    yield
    torch.set_num_threads(before)


def test_a_checkpoint_written_before_the_move_resumes_to_the_same_weights(tmp_path, one_thread):
    from shared.training.config import TrainConfig
    from shared.training.trainer import train

    made = json.loads((LEGACY / "run.json").read_text())
    shutil.copytree(LEGACY / "checkpoint", tmp_path / "ck")
    result = train(TrainConfig(**made["run"], checkpoint_dir=str(tmp_path / "ck")), progress=False)
    assert result.resumed_from == int(made["checkpoint"].split("-")[1])
    assert result.tokens == made["final_tokens"] and result.resume["replay"]["verified"] is True
    final = load_file(LEGACY / "final_saes.safetensors")
    for layer, sae in result.saes.items():
        for name, tensor in sae.state_dict().items():
            assert torch.equal(tensor, final[f"L{layer}.{name}"]), (layer, name)


def test_an_export_written_before_the_move_loads_and_encodes_the_same():
    from shared.saes.load import load_sae

    sae = load_sae(LEGACY / "export")
    recorded = load_file(LEGACY / "encodings.safetensors")
    z = sae.encode(recorded["x"])
    assert torch.equal(z, recorded["z"])
    assert torch.allclose(sae.decode(z), recorded["x_hat"], atol=1e-6)


def _crosscoder_run(made: dict, checkpoint_dir: Path, **changes):
    """Today's TrainConfig of the run the old crosscoder loop made (crosscoder/run.json), with `changes`."""
    from shared.saes.crosscoder import CrosscoderConfig
    from shared.training.config import TrainConfig

    sae = CrosscoderConfig(**{**made["crosscoder"], **changes.pop("crosscoder", {})})
    return TrainConfig(model_id=made["model_id"], layers=sae.layers, sae=sae, **{**made["run"], **changes},
                       checkpoint_dir=str(checkpoint_dir))


def test_a_checkpoint_of_the_old_crosscoder_loop_resumes_to_its_uninterrupted_weights(tmp_path, one_thread):
    """Notebook 17's checkpoints from before the crosscoder trained through the one trainer (written by
    train_crosscoder at the commit crosscoder/run.json names) resume with today's trainer. They hold no
    hash of the token stream, so, as for an SAE checkpoint that predates the hash, the resume stops in one
    line naming ALLOW_STREAM_CHANGE; allowed, it feeds the same batches in the same order as the old loop
    (same buffer, stream, schedule and step), so it ends with the weights the old loop's uninterrupted run
    ended with, bitwise, and the metrics log continues the old loop's log with the same values."""
    from shared.training.replay import StreamChanged
    from shared.training.trainer import load_metrics, train

    made = json.loads((LEGACY / "crosscoder" / "run.json").read_text())
    shutil.copytree(LEGACY / "crosscoder" / "checkpoint", tmp_path / "ck")
    with pytest.raises(StreamChanged, match="ALLOW_STREAM_CHANGE = True") as refused:
        train(_crosscoder_run(made, tmp_path / "ck"), progress=False)
    assert "\n" not in str(refused.value) and "kept no hash of the token stream" in str(refused.value)

    result = train(_crosscoder_run(made, tmp_path / "ck", allow_stream_change=True), progress=False)
    assert result.resumed_from == int(made["checkpoint"].split("-")[1]) and result.tokens == made["final_tokens"]
    assert result.resume["replay"]["verified"] is None and len(result.resume["stream_changes"]) == 1
    final = load_file(LEGACY / "crosscoder_final.safetensors")
    state = result.saes["xc"].state_dict()
    assert state.keys() == final.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, final[name]), name
    # the log: the old loop's entries (its steps numbered from 1, today's from 0), then this session's
    logged = load_metrics(result.metrics_path)
    assert [(e["step"], e["tokens"]) for e in logged] == [(e["step"] - 1, e["tokens"]) for e in made["history"]]
    assert [e["xc/fvu"] for e in logged] == [e["xc/fvu"] for e in made["history"]]


def test_the_old_crosscoder_checkpoint_loads_its_weights_and_adam_state():
    """What the resume loads from an old crosscoder checkpoint is the checkpoint's: the crosscoder's
    tensors, its Adam moments and the step."""
    from shared.saes.crosscoder import Crosscoder
    from shared.training import checkpoint as ckpt
    from shared.training.step import adam
    from shared.training.trainer import _resume

    made = json.loads((LEGACY / "crosscoder" / "run.json").read_text())
    cfg = _crosscoder_run(made, LEGACY / "crosscoder" / "checkpoint")
    xc = Crosscoder(dataclasses.replace(cfg.sae, d_in=64))
    optimizer = adam(xc.parameters(), lr=cfg.lr)
    tokens, step, _ = _resume(cfg, ckpt.open_store(cfg.checkpoint_dir), {"xc": xc}, {"xc": optimizer})
    saved = ckpt.open_store(cfg.checkpoint_dir).load_latest()[1]
    assert tokens == int(made["checkpoint"].split("-")[1]) and step == saved["step"]
    for name, tensor in xc.state_dict().items():
        assert torch.equal(tensor, saved["crosscoder"][name]), name
    for moments, saved_moments in zip(optimizer.state_dict()["state"].values(), saved["optimizer"]["state"].values()):
        assert all(torch.equal(moments[k], saved_moments[k]) for k in ("exp_avg", "exp_avg_sq"))


@pytest.mark.parametrize("change, named", [({"crosscoder": {"k": 8}}, "crosscoder.k"),
                                           ({"batch_tokens": 128}, "batch_tokens")])
def test_the_old_crosscoder_checkpoint_with_other_settings_is_refused_in_todays_names(tmp_path, change, named):
    """A setting changed since the old loop's checkpoint is refused with the trainer's one line, naming it as
    today's resume key does (the old key's "run.<field>" is <field>), and the checkpoint is left as it was."""
    from shared.training.trainer import train

    made = json.loads((LEGACY / "crosscoder" / "run.json").read_text())
    shutil.copytree(LEGACY / "crosscoder" / "checkpoint", tmp_path / "ck")
    with pytest.raises(ValueError, match="other settings") as refused:
        train(_crosscoder_run(made, tmp_path / "ck", allow_stream_change=True, **change), progress=False)
    message = str(refused.value)
    assert "\n" not in message and message.split("other settings (")[1].split(")")[0] == named
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [made["checkpoint"]]


def test_an_old_crosscoder_checkpoint_of_another_width_names_the_model(tmp_path):
    """The old loop recorded no model (its run's model_id was a placeholder) but its crosscoder's width:
    a model of another width is refused as a changed model_id."""
    from shared.training import checkpoint as ckpt, legacy
    from shared.training.trainer import _resume_mismatch

    made = json.loads((LEGACY / "crosscoder" / "run.json").read_text())
    cfg = _crosscoder_run(made, tmp_path)
    saved = ckpt.open_store(str(LEGACY / "crosscoder" / "checkpoint")).load_latest()[1]
    assert _resume_mismatch(legacy.from_crosscoder_loop(saved, cfg, d_in=64)["config"], cfg) == []
    assert _resume_mismatch(legacy.from_crosscoder_loop(saved, cfg, d_in=128)["config"], cfg) == ["model_id"]


def test_every_old_checkpoint_layout_is_read_in_legacy():
    """SAE checkpoints from before the carry hold only "blocks" (blocks done): legacy.data_position reads them
    as today's data position with an empty carry (the trainer calls it; test_train resumes such a checkpoint),
    a checkpoint of today's layout as it is, and refuses "auto" block_batches, which cannot say the forwards."""
    from shared.training import legacy, trainer
    from shared.training.config import TrainConfig

    cfg = TrainConfig(model_id="tiny:gpt2", layers=(1,), block_batches=4, checkpoint_dir="unused")
    assert legacy.data_position({"blocks": 3}, cfg) == {"forwards": 12, "block": 3, "carry": {}}
    today = {"forwards": 13, "block": 3, "carry": {"1": torch.zeros(2, 4)}}
    assert legacy.data_position({"data": today, "blocks": 9}, cfg) is today
    with pytest.raises(ValueError, match="integer block_batches"):
        legacy.data_position({"blocks": 3}, dataclasses.replace(cfg, block_batches="auto"))
    assert not hasattr(trainer, "_data_state")  # one module holds every old layout
