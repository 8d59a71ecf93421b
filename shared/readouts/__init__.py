"""Reading a model without an SAE, the baselines an SAE must beat: logit and tuned `lens`, and `probes`
(linear probes, diff-of-means, CCS, RepE reading vectors). Imports nothing, so a notebook vendors only the
modules it uses."""
