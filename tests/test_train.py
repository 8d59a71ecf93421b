"""The training loop: LR schedule, resume rules, and a real SIGKILL followed by an exact resume."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shared.saes import architectures
from shared.saes.topk import TopKConfig
from shared.training.config import TrainConfig
from shared.training.schedule import lr_at
from shared.training.step import adam, load_optimizer_state, sae_step
from shared.training.trainer import train

REPO = Path(__file__).resolve().parents[1]

TINY_RUN = dict(model_id="tiny:gpt2", layers=(1, 3), sae=dict(d_sae=128, k=8, dead_tokens_threshold=1500),
                batch_tokens=256, context_len=32, model_batch_size=8, block_batches=4, warmup_steps=5,
                checkpoint_every_tokens=2000)

# TINY_RUN's resume key (total_tokens=2500) as the code before the nested SAE config wrote it.
LEGACY_KEY = {"model_id": "tiny:gpt2", "layers": [1, 3], "dataset": ["synthetic"], "context_len": 32, "d_sae": 128,
              "k": 8, "architecture": "topk", "k_aux": None, "aux_coef": 0.03125, "dead_tokens_threshold": 1500,
              "normalize_activations": "none", "total_tokens": 2500, "batch_tokens": 256, "model_batch_size": 8,
              "block_batches": 4, "lr": 0.0002, "lr_min": 6e-05, "warmup_steps": 5, "adam_betas": [0.9, 0.999],
              "model_dtype": None, "activation_dtype": "float32", "sae_autocast": True,
              "geometric_median_tokens": 8192, "seed": 0}

# A script both runs execute, so the interrupted and the uninterrupted run share one code path.
RUN_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from shared.training.config import TrainConfig
from shared.training.trainer import train
cfg = TrainConfig(**json.loads(sys.argv[1]))
result = train(cfg, progress=False)
torch.save({str(k): v.state_dict() for k, v in result.saes.items()}, sys.argv[2])
print("RESUMED_FROM", result.resumed_from, flush=True)
"""


