"""Sparse autoencoders: the base class (`base`), the architecture `registry` and every built-in
architecture (`architectures`: topk, batchtopk, matryoshka, jumprelu, relu), their sparse `kernels`, the
`crosscoder` model, and SAE files: the SAELens `format`, `load` (any published SAE), `export` (ours, as
SAELens writes them) and the named `releases`. Imports nothing, so a notebook vendors only the modules
it uses."""
