"""Data-parallel training under torchrun (gloo, two CPU processes) and its command line:
the same SAE as one process to fp32 round-off, exact resume after a kill, a dead rank ends the job."""
from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shared.recipes import tier
from shared.recipes.cli import parameters, read_parameters
from shared.training import config, trainer

REPO = Path(__file__).resolve().parents[1]

# The tier notebook's parameters at toy size, on tiny:gpt2; a fifth of the latents go dead, so AuxK
# (and its dead mask, which the ranks must agree on) is in every step after the first few.
PARAMS = {
    "MODEL_ID": "tiny:gpt2", "LAYER": [1, 3], "DATASET": "synthetic", "VAL_DATASET": "", "CONTEXT_LEN": 32,
    "D_SAE": 512, "K": 4, "TOTAL_TOKENS": 4096, "BATCH_TOKENS": 256, "MODEL_BATCH_SIZE": 8, "BLOCK_BATCHES": 3,
    "LR": 2e-4, "LR_MIN": 6e-5, "WARMUP_STEPS": 5, "DEAD_TOKENS_THRESHOLD": 300,  # AuxK on from step 2
    "CHECKPOINT_EVERY_TOKENS": 1024, "CHECKPOINT_DIR": "ckpt", "RUN_NAME": "toy", "MODEL_DEVICE": "cpu",
    "MODEL_DTYPE": "float32", "SAE_DEVICE": "cpu", "VAL_TOKENS": 512, "HF_REPO": "", "HF_PRIVATE": True,
    "OUTPUT_DIR": "out", "SEED": 0,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(tmp: Path, nproc: int, *sets: str, env: dict | None = None, kill_after_checkpoints: int | None = None,
         timeout: float = 180, die: tuple[int, int, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m shared.train --params params.json` in tmp, under torchrun when nproc > 1; with
    die=(rank, step, "exit" | "hang") that rank fails at that step (tests/dying_rank.py injects it)."""
    (tmp / "params.json").write_text(json.dumps(PARAMS))
    entry = [str(REPO / "tests" / "dying_rank.py"), *map(str, die)] if die else ["-m", "shared.train"]
    cli = [*entry, "--params", "params.json", "--collective-timeout", "20", *sets]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *cli]
    else:
        cmd = [sys.executable, *cli]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                **(env or {})}
    proc = subprocess.Popen(cmd, cwd=tmp, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    if kill_after_checkpoints is not None:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if len(list((tmp / "ckpt").glob("step-*/manifest.json"))) >= kill_after_checkpoints:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, as a lost VM would
                break
            time.sleep(0.02)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the job hung past {timeout} s:\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


def _weights(tmp: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted((tmp / "out" / "export").glob("*/sae_weights.safetensors")):
        out.update({f"{f.parent.name}/{k}": v for k, v in load_file(f).items()})
    assert out, "no export written"
    return out


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def test_cli_takes_exactly_the_tier_notebooks_parameters():
    source = (REPO / "notebooks_src" / "tier_recipe.py").read_text()
    cell = source.split('# %% tags=["parameters"]')[1].split("# %%")[0]
    names = [n.targets[0].id for n in ast.parse(cell).body if isinstance(n, ast.Assign)]
    assert tuple(names) == tier.TIER_PARAMETERS
    with pytest.raises(ValueError, match="BATCH_SIZE: not a parameter of the tier notebooks"):
        parameters({**PARAMS, "BATCH_SIZE": 3}, [])
    with pytest.raises(ValueError, match="missing parameter.*SEED"):
        parameters({k: v for k, v in PARAMS.items() if k != "SEED"}, [])
    with pytest.raises(ValueError, match=r"^K = 600: must be <= D_SAE"):
        parameters(PARAMS, ["K=600"])
    P = parameters(PARAMS, ["TOTAL_TOKENS=8192"])
    cfg = tier.config_from_params(P, checkpoint_dir="c")
    assert (cfg.total_tokens, cfg.layers, cfg.sae.d_sae, cfg.sae.dead_tokens_threshold) == (8192, (1, 3), 512, 300)


def test_parameters_are_read_from_the_rendered_notebook():
    params = read_parameters(REPO / "notebooks" / "01_hobbyist_gemma2_2b_colab.ipynb")
    assert tuple(params) == tier.TIER_PARAMETERS
    assert params["MODEL_ID"] == "google/gemma-2-2b"


def test_world_size_that_does_not_split_the_batch_is_one_line():
    cfg = tier.config_from_params(parameters(PARAMS, ["BATCH_TOKENS=255"]), checkpoint_dir="c")
    with pytest.raises(ValueError, match=r"BATCH_TOKENS = 255 does not split over the 2 processes.*multiple of 2"):
        config.check_world(cfg, 2)


@pytest.mark.slow
def test_two_processes_train_the_one_process_sae_and_resume_after_a_kill(tmp_path):
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    for d in (one, two, killed):
        d.mkdir()
    r1 = _job(one, 1)
    assert r1.returncode == 0, r1.stdout[-3000:]
    r2 = _job(two, 2)
    assert r2.returncode == 0, r2.stdout[-3000:]
    _assert_close(_weights(one), _weights(two))
    m1, m2 = (trainer.load_metrics(d / "ckpt" / "metrics.jsonl") for d in (one, two))
    assert [e["step"] for e in m1] == [e["step"] for e in m2] and m1[-1]["L1/dead_pct"] > 0
    for a, b in zip(m1, m2):  # the logged metrics are the whole batch's, not rank 0's half
        for name in a:
            if name != "tokens_per_s":
                assert a[name] == pytest.approx(b[name], rel=1e-4, abs=1e-6), name
    # a kill of the whole job after its second checkpoint, then the same command again
    rk = _job(killed, 2, kill_after_checkpoints=2)
    assert rk.returncode != 0
    rk = _job(killed, 2)
    assert rk.returncode == 0, rk.stdout[-3000:]
    assert "Resumed from" in rk.stdout
    _assert_close(_weights(two), _weights(killed))
    # metrics: one writer, one line per logged step
    steps = [json.loads(line)["step"] for line in (killed / "ckpt" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


@pytest.mark.slow
def test_a_dead_rank_ends_the_job(tmp_path):
    """A rank that crashes: torchrun stops the others at once and names it."""
    started = time.time()
    r = _job(tmp_path, 2, die=(1, 5, "exit"), timeout=120)
    assert r.returncode != 0
    assert time.time() - started < 60
    assert "rank      : 1 (local_rank: 1)\n  exitcode  : 1" in r.stdout, r.stdout[-3000:]


@pytest.mark.slow
def test_a_stalled_rank_ends_the_job_with_one_clear_line_at_the_timeout(tmp_path):
    """A rank that stops answering (alive, so torchrun sees nothing): the others' next collective
    times out and says so in one line, instead of hanging."""
    started = time.time()
    r = _job(tmp_path, 2, die=(1, 5, "hang"), timeout=150)
    assert r.returncode != 0
    assert time.time() - started < 120
    assert "error: rank 0 of 2: an all-reduce failed or waited past the 20 s collective timeout" in r.stdout, \
        r.stdout[-3000:]


def _checkpoint_tokens(tmp: Path) -> list[int]:
    return sorted(int(p.parent.name.removeprefix("step-")) for p in (tmp / "ckpt").glob("step-*/manifest.json"))


def _rank_errors(tmp: Path, nproc: int, job: subprocess.CompletedProcess) -> list[str]:
    """The error each rank's training raised (tests/dying_rank.py writes them), in rank order."""
    paths = [tmp / f"error-rank{rank}.txt" for rank in range(nproc)]
    for rank, path in enumerate(paths):
        assert path.exists(), f"rank {rank}'s training raised nothing:\n{job.stdout[-3000:]}"
    return [path.read_text() for path in paths]


@pytest.mark.slow
def test_one_rank_overflowing_float16_stops_every_rank_with_the_same_line(tmp_path):
    """Rank 1's share of the forwards overflows float16 from step 5 on: both ranks stop at once with the same
    one-line FloatingPointError (the layer, the forward's index in the stream, the dtype to set, a re-run
    resumes), printed once; neither waits in a collective (the job's 20 s timeout would say so); no checkpoint
    of the block being filled. Before: rank 1's traceback with "source batch 0" while rank 0 failed in its
    all-gather."""
    r = _job(tmp_path, 2, "--set", 'MODEL_DTYPE="float16"', die=(1, 5, "overflow"), timeout=90)
    assert r.returncode != 0
    planted = json.loads((tmp_path / "planted.json").read_text())
    errors = _rank_errors(tmp_path, 2, r)
    assert errors[0] == errors[1], errors
    kind, msg = errors[0].split(": ", 1)
    assert kind == "NonFinite" and issubclass(trainer.NonFinite, FloatingPointError)
    assert "\n" not in msg
    assert (f"activations at layer 1 (source batch {planted['source_batch']}): the model overflowed in float16: "
            'set MODEL_DTYPE = "bfloat16"') in msg
    assert "training resumes from its last checkpoint" in msg
    assert r.stdout.count(f"error: {msg}\n") == 1, r.stdout[-3000:]
    assert "collective timeout" not in r.stdout
    saved = _checkpoint_tokens(tmp_path)
    assert saved and max(saved) <= planted["steps"] * PARAMS["BATCH_TOKENS"]


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_a_diverged_sae_stops_at_the_next_log_step(tmp_path, nproc):
    """A NaN learning rate at step index 3 (on the last rank only, under two) turns the SAEs' weights NaN;
    with no checkpoint due, the loss of the next log step (every 10th, reduced over the ranks) stops every
    rank with one line, and nothing is saved. Before: training went on to the end and wrote NaN weights."""
    r = _job(tmp_path, nproc, "--set", "CHECKPOINT_EVERY_TOKENS=1000000", die=(nproc - 1, 3, "diverge"),
             timeout=90)
    assert r.returncode != 0
    errors = _rank_errors(tmp_path, nproc, r)
    assert len(set(errors)) == 1, errors
    msg = errors[0].split(": ", 1)[1]
    assert msg.startswith("Training diverged at step 10 (2,560 tokens): the SAE L1's loss is nan. ")
    assert "lower lr and train again in a new checkpoint_dir" in msg
    assert r.stdout.count(f"error: {msg}\n") == 1, r.stdout[-3000:]
    assert _checkpoint_tokens(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_nan_weights_are_never_checkpointed(tmp_path, nproc):
    """A NaN learning rate at step index 7 (the last rank's only, under two: the ranks' weights then differ
    until the next gradient sum) makes the weights NaN just before the checkpoint at 2,048 tokens, before any
    log step: every rank refuses that checkpoint together; the one before stays the latest."""
    r = _job(tmp_path, nproc, die=(nproc - 1, 7, "diverge"), timeout=90)
    assert r.returncode != 0
    errors = _rank_errors(tmp_path, nproc, r)
    assert len(set(errors)) == 1, errors
    msg = errors[0].split(": ", 1)[1]
    assert msg.startswith("Training diverged at step 8 (2,048 tokens): the SAE L1's weights hold NaN or inf. ")
    assert r.stdout.count(f"error: {msg}\n") == 1, r.stdout[-3000:]
    assert _checkpoint_tokens(tmp_path) == [1280]


@pytest.mark.slow
def test_bad_world_size_and_other_parameters_never_touch_a_checkpoint(tmp_path):
    r = _job(tmp_path, 2, "--set", "BATCH_TOKENS=255", timeout=120)
    assert r.returncode != 0
    assert "error: BATCH_TOKENS = 255 does not split over the 2 processes" in r.stdout, r.stdout[-3000:]
    assert not (tmp_path / "ckpt").exists()
    r = _job(tmp_path, 1, "--set", "TOTAL_TOKENS=1024")
    assert r.returncode == 0, r.stdout[-3000:]
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ckpt").rglob("*") if p.is_file()}
    r = _job(tmp_path, 2, "--set", "TOTAL_TOKENS=1024", "--set", "LR=0.001", timeout=120)
    assert r.returncode != 0
    assert "holds a checkpoint of a run with other settings (lr)" in r.stdout, r.stdout[-3000:]
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "ckpt").rglob("*") if p.is_file()}
    assert before == after


def _two_ranks(check: str, timeout: float = 120) -> list[dict]:
    """tests/two_ranks.py CHECK under torchrun with two gloo ranks: each rank's RESULT, in rank order."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(REPO / "tests" / "two_ranks.py"), check]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = [json.loads(line.split("RESULT ", 1)[1]) for line in proc.stdout.splitlines() if "RESULT " in line]
    assert len(results) == 2, proc.stdout[-3000:]
    return sorted(results, key=lambda r: r["rank"])


@pytest.mark.slow
def test_ranks_with_different_memory_agree_on_one_block_size():
    """Issue 20: rank 1 has room for 6 forwards a block, rank 0 for 16, and rank 0's first store of more
    than 4 runs out of memory: both take 6, then both halve to 3 when rank 0 fails, and they build the
    same blocks and batches (so the gradient all-reduce sums matching slices, no hang)."""
    rank0, rank1 = _two_ranks("blocks")
    assert rank0["injected_oom"] and not rank1["injected_oom"]
    assert rank0["block_batches"] == rank1["block_batches"] == 3
    assert rank0["batches"] == rank1["batches"] and sum(map(len, rank0["batches"])) == 40 * 64 // 32


@pytest.mark.slow
def test_auto_block_size_is_the_smallest_any_rank_can_hold():
    rank0, rank1 = _two_ranks("auto")
    assert rank0["block_batches"] == rank1["block_batches"] == 3  # rank 1's free memory holds 3, rank 0's 40


@pytest.mark.slow
def test_two_rank_jumprelu_and_relu_penalties_equal_one_rank():
    """Issue 20: each rank's L0 / L1 penalty on its half of the batch is its share of the batch mean, so
    the ranks' terms add up to (and their summed gradients equal) one process's on the whole batch,
    not twice it."""
    for result in _two_ranks("penalty"):
        for term in ("l0", "l1"):
            r = result[term]
            assert r["ranks_summed"] == pytest.approx(r["one_process"], rel=1e-5), (term, r)
            assert r["grad_max_diff"] <= 1e-5 * max(1.0, r["grad_scale"]), (term, r)


@pytest.mark.slow
def test_two_rank_crosscoder_loss_equals_one_rank():
    """The crosscoder under the trainer's reducer: each rank's FVU (over the whole batch's variance), L1
    (its share of the batch mean) and AuxK add up to one process's loss on the whole batch, and so do the
    summed gradients."""
    for result in _two_ranks("crosscoder"):
        assert result["l1"]["terms"] == ["fvu", "l1"] and result["topk"]["terms"] == ["aux", "fvu"]
        for architecture in ("l1", "topk"):
            r = result[architecture]
            assert r["ranks_summed"] == pytest.approx(r["one_process"], rel=1e-5), (architecture, r)
            assert r["grad_max_diff"] <= 1e-5 * max(1.0, r["grad_scale"]), (architecture, r)


def test_the_command_line_writes_a_mix_as_the_notebook_does(tmp_path, monkeypatch):
    """dataset_path (export cfg.json) and val_dataset (val_report.json) are one string for a mix, the
    one train.dataset_name gives the notebooks, never the parameter's list."""
    from shared.recipes.cli import main

    mix = ["synthetic@0.5", "synthetic@0.5"]
    (tmp_path / "params.json").write_text(json.dumps({**PARAMS, "DATASET": mix, "LAYER": 1, "TOTAL_TOKENS": 512,
                                                      "VAL_TOKENS": 256}))
    monkeypatch.chdir(tmp_path)
    main(["--params", "params.json"])
    name = tier.dataset_name(tier.config_from_params(parameters({**PARAMS, "DATASET": mix}, []), checkpoint_dir="c"))
    assert name == "synthetic@0.5, synthetic@0.5"
    cfg = json.loads((tmp_path / "out" / "export" / "blocks.1.hook_resid_post" / "cfg.json").read_text())
    assert cfg["metadata"]["dataset_path"] == name
    assert json.loads((tmp_path / "out" / "val_report.json").read_text())["1"]["val_dataset"] == name
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    assert report["resume"]["model_dtypes"] == [{"from_tokens": 0, "dtype": "float32"}]
