"""Checkpoints that outlive the session: CHECKPOINT_DIR "auto" per platform with HF_USERNAME, Drive
refused on Colab, the Kaggle session check from planning's throughput model, and the Hub store's faults
(another account's repo, a read token, a rejected token), each one line before anything is written;
a run checkpointing into a Hub repo resumes in a new folder to the uninterrupted weights. The Hub is
tests/fake_hub.LocalHub, spoken to by the real huggingface_hub client."""
from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from fake_hub import LocalHub
from shared import hub, runtime
from shared.planning import gpus, models, throughput
from shared.recipes import sessions
from shared.recipes.sessions import CannotResume, checkpoint_dir, resolve_checkpoint_dir

TOKENS = {"hf_alice": ("alice", "write"), "hf_alice_read": ("alice", "read"), "hf_bob": ("bob", "write")}
PARAMS = {"MODEL_ID": "meta-llama/Llama-3.1-8B", "LAYER": [16], "D_SAE": 32768, "TOTAL_TOKENS": 100_000_000,
          "CHECKPOINT_DIR": "auto", "RUN_NAME": "run", "HF_USERNAME": "", "ALLOW_UNRESUMABLE": False}


def _colab(monkeypatch, mount):
    """Colab as runtime sees it, with google.colab.drive.mount = mount."""
    module = ModuleType("google.colab")
    module.drive = SimpleNamespace(mount=mount)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    assert runtime.platform() == "colab"