def _run(cfg: dict, out: Path, *, kill_after_checkpoints: int | None = None) -> str:
    """Run training in a subprocess; optionally SIGKILL it once N checkpoints are complete."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", RUN_SCRIPT, json.dumps(cfg), str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill_after_checkpoints is not None:
        ckpt_dir = Path(cfg["checkpoint_dir"])
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            done = list(ckpt_dir.glob("step-*/manifest.json"))
            if len(done) >= kill_after_checkpoints:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed; make it longer"
        return proc.stdout.read()
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout
    return stdout


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(model_id="tiny:gpt2", layers=(0,), lr=2e-4, lr_min=6e-5, warmup_steps=100)
    total = 1000
    lrs = [lr_at(s, cfg, total) for s in range(total)]
    assert lrs[0] == pytest.approx(2e-6) and lrs[99] == pytest.approx(2e-4)
    assert all(b <= a + 1e-12 for a, b in zip(lrs[100:], lrs[101:]))  # monotone decay after warm-up
    assert lrs[-1] == pytest.approx(6e-5, rel=1e-2) and min(lrs[100:]) >= 6e-5 - 1e-12


def test_bad_config_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="layers is empty"):
        TrainConfig(model_id="tiny:gpt2", layers=())
    with pytest.raises(ValueError, match="lr_min"):
        TrainConfig(model_id="tiny:gpt2", layers=(0,), lr=1e-4, lr_min=2e-4)
    with pytest.raises(ValueError, match="out of range"):
        train(TrainConfig(model_id="tiny:gpt2", layers=(7,), total_tokens=1000, checkpoint_dir="unused"),
              progress=False)



def test_every_train_config_field_says_what_it_is_and_fixed_choices_are_checked():
    """Each TrainConfig field has a docstring right under it (sparsify's config style); the dtype fields
    take their Literal choices only, in one line naming them."""
    import ast
    import dataclasses
    import typing

    from shared.training import config

    tree = ast.parse(Path(config.__file__).read_text())
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig").body
    documented = {a.target.id for a, doc in zip(body, body[1:]) if isinstance(a, ast.AnnAssign)
                  and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and str(doc.value.value).strip()}
    assert documented == {f.name for f in dataclasses.fields(TrainConfig)}
    from shared import runtime

    assert typing.get_args(config.ModelDtype) == runtime.DTYPES  # what load_model takes
    for field, value in (("model_dtype", "fp16"), ("activation_dtype", "float64")):
        with pytest.raises(ValueError, match=f"{field} must be one of .*float16.*got '{value}'") as e:
            TrainConfig(model_id="tiny:gpt2", layers=(0,), **{field: value})
        assert "\n" not in str(e.value)


def test_training_learns_and_logs(tmp_path):
    cfg = TrainConfig(**TINY_RUN, total_tokens=6000, checkpoint_dir=str(tmp_path / "ck"))
    result = train(cfg, progress=False)
    assert result.tokens >= 6000 and set(result.saes) == {1, 3}
    log = [json.loads(line) for line in (tmp_path / "ck" / "metrics.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]
    assert last["L1/fvu"] < first["L1/fvu"] and last["L3/fvu"] < first["L3/fvu"]
    assert all(entry["L1/l0"] <= 8 for entry in log)
    for sae in result.saes.values():
        norms = sae.W_dec.norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    # A finished run, started again, trains nothing more and returns the same weights.
    again = train(cfg, progress=False)
    assert again.tokens == result.tokens and again.resumed_from == result.tokens
    assert torch.equal(again.saes[1].W_enc, result.saes[1].W_enc)


def test_resume_with_other_settings_is_refused(tmp_path):
    cfg = TrainConfig(**TINY_RUN, total_tokens=2500, checkpoint_dir=str(tmp_path / "ck"))
    train(cfg, progress=False)
    changed = TrainConfig(**{**TINY_RUN, "sae": {**TINY_RUN["sae"], "k": 4}}, total_tokens=2500,
                          checkpoint_dir=str(tmp_path / "ck"))
    with pytest.raises(ValueError, match="other settings.*k"):
        train(changed, progress=False)


def _interrupt_after_checkpoints(monkeypatch, n: int) -> list[dict]:
    """Make train() raise right after its n-th checkpoint is written; the states saved are returned."""
    from shared.training import trainer

    saved, open_store = [], trainer._open_store

    def interrupting(cfg):
        store = open_store(cfg)
        save = store.save

        def save_then_stop(tokens, state, step=None):
            save(tokens, state, step=step)
            saved.append(state)
            if len(saved) == n:
                raise KeyboardInterrupt("injected after a checkpoint")

        store.save = save_then_stop
        return store

    monkeypatch.setattr(trainer, "_open_store", interrupting)
    return saved


def test_every_forwarded_token_is_trained_once(tmp_path):
    """Blocks of 4 forwards of 8 x 31 kept rows do not divide into batches of 256: the leftovers are
    carried, so the tokens trained plus the unused rest are exactly the kept tokens forwarded."""
    from shared.model.capture import token_mask
    from shared.model.loading import load_model
    from shared.training import checkpoint as ckpt
    from shared.training.stream import _token_stream

    cfg = TrainConfig(**TINY_RUN, total_tokens=5000, checkpoint_dir=str(tmp_path / "ck"))
    result = train(cfg, progress=False)
    assert result.tokens == result.steps * cfg.batch_tokens == 5120
    forwards = ckpt.open_store(cfg.checkpoint_dir).load_latest()[1]["data"]["forwards"]
    _, tok = load_model(cfg.model_id, device="cpu")
    stream = _token_stream(cfg, tok)
    kept = sum(int(token_mask(next(stream), tok).sum()) for _ in range(forwards))
    assert result.tokens + result.unused_tokens == kept
    assert 0 <= result.unused_tokens < cfg.model_batch_size * cfg.context_len  # the last forward's rest at most
    per_block = cfg.block_batches * cfg.model_batch_size * (cfg.context_len - 1)
    assert per_block % cfg.batch_tokens  # the old scheme dropped rows here


def test_interrupted_run_resumes_bitwise_with_a_carry(tmp_path, monkeypatch):
    """An exception right after a checkpoint whose carry is not empty; run again: same weights as a
    run never interrupted."""
    base = {**TINY_RUN, "total_tokens": 4000}
    clean = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "clean")), progress=False)
    with monkeypatch.context() as m:
        saved = _interrupt_after_checkpoints(m, 1)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "killed")), progress=False)
    carry = saved[0]["data"]["carry"]
    assert set(carry) == {"1", "3"} and 0 < carry["1"].shape[0] < base["batch_tokens"]
    resumed = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "killed")), progress=False)
    assert resumed.resumed_from == saved[0]["step"] * base["batch_tokens"]
    assert resumed.tokens == clean.tokens and resumed.unused_tokens == clean.unused_tokens
    for layer in clean.saes:
        for name, tensor in clean.saes[layer].state_dict().items():
            assert torch.equal(tensor, resumed.saes[layer].state_dict()[name]), f"layer {layer} {name}"


def test_checkpoint_without_a_carry_still_resumes(tmp_path, monkeypatch):
    """Checkpoints written before the carry existed record only the blocks done: they resume with an
    empty carry from the next block's first forward."""
    from shared.training import checkpoint as ckpt

    base = {**TINY_RUN, "total_tokens": 4000}
    with monkeypatch.context() as m:
        saved = _interrupt_after_checkpoints(m, 1)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "new")), progress=False)
    old = {k: v for k, v in saved[0].items() if k != "data"}
    old["blocks"] = saved[0]["data"]["block"]
    assert saved[0]["data"]["forwards"] == old["blocks"] * base["block_batches"]
    ckpt.open_store(str(tmp_path / "old")).save(saved[0]["step"] * base["batch_tokens"], old, step=saved[0]["step"])
    resumed = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "old")), progress=False)
    assert resumed.resumed_from == saved[0]["step"] * base["batch_tokens"] and resumed.tokens == 4096


def test_checkpoint_from_before_the_stream_hash_is_refused_unless_allowed(tmp_path, monkeypatch):
    """A checkpoint with no stream record was written by a core whose token stream differs from this one's
    (no shuffle window, mix weights per document, no held-out routing): skipping its forwards of today's
    stream would train other documents than it did, so the resume stops with one line, and goes on only
    when ALLOW_STREAM_CHANGE says so, recorded in the run's resume report."""
    from shared.training import checkpoint as ckpt
    from shared.training.replay import StreamChanged

    base = {**TINY_RUN, "total_tokens": 4000}
    with monkeypatch.context() as m:
        saved = _interrupt_after_checkpoints(m, 1)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "new")), progress=False)
    old = {k: v for k, v in saved[0].items() if k != "stream"}
    ckpt.open_store(str(tmp_path / "old")).save(saved[0]["step"] * base["batch_tokens"], old, step=saved[0]["step"])
    with pytest.raises(StreamChanged, match="earlier version of the core"):
        train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "old")), progress=False)
    resumed = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "old"), allow_stream_change=True),
                    progress=False)
    assert resumed.resumed_from == saved[0]["step"] * base["batch_tokens"] and resumed.tokens == 4096
    assert resumed.resume["replay"]["verified"] is None and len(resumed.resume["stream_changes"]) == 1


