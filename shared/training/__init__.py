"""Training SAEs (and the crosscoder, through the same trainer): the run's config, the trainer and its
step, schedule, activation buffer, stream, checkpoints, data parallelism, replay check and k sweeps.
Imports nothing, so a notebook vendors only the modules it uses."""
