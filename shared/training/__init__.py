"""Training SAEs: the run's config, the trainer and its step, schedule, activation buffer, stream,
checkpoints, data parallelism, replay check, k sweeps and the crosscoder's loop. Imports nothing, so
a notebook vendors only the modules it uses."""