def test_checkpoint_written_before_the_nested_sae_config_still_resumes(tmp_path, monkeypatch):
    """A checkpoint whose resume key is the old flat one (no dtype, b_dec_init, apply_b_dec_to_input:
    they ran at their defaults) resumes; the same key with another k does not."""
    cfg = TrainConfig(**TINY_RUN, total_tokens=2500, checkpoint_dir=str(tmp_path / "ck"))
    key = cfg.resume_key()
    assert json.loads(json.dumps({k: v for k, v in key.items() if k in LEGACY_KEY})) == LEGACY_KEY
    assert set(key) - set(LEGACY_KEY) == {"dtype", "apply_b_dec_to_input", "b_dec_init", "shuffle_tokens", "adam_eps"}
    monkeypatch.setattr(TrainConfig, "resume_key", lambda self: dict(LEGACY_KEY))  # the old code's checkpoint
    first = train(cfg, progress=False)
    monkeypatch.undo()
    again = train(cfg, progress=False)
    assert again.resumed_from == first.tokens
    assert torch.equal(again.saes[1].W_dec, first.saes[1].W_dec)
    with pytest.raises(ValueError, match="other settings.*b_dec_init"):
        train(TrainConfig(**{**TINY_RUN, "sae": {**TINY_RUN["sae"], "b_dec_init": "mean"}}, total_tokens=2500,
                          checkpoint_dir=str(tmp_path / "ck")), progress=False)


