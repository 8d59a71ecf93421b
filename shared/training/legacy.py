"""Checkpoints of an earlier layout read as today's trainer state, so a run a user started before the
layout changed resumes: the crosscoder's own training loop (`train_crosscoder`, which notebook 17 called
before the crosscoder trained through the SAE trainer, issue 22) wrote its model under "crosscoder", its
Adam state under "optimizer", its log under "history" and a resume key of "crosscoder.<field>" and
"run.<field>" entries, and no record of the token stream; and SAE checkpoints written before the data
position kept its carry (the leftover rows of a block), which hold only "blocks" (the blocks done)."""
from __future__ import annotations

from .config import CROSSCODER_KEY, TrainConfig

# What the stream record of such a checkpoint says instead of a hash (replay.StreamLedger words its refusal so).
CROSSCODER_LOOP = "the crosscoder's earlier training loop (train_crosscoder)"


def is_crosscoder_loop_state(state: dict) -> bool:
    """Whether a checkpoint's state was written by the crosscoder's own training loop."""
    return "crosscoder" in state and "saes" not in state


def from_crosscoder_loop(state: dict, cfg: TrainConfig, d_in: int) -> dict:
    """The state of a checkpoint written by the crosscoder's own loop in today's layout: the model and its
    Adam state keyed CROSSCODER_KEY, the log as the metrics entries, the resume key in today's names and
    a stream record that says it holds no hash. d_in: the width of the model this session trains on."""
    return {
        "config": _crosscoder_loop_key(state["config"], cfg, d_in),
        "saes": {CROSSCODER_KEY: state["crosscoder"]},
        "optimizers": {CROSSCODER_KEY: state["optimizer"]},
        "step": state["step"], "data": state["data"], "rng": state["rng"],
        "metrics": [_metrics_entry(entry) for entry in state.get("history", [])],
        "stream": {"unhashed": CROSSCODER_LOOP},
    }


def _crosscoder_loop_key(old: dict, cfg: TrainConfig, d_in: int) -> dict:
    """The old loop's resume key in today's names: "run.<field>" is <field>, "crosscoder.<field>" stays. It
    recorded no model (its run's model_id was a placeholder) and no seed (left out with the SAE's fields):
    they take this session's values, except that a crosscoder of another width than this model's names
    model_id as changed. Its crosscoder.d_in and crosscoder.seed are not in today's key (the model and the
    run's seed fix them)."""
    key = {}
    for name, value in old.items():
        if name.startswith("run."):
            key[name.removeprefix("run.")] = value
        elif name not in ("crosscoder.d_in", "crosscoder.seed"):
            key[name] = value
    width = old.get("crosscoder.d_in")
    key["model_id"] = cfg.model_id if width in (None, d_in) else f"a model {width} wide"
    key["seed"] = cfg.seed
    return key


def _metrics_entry(entry: dict) -> dict:
    """An old log entry as today's: the old loop numbered the step just taken from 1, the trainer from 0."""
    return {**entry, "step": int(entry["step"]) - 1}


def data_position(state: dict, cfg: TrainConfig) -> dict:
    """A checkpoint's data position (forwards, block, carry). Checkpoints written before the carry existed
    hold only "blocks" (blocks done, their leftover rows dropped): they resume with an empty carry."""
    if "data" in state:
        return state["data"]
    if not isinstance(cfg.block_batches, int):
        raise ValueError("this checkpoint predates the saved block size: resume it with the integer "
                         "block_batches it was written with")
    return {"forwards": state["blocks"] * cfg.block_batches, "block": state["blocks"], "carry": {}}
