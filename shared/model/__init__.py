"""The language model under study: loading it (`loading`, the offline `tiny` models), its `layout`
(blocks, widths, the one reading of "which layers"), the forward `hooks` that read or edit its residual
stream, `capture` of that stream, and the interventions built on the hooks (`intervene`, `steer`).
Imports nothing, so a notebook vendors only the modules it uses."""