def test_sae_settings_of_the_nested_config_reach_the_trained_saes(tmp_path):
    """dtype, b_dec init and apply_b_dec_to_input are set on the run's SAE config; d_in comes from the model."""
    sae_cfg = TopKConfig(d_sae=64, k=4, dtype="float64", b_dec_init="zeros", apply_b_dec_to_input=False)
    cfg = TrainConfig(model_id="tiny:gpt2", layers=(1, 3), sae=sae_cfg, total_tokens=512, batch_tokens=256,
                      context_len=32, block_batches=2, warmup_steps=1, checkpoint_dir=str(tmp_path / "ck"))
    assert isinstance(cfg.sae, TopKConfig) and cfg.sae.d_in is None
    result = train(cfg, progress=False)
    for layer, sae in result.saes.items():
        assert sae.cfg.d_in == 64 and sae.cfg.seed == layer and sae.W_enc.dtype == torch.float64
        assert (sae.cfg.b_dec_init, sae.cfg.apply_b_dec_to_input, sae.cfg.k) == ("zeros", False, 4)
    assert cfg.sae.d_in is None  # the run's config is left as given
    with pytest.raises(ValueError, match="sae.seed"):
        TrainConfig(model_id="tiny:gpt2", layers=(1,), sae=TopKConfig(seed=3))
    with pytest.raises(ValueError, match="sae.d_in=32"):
        train(TrainConfig(model_id="tiny:gpt2", layers=(1,), sae=TopKConfig(d_in=32, d_sae=64, k=4),
                          total_tokens=256, checkpoint_dir=str(tmp_path / "other")), progress=False)
    with pytest.raises(ValueError, match="d_in is None"):
        architectures.build_sae(TopKConfig(d_sae=64, k=4))


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights_bitwise(tmp_path):
    """Kill -9 a real training process mid-run, start it again: same SAEs as an uninterrupted run."""
    base = {**TINY_RUN, "total_tokens": 14_000}
    clean = tmp_path / "clean.pt"
    _run({**base, "checkpoint_dir": str(tmp_path / "ck_clean")}, clean)

    ck = tmp_path / "ck_killed"
    _run({**base, "checkpoint_dir": str(ck)}, tmp_path / "unused.pt", kill_after_checkpoints=2)
    resumed = tmp_path / "resumed.pt"
    out = _run({**base, "checkpoint_dir": str(ck)}, resumed)
    assert "Resumed from" in out and "RESUMED_FROM None" not in out

    a, b = torch.load(clean), torch.load(resumed)
    assert a.keys() == b.keys()
    for layer in a:
        for name, tensor in a[layer].items():
            assert torch.equal(tensor, b[layer][name]), f"layer {layer} {name} differs after resume"
    # The metrics log holds each step once: entries past the checkpoint were dropped on resume.
    steps = [json.loads(line)["step"] for line in (ck / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_optimizer_state_from_an_older_layout_resumes_exactly():
    """Checkpoints from before the latent-major encoder hold its Adam moments as [d_in, d_sae]."""
    torch.manual_seed(0)
    cfg = TopKConfig(d_in=8, d_sae=32, k=4)
    x = [torch.randn(64, 8) for _ in range(4)]
    sae = architectures.build_sae(cfg)
    opt = adam(sae.parameters(), lr=1e-2, device="cpu")
    for xb in x[:2]:
        sae_step(sae, opt, xb)
    weights = {k: v.clone() for k, v in sae.state_dict().items()}
    state = copy.deepcopy(opt.state_dict())  # both share storage with the live run otherwise
    old = {"state": {i: dict(s) for i, s in state["state"].items()}, "param_groups": state["param_groups"]}
    for key in ("exp_avg", "exp_avg_sq"):  # the encoder (parameter 0) as the older layout stored it
        old["state"][0][key] = state["state"][0][key].t().contiguous()
    for xb in x[2:]:
        sae_step(sae, opt, xb)

    again = architectures.build_sae(cfg)
    again.load_state_dict(weights)
    opt2 = adam(again.parameters(), lr=1e-2, device="cpu")
    load_optimizer_state(opt2, old)
    for xb in x[2:]:
        sae_step(again, opt2, xb)
    assert torch.equal(again.W_enc_T, sae.W_enc_T) and torch.equal(again.W_dec, sae.W_dec)

    wrong = {"state": {i: dict(s) for i, s in state["state"].items()}, "param_groups": state["param_groups"]}
    wrong["state"][0]["exp_avg"] = torch.zeros(5, 7)
    with pytest.raises(ValueError, match="belongs to another SAE"):
        load_optimizer_state(adam(architectures.build_sae(cfg).parameters(), lr=1e-2, device="cpu"), wrong)


def test_checkpoint_dir_auto_never_creates_a_hub_repo(monkeypatch, tmp_path, capsys):
    """"auto" without the HF_USERNAME parameter is Drive on Colab, else a local folder; on Kaggle it says
    how to ask for a Hub repo (and asks for HF_TOKEN only when it is missing), but never picks one
    unasked (neither an HF_TOKEN nor an HF_USERNAME secret is a request)."""
    from shared import runtime
    from shared.recipes.sessions import resolve_checkpoint_dir

    assert resolve_checkpoint_dir("/my/dir", "run") == "/my/dir"
    assert resolve_checkpoint_dir("hf:me/ckpts", "run") == "hf:me/ckpts"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_USERNAME", raising=False)
    monkeypatch.setattr(runtime, "platform", lambda: "local")
    assert resolve_checkpoint_dir("auto", "run") == str(Path("checkpoints") / "run")
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(runtime, "platform", lambda: "kaggle")
    assert resolve_checkpoint_dir("auto", "run") == str(Path("checkpoints") / "run")
    out = capsys.readouterr().out
    assert 'CHECKPOINT_DIR = "hf:<user>/<repo>"' in out and "add an HF_TOKEN" in out
    monkeypatch.setenv("HF_USERNAME", "alice")
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    assert resolve_checkpoint_dir("auto", "run") == str(Path("checkpoints") / "run")  # a token is no request
    out = capsys.readouterr().out
    assert 'CHECKPOINT_DIR = "hf:<user>/<repo>"' in out and "HF_TOKEN" not in out and "hf_dummy" not in out


def test_training_checkpoints_into_a_hub_repo_and_resumes_from_it(tmp_path, monkeypatch):
    """checkpoint_dir="hf:<user>/<repo>" (Kaggle's choice): upload each checkpoint, and a new
    session (empty local cache) downloads the latest and carries on from it."""
    import huggingface_hub

    from test_checkpoint import FakeHfApi

    hub = tmp_path / "hub"

    class LocalHub(FakeHfApi):
        def __init__(self, token=None):
            super().__init__(hub)

    monkeypatch.setattr(huggingface_hub, "HfApi", LocalHub)
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(**TINY_RUN, total_tokens=3000, checkpoint_dir="hf:me/run-checkpoints")
    first = train(cfg, progress=False)
    assert list((hub / "me/run-checkpoints").rglob("manifest.json"))
    assert (tmp_path / "metrics" / "me--run-checkpoints.jsonl").exists()
    again = train(cfg, progress=False)  # a fresh store: nothing local, all from the "hub"
    assert again.resumed_from == first.tokens
    for layer in first.saes:
        assert torch.equal(again.saes[layer].W_dec, first.saes[layer].W_dec)


def test_metrics_rewrite_on_resume_is_atomic(tmp_path, monkeypatch):
    """Dropping the entries past the checkpoint replaces metrics.jsonl at once: a crash while the
    new content is written leaves the old file whole; a finished rewrite keeps what it should."""
    from shared.training import checkpoint as ck
    from shared.training.trainer import _MetricsLog

    path = tmp_path / "metrics.jsonl"
    old = "".join(json.dumps({"step": s, "tokens": 100 * (s + 1)}) + "\n" for s in range(6)) + '{"step": 6, "tok'
    path.write_text(old)

    real = Path.write_text

    def crash_half_way(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        _MetricsLog(path, resume_tokens=300)
    monkeypatch.setattr(Path, "write_text", real)
    assert path.read_text() == old and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]

    replaced = []
    monkeypatch.setattr(ck.os, "replace", lambda a, b: replaced.append(Path(a).parent) or os.rename(a, b))
    _MetricsLog(path, resume_tokens=300)
    assert [json.loads(line)["tokens"] for line in path.read_text().splitlines()] == [100, 200, 300]
    assert replaced == [tmp_path]  # written beside it, then renamed over it
    _MetricsLog(path, resume_tokens=300)  # nothing to drop: the file is left as it is
    assert replaced == [tmp_path] and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_damaged_checkpoints_never_cost_the_last_good_one(tmp_path, monkeypatch, capsys):
    """Three checkpoints, the two newest damaged: a resumed run writes one more (below them) and
    crashes; the next run resumes from it (not from 0) and ends bitwise where an unbroken run ends."""
    from shared.training import checkpoint as ck

    folder = tmp_path / "ck"
    cfg = dict(TINY_RUN, total_tokens=6000, checkpoint_dir=str(folder), keep_checkpoints=3)
    clean = train(TrainConfig(**cfg), progress=False)
    good, *damaged = [c.tokens for c in ck.LocalStore(folder).list()]
    assert len(damaged) == 2
    for t in damaged:
        shard = next((folder / ck.checkpoint_name(t)).glob("tensors-*.safetensors"))
        shard.write_bytes(shard.read_bytes()[:-10])

    real_save = ck.LocalStore.save

    def save_then_crash(self, tokens, state, step=None):
        real_save(self, tokens, state, step)
        raise KeyboardInterrupt("killed right after the first checkpoint")

    monkeypatch.setattr(ck.LocalStore, "save", save_then_crash)
    resumed = dict(cfg, keep_checkpoints=2, checkpoint_every_tokens=1000)
    with pytest.warns(RuntimeWarning, match=f"resuming from {ck.checkpoint_name(good)}"), \
            pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**resumed), progress=False)
    monkeypatch.setattr(ck.LocalStore, "save", real_save)
    tokens = [c.tokens for c in ck.LocalStore(folder).list()]
    new = tokens[1]
    assert tokens == [good, new, *damaged] and good < new < damaged[0]  # keep=2 and both good ones stay

    with pytest.warns(RuntimeWarning, match=f"resuming from {ck.checkpoint_name(new)}"):
        again = train(TrainConfig(**resumed), progress=False)
    assert again.resumed_from == new and f"checkpoint {ck.checkpoint_name(new)}" in capsys.readouterr().out
    for layer in clean.saes:
        assert torch.equal(again.saes[layer].W_dec, clean.saes[layer].W_dec)
        assert torch.equal(again.saes[layer].W_enc_T, clean.saes[layer].W_enc_T)
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_bad_layers_and_block_sizes_are_refused_in_one_line(tmp_path):
    for layers, message in (((1, 1, 2), "names layer 1 twice"), ((1, 3, -1), "names layer 3 twice"),
                            ((0, 4), "layer 4 is out of range.*valid layers are 0..3")):
        with pytest.raises(ValueError, match=message) as e:
            train(TrainConfig(**{**TINY_RUN, "layers": layers}, total_tokens=1000,
                              checkpoint_dir=str(tmp_path / "unused")), progress=False)
        assert "\n" not in str(e.value)
    for bad in (0, "big", 2.5):
        with pytest.raises(ValueError, match="block_batches must be a positive number of forwards or 'auto'"):
            TrainConfig(**{**TINY_RUN, "block_batches": bad})
    with pytest.raises(ValueError, match="buffer_memory_fraction"):
        TrainConfig(**TINY_RUN, buffer_memory_fraction=0)


