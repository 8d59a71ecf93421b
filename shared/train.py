"""`python -m shared.train --params FILE [--set NAME=VALUE ...]`: a tier notebook's training run as a job,
on one process or under `torchrun` (the command line itself is recipes/cli.py)."""
from .recipes.cli import main

if __name__ == "__main__":
    main()
