"""The notebooks' parameter rules, one module (a rule family) per concept, each a `RULES` table NAME -> rule:
`common` (the model, its layers, devices, batch sizes, outputs, seed), `data` (datasets, contexts, prompts
read from a dataset), `training` (an SAE's training, checkpoints and resume, a k sweep), `saes` (which SAE:
SAE, SAE_ID, SAE_IDS), `features` (features, catalogs, the judge, the watch list), `readouts` (lenses, probes,
RepE), `circuits`, `crosscoders`, `evals` (Stage Gate G1, InterpScore) and `planning` (07's GPU and goal).

A notebook names its families, `check_parameters(globals(), common, data, training)`, and vendors only those
(and what they import). A parameter name belongs to one family; a new rule goes into the family of its concept.
"""