def test_buffer_shrinks_to_a_small_memory_budget_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    """Free memory forced small: block_batches="auto" (and a fixed 4) come down to the 2 forwards per
    block that fit, the store is smaller, training completes, and an interrupted run resumes bitwise."""
    from shared.model.loading import load_model
    from shared.training import buffer

    row_bytes = 2 * 64 * 4  # layers 1 and 3 of tiny:gpt2, float32
    fits_two = (256 + 2 * 8 * 32) * row_bytes  # a batch plus two forwards of 8 x 32
    params = 2 * 64 * 128 + 128 + 64  # one SAE's
    steps = 2 * 2 * params * 4 + params * 4 + 3 * 256 * 128 * 4  # both SAEs' Adam moments, one's gradient and step
    monkeypatch.setattr(buffer, "free_memory_bytes", lambda device: 2 * fits_two + steps)  # buffer_memory_fraction=0.5
    model, tok = load_model("tiny:gpt2", device="cpu")
    auto = {**TINY_RUN, "block_batches": "auto", "total_tokens": 4000}
    blocks = buffer.activation_blocks(model, tok, TrainConfig(**auto), "cpu", reserve=lambda: steps)
    assert blocks.block_batches == 2 and blocks.capacity == 256 + 2 * 256
    with monkeypatch.context() as m:
        m.setattr(buffer, "free_memory_bytes", lambda device: 10**12)
        roomy = buffer.activation_blocks(model, tok, TrainConfig(**auto), "cpu")
        assert roomy.block_batches == buffer.AUTO_BLOCK_BATCHES and roomy.capacity > blocks.capacity

    fixed = train(TrainConfig(**{**auto, "block_batches": 4}, checkpoint_dir=str(tmp_path / "fixed")), progress=False)
    assert "2 forwards per block fit in memory (was 4)" in capsys.readouterr().out
    clean = train(TrainConfig(**auto, checkpoint_dir=str(tmp_path / "clean")), progress=False)
    assert clean.tokens == fixed.tokens == 4096
    with monkeypatch.context() as m:
        saved = _interrupt_after_checkpoints(m, 1)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**auto, checkpoint_dir=str(tmp_path / "killed")), progress=False)
    assert saved[0]["data"]["block_batches"] == 2
    resumed = train(TrainConfig(**auto, checkpoint_dir=str(tmp_path / "killed")), progress=False)
    assert resumed.resumed_from == saved[0]["step"] * 256 and resumed.tokens == clean.tokens
    for layer in clean.saes:
        for name, tensor in clean.saes[layer].state_dict().items():
            assert torch.equal(tensor, resumed.saes[layer].state_dict()[name]), f"layer {layer} {name}"
            assert torch.equal(tensor, fixed.saes[layer].state_dict()[name]), f"layer {layer} {name}"


def test_step_reserve_counts_what_the_first_step_allocates():
    """step_reserve_bytes (what the auto buffer sets aside) counts Adam's moments before torch allocates
    them: the reserve drops by exactly the bytes of exp_avg and exp_avg_sq the first step creates, and what
    stays is the largest SAE's gradients plus its [batch, d_sae] step tensors."""
    from shared.training import buffer

    saes = {k: architectures.build_sae(TopKConfig(d_in=32, d_sae=d, k=4, seed=k)) for k, d in ((0, 64), (1, 256))}
    opts = {k: adam(s.parameters(), lr=1e-3, device="cpu") for k, s in saes.items()}
    before = buffer.step_reserve_bytes(saes, opts, 128)
    x = torch.randn(128, 32, generator=torch.Generator().manual_seed(0))
    for k, sae in saes.items():
        sae_step(sae, opts[k], x, 1e-3)
    allocated = sum(v.numel() * v.element_size() for o in opts.values() for st in o.state.values()
                    for name, v in st.items() if name in ("exp_avg", "exp_avg_sq"))
    after = buffer.step_reserve_bytes(saes, opts, 128)
    assert before - after == allocated > 0
    biggest = sum(p.numel() * 4 for p in saes[1].parameters())
    assert after == biggest + 3 * 128 * 256 * 4