def test_drive_refused_on_colab_stops_in_one_line_unless_hf_username(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    def refuse(path):
        raise RuntimeError("Error: credential propagation was unsuccessful")

    _colab(monkeypatch, refuse)
    with pytest.raises(CannotResume) as e:
        resolve_checkpoint_dir("auto", "run")
    msg = str(e.value)
    assert msg.startswith("Google Drive could not be mounted (Error: credential propagation was unsuccessful)")
    assert "\n" not in msg and 'HF_USERNAME = "<your Hugging Face user>"' in msg and 'CHECKPOINT_DIR = "checkpoints"' in msg
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert resolve_checkpoint_dir("auto", "run", hf_username="alice") == "hf:alice/run-checkpoints"
    assert resolve_checkpoint_dir("/content/mine", "run") == "/content/mine"  # asked for: no mount at all

    _colab(monkeypatch, lambda path: None)
    assert resolve_checkpoint_dir("auto", "run", hf_username="alice") == "/content/drive/MyDrive/sae_ladder/run"


def test_auto_on_kaggle_and_elsewhere_follows_hf_username(monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for where in ("kaggle", "local"):
        monkeypatch.setattr(runtime, "platform", lambda: where)
        assert resolve_checkpoint_dir("auto", "run", hf_username="alice") == "hf:alice/run-checkpoints"
        assert resolve_checkpoint_dir("auto", "run") == str(Path("checkpoints") / "run")
    out = capsys.readouterr().out
    assert out.count("Kaggle's disk does not outlive the session") == 1 and 'set HF_USERNAME = "' in out


def test_a_kaggle_run_longer_than_a_session_stops_unless_resumable(monkeypatch, capsys):
    """planning's throughput model for Llama-3.1-8B on 2xT4 gives the tokens of 12 h: twice that with
    checkpoints on the session's disk stops in one line; half of it, a Hub store or the override pass."""
    monkeypatch.setattr(runtime, "platform", lambda: "kaggle")
    monkeypatch.setattr(gpus, "detect_gpu_class", lambda *a, **k: "2xT4")
    rate = throughput.tokens_per_second(models.MODELS[PARAMS["MODEL_ID"]], gpus.gpu_class("2xT4"), (16,), 32768)
    session_tokens = int(rate * 3600 * (sessions.KAGGLE_SESSION_HOURS - throughput.SETUP_MINUTES / 60))
    long = {**PARAMS, "TOTAL_TOKENS": 2 * session_tokens}
    hours = sessions.estimated_hours(PARAMS["MODEL_ID"], [16], 32768, 2 * session_tokens)[0]
    with pytest.raises(CannotResume) as e:
        checkpoint_dir(long)
    msg = str(e.value)
    assert "\n" not in msg and f"needs about {hours:.1f} h on 2xT4" in msg and "ALLOW_UNRESUMABLE = True" in msg
    assert 'set HF_USERNAME = "<your Hugging Face user>"' in msg
    assert checkpoint_dir({**long, "TOTAL_TOKENS": session_tokens // 2}) == str(Path("checkpoints") / "run")
    assert checkpoint_dir({**long, "ALLOW_UNRESUMABLE": True}) == str(Path("checkpoints") / "run")
    assert "training anyway (ALLOW_UNRESUMABLE = True)" in capsys.readouterr().out
    sessions.check_session(long, "hf:alice/run-checkpoints")  # a Hub store carries the run over
    monkeypatch.setattr(runtime, "platform", lambda: "colab")
    sessions.check_session(long, "/content/drive/MyDrive/sae_ladder/run")  # Drive outlives the VM
    monkeypatch.setattr(runtime, "platform", lambda: "kaggle")
    sessions.check_session({**long, "MODEL_ID": "tiny:gpt2"}, "checkpoints/run")
    assert "No time estimate for tiny:gpt2" in capsys.readouterr().out


def test_export_repo_rule():
    assert sessions.export_repo("", "", "run") is None
    assert sessions.export_repo("", "alice", "run") == "alice/run"
    assert sessions.export_repo("sae", "alice", "run") == "alice/sae"
    assert sessions.export_repo("bob/sae", "alice", "run") == "bob/sae"


@pytest.fixture
def local_hub(monkeypatch, hub_online, tmp_path):
    """A LocalHub the real client talks to (every HfApi made now points at it), on a Kaggle-like machine."""
    import huggingface_hub.constants

    monkeypatch.setattr(runtime, "platform", lambda: "kaggle")
    monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 5.0)
    monkeypatch.chdir(tmp_path)
    with LocalHub(TOKENS) as server:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)  # as HF_ENDPOINT at import sets
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        yield server


@pytest.mark.parametrize("case", ["someone-elses-repo", "read-token-new-repo", "read-token-own-repo", "rejected"])
def test_hub_faults_stop_in_one_line_before_anything_is_written(case, local_hub, monkeypatch):
    token, user, message = {
        "someone-elses-repo": ("hf_bob", "alice", "alice/run-checkpoints is under alice, not under HF_TOKEN's account bob"),
        "read-token-new-repo": ("hf_alice_read", "alice", "no write access to alice/run-checkpoints (403)"),
        "read-token-own-repo": ("hf_alice_read", "alice", "HF_TOKEN is a read-only token"),
        "rejected": ("hf_nobody", "alice", "HF_TOKEN was rejected (401)"),
    }[case]
    if case in ("someone-elses-repo", "read-token-own-repo"):
        local_hub.add_repo("alice/run-checkpoints", private=case != "someone-elses-repo",
                           files={"checkpoints/step-000000001000/manifest.json": b"{}"})
    before = {r: dict(v["files"]) for r, v in local_hub.repos.items()}
    monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(hub.HubError) as e:
        checkpoint_dir({**PARAMS, "HF_USERNAME": user})
    msg = str(e.value)
    assert msg.startswith("checkpoint store hf:alice/run-checkpoints cannot start: ") and message in msg, msg
    assert "\n" not in msg and token not in msg
    assert {r: dict(v["files"]) for r, v in local_hub.repos.items()} == before  # nothing written, nothing lost
    assert not Path("checkpoints").exists()


def test_hf_username_checkpoints_into_a_private_repo_and_a_new_folder_resumes(local_hub, monkeypatch, tmp_path):
    """checkpoint_dir({HF_USERNAME}) makes the private repo; a run stopped after a checkpoint resumes
    from the Hub alone in another working folder and ends with the uninterrupted run's weights."""
    from test_train import TINY_RUN, _interrupt_after_checkpoints, _same_weights

    from shared.training.config import TrainConfig
    from shared.training.trainer import train

    monkeypatch.setenv("HF_TOKEN", "hf_alice")
    where = checkpoint_dir({**PARAMS, "HF_USERNAME": "alice"})
    assert where == "hf:alice/run-checkpoints" and local_hub.repos["alice/run-checkpoints"]["private"] is True
    base = {**TINY_RUN, "total_tokens": 4000}
    clean = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "clean")), progress=False)
    first = tmp_path / "session1"
    first.mkdir()
    monkeypatch.chdir(first)
    with monkeypatch.context() as m:
        _interrupt_after_checkpoints(m, 1)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**base, checkpoint_dir=where), progress=False)
    assert any(p.endswith("manifest.json") for p in local_hub.files("alice/run-checkpoints"))
    second = tmp_path / "session2"
    second.mkdir()
    monkeypatch.chdir(second)
    resumed = train(TrainConfig(**base, checkpoint_dir=where), progress=False)
    assert resumed.resumed_from and resumed.resume["replay"]["verified"] is True
    _same_weights(clean, resumed)
    assert torch.equal(clean.saes[1].W_dec, resumed.saes[1].W_dec)
