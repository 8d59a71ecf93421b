"""Planning a run before it starts: the VRAM and time model behind notebook 07 (which tier fits this GPU
and budget) and every GPU notebook's stated needs. One concept a module: `gpus` (classes, MFU),
`models` (shapes, tier recipes), `throughput` (time), `memory` (GiB per GPU), `recommend` (notebook 07),
`workloads` (each notebook's default run and its estimate), `stated_times` (the catalog's times checked).
Pure arithmetic, no torch. Imports nothing, so a notebook vendors only the modules it uses."""
