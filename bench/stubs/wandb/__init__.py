"""A stand-in for `wandb` on a machine without it (the lent GPU's image): SAELens imports wandb when it
loads but calls it only when logging to W&B, which bench/whole_pipeline.py turns off. Any call fails
loudly, so a number can never come from a run that needed the real package."""


def __getattr__(name):
    raise RuntimeError(f"wandb.{name}: the real wandb is not installed (bench/stubs/wandb is a stand-in)")