def test_auto_buffer_is_sized_after_counting_adam(tmp_path, monkeypatch):
    """BLOCK_BATCHES = "auto" in a real run: the buffer gets half of the free memory less what the steps
    will take (Adam's moments not yet allocated, a gradient, the step tensors), not half of all of it;
    the same free memory with the steps' needs ignored would give it more than twice as many forwards."""
    from shared.training import buffer, trainer

    row_bytes = 2 * 64 * 4
    free = 20 * 2**20  # the 2 x 2048-latent SAEs' steps need 11 MiB of it
    monkeypatch.setattr(buffer, "free_memory_bytes", lambda device: free)
    sizes = []
    real = buffer.activation_blocks

    def spy(*args, **kw):
        blocks = real(*args, **kw)
        sizes.append((blocks.block_batches, kw["reserve"]()))
        return blocks

    monkeypatch.setattr(trainer, "activation_blocks", spy)
    cfg = TrainConfig(**{**TINY_RUN, "block_batches": "auto", "sae": dict(d_sae=2048, k=8)}, total_tokens=512,
                      checkpoint_dir=str(tmp_path / "ck"))
    train(cfg, progress=False)
    (blocks, reserve), = sizes
    params = 2 * 64 * 2048 + 2048 + 64
    assert reserve == 2 * 2 * params * 4 + params * 4 + 3 * 256 * 2048 * 4
    assert blocks == ((free - reserve) // 2 // row_bytes - 256) // 256
    assert (free // 2 // row_bytes - 256) // 256 > 2 * blocks


def test_mix_proportions_are_measured_in_tokens_and_logged(tmp_path):
    """Three local sources of equal-length docs weighted 0.7/0.2/0.1: the tokens per source (result and
    the metrics' "mix" shares) come out at those proportions."""
    specs = []
    for name, weight in (("alpha", 0.7), ("beta", 0.2), ("gamma", 0.1)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": f"{name[0]} {i:04d} " * 4}) + "\n" for i in range(400)))
        specs.append(f"{path}@{weight}")
    cfg = TrainConfig(**{**TINY_RUN, "layers": (1,)}, dataset=tuple(specs), total_tokens=12_000,
                      checkpoint_dir=str(tmp_path / "ck"))
    result = train(cfg, progress=False)
    names = [str(tmp_path / f"{n}.jsonl") for n in ("alpha", "beta", "gamma")]
    assert set(result.tokens_by_source) == set(names)
    total = sum(result.tokens_by_source.values())
    assert total >= result.tokens
    for name, weight in zip(names, (0.7, 0.2, 0.1)):
        assert abs(result.tokens_by_source[name] / total - weight) < 0.04, result.tokens_by_source
    log = [json.loads(line) for line in (tmp_path / "ck" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["mix"] == pytest.approx({n: c / total for n, c in result.tokens_by_source.items()})


def _same_weights(a, b) -> None:
    for layer in a.saes:
        for name, tensor in a.saes[layer].state_dict().items():
            assert torch.equal(tensor, b.saes[layer].state_dict()[name]), f"layer {layer} {name}"


def test_minutes_cadence_checkpoints_at_block_boundaries_and_resumes_exactly(tmp_path, monkeypatch):
    """A clock that moves 10 s per reading and a 1-minute cadence (tokens never due): a checkpoint
    lands at the block boundary before a minute would go unsaved (every third block here), at token
    counts no token cadence picks; a run stopped after one resumes to the uninterrupted weights."""
    from shared.training import checkpoint as ck, schedule

    ticks = iter(range(0, 10**9, 10))
    monkeypatch.setattr(schedule, "_clock", lambda: float(next(ticks)))
    base = {**TINY_RUN, "checkpoint_every_tokens": 10**9, "checkpoint_every_minutes": 1.0, "total_tokens": 6000}
    clean = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "clean")), progress=False)
    saved = [c.tokens for c in ck.LocalStore(tmp_path / "clean", keep=100).list()]
    assert saved and saved[-1] == clean.tokens  # the last one is the finished run's
    per_block = 4 * 8 * 31  # kept rows of a block: 4 forwards of 8 contexts of 31 tokens past BOS
    with monkeypatch.context() as m:
        states = _interrupt_after_checkpoints(m, 1)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "killed")), progress=False)
    assert states[0]["data"]["forwards"] == 3 * 4  # three blocks of four forwards: the time rule, not tokens
    assert states[0]["step"] * 256 <= 3 * per_block
    resumed = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "killed")), progress=False)
    assert resumed.resumed_from == states[0]["step"] * 256 and resumed.tokens == clean.tokens
    _same_weights(clean, resumed)


def test_checkpoint_clock_follows_rank_zero_under_torchrun(monkeypatch):
    """Every rank must checkpoint at the same step: the time decision is rank 0's, broadcast."""
    from types import SimpleNamespace

    from shared.training import schedule

    now = [0.0]
    monkeypatch.setattr(schedule, "_clock", lambda: now[0])
    cfg = TrainConfig(**{**TINY_RUN, "checkpoint_every_tokens": 10**9}, checkpoint_every_minutes=1.0)
    rank0_says = SimpleNamespace(broadcast_object=lambda due: False)  # rank 0's clock: not yet
    clocks = [schedule.CheckpointClock(cfg, 0, group=rank0_says, speak=False), schedule.CheckpointClock(cfg, 0, speak=False)]
    for clock in clocks:
        clock.block_started()
    now[0] = 120.0  # this rank's clock: two minutes later, due on its own
    assert [clock.due(1024) for clock in clocks] == [False, True]
    with pytest.raises(ValueError, match="checkpoint_every_minutes must be > 0"):
        TrainConfig(**TINY_RUN, checkpoint_every_minutes=0)


def _docs_file(path: Path, order) -> str:
    path.write_text("".join(json.dumps({"text": f"document {i:04d} says {i * 7 % 13} things"}) + "\n" for i in order))
    return str(path)


