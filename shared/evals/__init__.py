"""Judging SAEs: the validation `metrics` (FVU, L0, dead latents, CE loss recovered and KL with the SAE
spliced in, also under SAELens' names), InterpScore (`scores`) and Stage Gate G1 (`gates`). Imports
nothing, so a notebook vendors only the modules it uses."""
