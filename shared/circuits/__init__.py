"""Circuit discovery (issue #14): tasks as clean/corrupt prompt pairs, metrics, nodes, exact patching,
attribution patching (AtP, AtP*, integrated gradients), edges, ACDC, SFC and circuit.json.

One concept per module; nothing is imported here so `from shared.circuits import tasks` stays light.
"""