def test_resume_refuses_a_stream_that_changed_and_goes_on_only_when_allowed(tmp_path, monkeypatch, capsys):
    """A local source whose documents after the 10th are reversed between the sessions: the replay
    hashes differently from the checkpoint's record, so the resume stops in one line naming the
    change; allowed, it goes on and the change is recorded; an unchanged stream resumes verified."""
    docs = tmp_path / "docs.jsonl"
    base = {**TINY_RUN, "layers": (1,), "dataset": (_docs_file(docs, range(400)),), "total_tokens": 4000}
    clean = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "clean")), progress=False)
    for name in ("same", "changed"):
        with monkeypatch.context() as m:
            states = _interrupt_after_checkpoints(m, 1)
            with pytest.raises(KeyboardInterrupt):
                train(TrainConfig(**base, checkpoint_dir=str(tmp_path / name)), progress=False)
    record = states[0]["stream"]
    assert record["forwards"] == states[0]["data"]["forwards"] and len(record["sha256"]) == 64
    assert record["identity"]["tokenizer"] and record["identity"]["revisions"] == {}

    capsys.readouterr()
    same = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "same")), progress=False)
    assert same.resume["replay"]["verified"] is True and same.resume["stream_changes"] == []
    assert "they hash as the checkpoint recorded" in capsys.readouterr().out
    _same_weights(clean, same)

    _docs_file(docs, [*range(10), *reversed(range(10, 400))])
    with pytest.raises(ValueError, match="The data stream changed since the checkpoint") as e:
        train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "changed")), progress=False)
    assert "\n" not in str(e.value) and "ALLOW_STREAM_CHANGE = True" in str(e.value)
    allowed = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "changed"), allow_stream_change=True),
                    progress=False)
    (change,) = allowed.resume["stream_changes"]
    assert change["at_forwards"] == record["forwards"] and allowed.resume["replay"]["verified"] is False
    assert allowed.tokens == clean.tokens
    # the record is carried on: the next checkpoints chain over the new stream and still hold the change
    from shared.training import checkpoint as ck

    latest = ck.open_store(str(tmp_path / "changed")).load_latest()[1]["stream"]
    assert latest["changes"] == allowed.resume["stream_changes"]


@pytest.mark.parametrize("expected", [{"forwards": 2, "sha256": "0" * 64, "identity": {}},  # another stream
                                      {},  # a checkpoint from before the stream hash
                                      {"unhashed": "an older loop"}])  # legacy.py's layouts
def test_stream_messages_name_the_report_every_trainer_writes(expected, capsys):
    """A refused or allowed stream change says where it is recorded in words true of every report the
    trainer's resume goes into: the tier notebooks' run_report.json and notebook 17's crosscoder_report.json
    both keep it under "resume"; no message names one report's file."""
    from shared.training.replay import StreamChanged, StreamLedger

    batches = [torch.tensor([i, i + 1]) for i in range(4)]
    with pytest.raises(StreamChanged) as refused:
        list(StreamLedger({}, expected).track(batches, skip=2))
    list(StreamLedger({}, expected, allow_change=True).track(batches, skip=2))
    for message in (str(refused.value), capsys.readouterr().out):
        assert "the report's 'resume'" in message and ".json" not in message, message


def test_a_model_dtype_switch_is_recorded_not_refused(tmp_path, monkeypatch, capsys):
    """The fix for a float16 overflow is another MODEL_DTYPE and a re-run: the resume goes on from
    the checkpoint and the switch is recorded (checkpoint, TrainResult.resume, hence run_report)."""
    from shared.model.loading import load_model

    base = {**TINY_RUN, "total_tokens": 4000}
    model, tok = load_model("tiny:gpt2", device="cpu")
    with monkeypatch.context() as m:
        states = _interrupt_after_checkpoints(m, 1)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "ck")), model, tok, progress=False)
    assert states[0]["config"]["model_dtype"] == "float32"
    assert states[0]["model_dtypes"] == [{"from_tokens": 0, "dtype": "float32"}]
    resumed = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "ck")), model.double(), tok, progress=False)
    at = states[0]["step"] * base["batch_tokens"]
    assert resumed.resumed_from == at
    assert resumed.resume["model_dtypes"] == [{"from_tokens": 0, "dtype": "float32"},
                                              {"from_tokens": at, "dtype": "float64"}]
    assert f"The model now runs in float64; the first {at:,} tokens were trained on float32" in capsys.readouterr().out


def test_a_float16_overflow_says_which_dtype_to_set(tmp_path):
    """Activations that overflow float16 stop training with one line naming MODEL_DTYPE's fix (bfloat16
    where the device has it, else float32) and saying that a re-run resumes."""
    from shared.model import capture
    from shared.model.layout import decoder_layers
    from shared.model.loading import load_model

    model, tok = load_model("tiny:gpt2", device="cpu", dtype=torch.float16)
    handle = decoder_layers(model)[0].register_forward_hook(
        lambda mod, args, out: (out[0] * 1e30,) + tuple(out[1:]) if isinstance(out, tuple) else out * 1e30)
    try:
        with pytest.raises(FloatingPointError) as e:
            train(TrainConfig(**TINY_RUN, total_tokens=2000, checkpoint_dir=str(tmp_path / "ck")), model, tok,
                  progress=False)
    finally:
        handle.remove()
    msg = str(e.value)
    assert "\n" not in msg and "overflowed in float16" in msg
    assert 'set MODEL_DTYPE = "bfloat16"' in msg  # a CPU runs bfloat16; a T4 is told float32
    assert "training resumes from its last checkpoint" in msg
    t4 = type("T4", (), {"parameters": lambda self: iter([torch.zeros(1, dtype=torch.float16)])})()
    import shared.runtime as runtime

    real = runtime.bf16_supported
    try:
        runtime.bf16_supported = lambda device=None: False
        assert 'set MODEL_DTYPE = "float32"' in capture.dtype_advice(t4)
    finally:
        runtime.bf16_supported = real


