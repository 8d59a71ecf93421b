"""What a user already has keeps working: a checkpoint and an SAELens export written by the core before
its second shape (tests/data/legacy, made by make_fixture.py at the commit run.json names) resume and load
with today's core, to the same weights and encodings."""
from __future__ import annotations

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
