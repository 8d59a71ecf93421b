"""The notebooks' vocabulary, on top of the core: a tier notebook's parameters as a training run
(`tier`), the end of such a run, the notebooks' and the command line's alike (`finish`), the command
line that runs one (`cli`), where checkpoints outlive a session (`sessions`), the notebooks' SAE source
(`sae_source`, `circuit_saes`) and the tiny SAE of the smoke runs (`tiny_sae`).
Nothing below it imports it. Imports nothing, so a notebook vendors only the modules it uses."""