def test_adam_eps_sets_the_step_of_a_tiny_gradient():
    """eps is the optimiser's: a gradient of 1e-9 moves a weight lr/11 under eps 1e-8 and lr/1.625 under 6.25e-10
    (Adam's first step is lr * g / (|g| + eps))."""
    for eps, expected in ((1e-8, 1e-9 / (1e-9 + 1e-8)), (6.25e-10, 1e-9 / (1e-9 + 6.25e-10))):
        w = torch.nn.Parameter(torch.zeros(4))
        opt = adam([w], lr=1e-2, eps=eps, device="cpu")
        w.grad = torch.full((4,), 1e-9)
        opt.step()
        torch.testing.assert_close(w.detach(), torch.full((4,), -1e-2 * expected), rtol=1e-4, atol=0)


def test_adam_eps_reaches_the_trainer_optimizer_and_the_resume_key(tmp_path):
    cfg = TrainConfig(**{**TINY_RUN, "layers": (1,)}, total_tokens=1024, adam_eps=6.25e-10,
                      checkpoint_dir=str(tmp_path / "ck"))
    assert cfg.resume_key()["adam_eps"] == 6.25e-10
    train(cfg, progress=False)
    from shared.training import checkpoint as ckpt

    _, state = ckpt.open_store(str(tmp_path / "ck")).load_latest()
    assert [g["eps"] for g in state["optimizers"]["1"]["param_groups"]] == [6.25e-10]
    with pytest.raises(ValueError, match="other settings.*adam_eps"):
        train(TrainConfig(**{**TINY_RUN, "layers": (1,)}, total_tokens=1024, checkpoint_dir=str(tmp_path / "ck")),
              progress=False)
    with pytest.raises(ValueError, match="adam_eps"):
        TrainConfig(**TINY_RUN, adam_eps=0.0)


def _llama_scaled(model, s: float):
    """The same Llama function with its residual stream s times larger: embedding, o_proj and down_proj
    times s, RMSNorm's eps times s^2 (a power of two keeps every product exact)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.model.embed_tokens.weight.mul_(s)
        for block in out.model.layers:
            block.self_attn.o_proj.weight.mul_(s)
            block.mlp.down_proj.weight.mul_(s)
    for module in out.modules():
        if hasattr(module, "variance_epsilon"):
            module.variance_epsilon *= s * s
    return out


def test_input_normalisation_makes_training_blind_to_the_residual_scale(tmp_path):
    """normalize_activations="expected_average_only_in": a model whose residual stream is 4x larger trains
    the same SAE (its latents of 4x the input equal the other's of x), and its export folds the scale into
    raw-input weights.
    Without normalisation the two runs differ (the biases move at another pace relative to the data)."""
    from shared.model.loading import load_model
    from shared.saes import export
    from shared.saes.load import load_sae

    model, tok = load_model("tiny:llama")
    big = _llama_scaled(model, 4.0)
    ids = tok("The chef stirred the soup.", return_tensors="pt")["input_ids"]
    torch.testing.assert_close(big(ids).logits, model(ids).logits)
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    codes = {}
    for norm in ("expected_average_only_in", "none"):
        for name, m in (("small", model), ("big", big)):
            cfg = TrainConfig(model_id="tiny:llama", layers=(1,), context_len=32, total_tokens=1024, batch_tokens=256,
                              block_batches=2, warmup_steps=1, checkpoint_dir=str(tmp_path / norm / name),
                              sae=TopKConfig(d_sae=64, k=4, normalize_activations=norm))
            sae = train(cfg, m, tok, progress=False).saes[1]
            scale = 4.0 if name == "big" else 1.0
            codes[norm, name] = sae.encode(scale * x)
            if norm != "none":
                assert float(sae.norm_scale) != 1.0
                folder = export.export_saelens(sae, tmp_path / "export" / name, export.ExportInfo("tiny:llama"),
                                               layer=1)
                torch.testing.assert_close(load_sae(folder).encode(scale * x), codes[norm, name],
                                           atol=1e-5, rtol=1e-5)
    # normalised, the latents live in the normalised space: the same numbers for x and for 4x through the 4x model
    torch.testing.assert_close(codes["expected_average_only_in", "big"], codes["expected_average_only_in", "small"],
                               atol=1e-4, rtol=1e-4)  # bitwise here (s = 4 keeps every product exact)
    # unnormalised, a scale-blind trainer would give 4x the latents: it does not
    assert not torch.allclose(codes["none", "big"], 4.0 * codes["none", "small"], atol=1e-3)


def test_a_resume_on_a_fresh_machine_writes_the_whole_metrics_log_again(tmp_path, monkeypatch):
    """A Hub store outlives the session, the local metrics log does not: the checkpoint carries the entries
    logged so far, so the next session's log (on a fresh disk) equals an uninterrupted run's."""
    from shared.training import trainer

    def entries(path):
        return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
                for line in Path(path).read_text().splitlines()]

    run = dict(TINY_RUN, total_tokens=4000, checkpoint_every_minutes=None)
    train(TrainConfig(**run, checkpoint_dir=str(tmp_path / "whole")), progress=False)
    real = trainer._save_checkpoint

    def save_then_end_the_session(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt("the session ends")

    monkeypatch.setattr(trainer, "_save_checkpoint", save_then_end_the_session)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**run, checkpoint_dir=str(tmp_path / "ck"), metrics_path=str(tmp_path / "s1.jsonl")),
              progress=False)
    monkeypatch.undo()
    first = entries(tmp_path / "s1.jsonl")
    assert 0 < first[-1]["tokens"] < 4000
    again = train(TrainConfig(**run, checkpoint_dir=str(tmp_path / "ck"), metrics_path=str(tmp_path / "s2.jsonl")),
                  progress=False)
    assert again.resumed_from is not None
    assert entries(tmp_path / "s2.jsonl") == entries(tmp_path / "whole" / "metrics.jsonl")
