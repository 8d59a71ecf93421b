"""The GPU classes a run is planned for: memory, peaks, the share of the peak (MFU) a run reaches and
where that share comes from, and reading a device name or a catalog `accelerator` as a class.

Pure arithmetic on the table below (no torch: the visible GPUs are read through shared.runtime only when
asked to detect them)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GPUClass:
    """One kind of machine: per-GPU memory, peaks, and the share of the peak a run is assumed to reach."""

    name: str
    vram_gb: float  # per GPU, GiB as torch reports it (torch.cuda.get_device_properties().total_memory)
    n_gpus: int
    peak_tflops: float  # dense fp16/bf16 tensor-core peak per GPU (vendor datasheet)
    fp32_tflops: float  # fp32 (non-tensor-core) peak per GPU (vendor datasheet)
    mem_bw_gbs: float  # memory bandwidth, GB/s (vendor datasheet): what a decoding step is bound by
    bf16: bool  # False -> the model runs in fp16 and the SAE step in fp32 (T4 / Turing has no bf16)
    mfu: float  # model-FLOPs utilisation of the whole trainer (forward and SAE step) at the half peak
    gemm_share: float = 0.5  # sustained share of the fp32 peak in a long GEMM (used where bf16 is False)
    patterns: tuple[str, ...] = ()  # lower-case substrings of torch.cuda.get_device_name()
    note: str = ""
    basis: str = ""  # where mfu comes from: "measured ..." or "estimated ..."


# MFU basis. Measured: the whole trainer on an H200 ran at 0.26 (Gemma-2-2B to L12) and 0.30 (Qwen3.6-27B
# to L55, three SAEs) of the bf16 peak (BENCHMARKS.md, bench/results/h200-2026-11-27), so Hopper gets 0.28.
# Estimated for the rest: cards that hold their clocks under load (A10G, RTX-4090, A100, RTX PRO 6000) are
# assumed to reach Hopper's share of their own peak. The T4 and L4 are power-capped at 70-72 W: a long
# cuBLAS fp16 GEMM sustains ~24 of a T4's 65 TFLOP/s (0.37; NVIDIA developer forum, "About GPU peak
# performance", 2023), and the whole trainer reached 0.54 of its bf16 matmul floor's share on the H200
# (0.28 against 0.52), so the T4 gets 0.37 x 0.54 = 0.20 and its fp32 SAE step 0.37 of the fp32 peak.
# The L4 is assumed to throttle as the T4 does.
HOPPER_MFU = 0.28
T4_GEMM_SHARE = 0.37
T4_MFU = 0.20
_MEASURED = "measured: the whole trainer on an H200, 2026-11-27 (BENCHMARKS.md)"
_T4_BASIS = ("estimated: 0.37 of the fp16 peak sustained by a long cuBLAS GEMM under the 70 W cap (NVIDIA "
             "forum), times 0.54, the share of its matmul floor the whole trainer reached on an H200")
_AS_HOPPER = "estimated: the H200's measured 0.28 of the bf16 peak, assumed for a card that holds its clocks"

GPU_CLASSES: dict[str, GPUClass] = {
    g.name: g
    for g in (
        # T4: nominal 16 GB, nvidia-smi 15360 MiB; torch reports 14.56-14.58 GiB on the current Colab and
        # Kaggle drivers (e.g. QwenLM/Qwen3-VL#1046, Zheng-Chong/CatVTON#133), of which 90 % = 13.1 GiB is usable.
        GPUClass("T4", 14.56, 1, 65.0, 8.1, 320, False, T4_MFU, T4_GEMM_SHARE, ("t4",),
                 "free Colab; fp16 only, 70 W, throttles", _T4_BASIS),
        GPUClass("2xT4", 14.56, 2, 65.0, 8.1, 320, False, T4_MFU, T4_GEMM_SHARE, (),
                 "Kaggle: the model on cuda:0 (or spread over both), the SAE on cuda:1", _T4_BASIS),
        GPUClass("L4", 22.5, 1, 121.0, 30.3, 300, True, T4_MFU, 0.37, ("l4",), "Colab Pro; 72 W, power-limited",
                 "estimated: assumed to throttle as the T4 does (same 70 W class)"),
        GPUClass("A10G", 22.5, 1, 70.0, 31.2, 600, True, HOPPER_MFU, 0.5, ("a10g", "a10"), "AWS g5 / HF Spaces",
                 _AS_HOPPER),
        GPUClass("RTX-4090", 24.0, 1, 165.0, 82.6, 1008, True, HOPPER_MFU, 0.5, ("4090",),
                 "consumer; fp32-accumulate peak", _AS_HOPPER),
        GPUClass("A100-40", 39.4, 1, 312.0, 19.5, 1555, True, HOPPER_MFU, 0.5,
                 ("a100-sxm4-40", "a100-pcie-40", "a100 40"), "", _AS_HOPPER),
        GPUClass("A100-80", 79.2, 1, 312.0, 19.5, 2039, True, HOPPER_MFU, 0.5, ("a100",),
                 "Colab Pro A100 is the 40 GB one", _AS_HOPPER),
        GPUClass("H100-80", 79.6, 1, 989.0, 67.0, 3350, True, HOPPER_MFU, 0.5, ("h100",),
                 "the H200's chip with less memory", _MEASURED + ", same chip"),
        GPUClass("RTX-PRO-6000", 95.0, 1, 500.0, 125.0, 1792, True, HOPPER_MFU, 0.5,
                 ("rtx pro 6000", "rtx 6000 blackwell"), "96 GB", _AS_HOPPER),
        GPUClass("H200", 139.8, 1, 989.0, 67.0, 4800, True, HOPPER_MFU, 0.5, ("h200",), "measured", _MEASURED),
        GPUClass("cpu", 12.0, 1, 0.2, 0.2, 20, True, 0.30, 0.3, (), "RAM instead of VRAM; fp32 weights; not for training",
                 "estimated"),
    )
}


def gpu_class(name: str | None) -> GPUClass:
    """The GPUClass for a class name (case-insensitive, "auto" not allowed); clear error otherwise."""
    if name is None:
        return GPU_CLASSES["cpu"]
    for key, g in GPU_CLASSES.items():
        if key.lower() == str(name).strip().lower():
            return g
    raise ValueError(f"unknown GPU class {name!r}; use one of {', '.join(GPU_CLASSES)} (or 'auto' to detect)")


def classify_gpu_name(name: str | None, count: int = 1, total_gb: float | None = None) -> str:
    """Map a device name such as "Tesla T4" or "NVIDIA H100 80GB HBM3" to a class name; None -> "cpu".

    An unknown name falls back to the largest single-GPU class whose VRAM fits in total_gb (a
    conservative guess); without total_gb it is an error that lists the classes to pick from.
    """
    if not name:
        return "cpu"
    low = name.lower()
    if "t4" in low.split() or low.endswith("t4"):
        return "2xT4" if count >= 2 else "T4"
    if "a100" in low:
        if total_gb is not None:
            return "A100-80" if total_gb > 60 else "A100-40"
        return "A100-40" if "40" in low else "A100-80"
    for key, g in GPU_CLASSES.items():
        if key in ("T4", "2xT4", "A100-40", "A100-80", "cpu"):
            continue
        if any(p in low for p in g.patterns):
            return key
    if total_gb is not None:
        fitting = [g for g in GPU_CLASSES.values() if g.n_gpus == 1 and g.name != "cpu" and g.vram_gb <= total_gb + 0.5]
        if fitting:
            return max(fitting, key=lambda g: (g.vram_gb, -g.peak_tflops)).name
    raise ValueError(f"unrecognised GPU {name!r}: set GPU to one of {', '.join(GPU_CLASSES)}")


def _detected_gpus() -> list:
    """The visible GPUs (shared.runtime.gpu_info: .name, .total_gb); imported here so this module needs no torch."""
    from ..runtime import gpu_info

    return list(gpu_info())


def detect_gpu_class(name: str | None | object = ..., count: int = 1, total_gb: float | None = None) -> str:
    """The GPU class of this machine (no argument) or of a given device name; no GPU -> "cpu"."""
    if name is ...:
        gpus = _detected_gpus()
        if not gpus:
            return "cpu"
        return classify_gpu_name(gpus[0].name, count=len(gpus), total_gb=getattr(gpus[0], "total_gb", None))
    return classify_gpu_name(name, count=count, total_gb=total_gb)


def accelerator_classes(accelerator: str) -> tuple[str, ...]:
    """The GPU classes a catalog `accelerator` names: "T4" -> ("T4",), "2xT4" -> ("2xT4",),
    "96 GB GPU (RTX PRO 6000, H200)" -> ("RTX-PRO-6000", "H200"); () for "none"/"cpu"."""
    text = str(accelerator).strip().lower()
    if text in ("", "none", "cpu"):
        return ()
    for key in GPU_CLASSES:
        if key.lower() == text:
            return (key,)
    found = [key for key, g in GPU_CLASSES.items() if key != "cpu" and g.n_gpus == 1
             and (any(p in text for p in g.patterns) or key.lower() in text)]
    if re.search(r"(2\s*x\s*t4|t4\s*x\s*2)", text):
        return ("2xT4",)
    if not found:
        raise ValueError(f"accelerator {accelerator!r} names no GPU class of shared/planning/gpus.py "
                         f"({', '.join(GPU_CLASSES)})")
    return tuple(dict.fromkeys(found))


def weight_bytes(g: GPUClass) -> int:
    """Bytes per model weight on class g."""
    return 4 if g.name == "cpu" else 2  # bf16 / fp16 on a GPU (a T4: fp16), fp32 on the CPU
