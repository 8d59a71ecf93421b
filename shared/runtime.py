"""Where am I running: Colab, Kaggle or a local machine; which GPUs; secrets; Drive; seeds.

Secrets come from the environment, Colab's userdata or Kaggle's UserSecretsClient and are
returned as `Secret` strings whose repr is masked, so echoing one in a notebook cell, a list,
a dict or a traceback never shows it. Nothing in this module prints or logs a secret value.
"""
from __future__ import annotations

import os
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch


def platform() -> str:
    """'colab', 'kaggle' or 'local', from the markers each platform sets."""
    if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ or "KAGGLE_URL_BASE" in os.environ:
        return "kaggle"
    return "local"


@dataclass(frozen=True)
class GPUInfo:
    """One CUDA device: memory in GiB (free is measured now) and native bf16 (compute capability >= 8)."""

    index: int
    name: str
    total_gb: float
    free_gb: float
    bf16: bool


def gpu_info() -> list[GPUInfo]:
    """Every visible CUDA GPU with its name, total and currently free memory; [] without CUDA."""
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        major, _ = torch.cuda.get_device_capability(i)
        out.append(GPUInfo(i, torch.cuda.get_device_name(i), total / 2**30, free / 2**30, major >= 8))
    return out


def bf16_supported(device: torch.device | str | None = None) -> bool:
    """True when the device runs bfloat16 natively (Ampere or newer GPU, or the CPU)."""
    device = torch.device(device) if device is not None else default_device()
    if device.type != "cuda":
        return True
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def default_device() -> torch.device:
    """$SAE_LADDER_DEVICE if set, else cuda:0 when a GPU is visible, else cpu."""
    env = os.environ.get("SAE_LADDER_DEVICE")
    if env:
        return torch.device(env)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[str]:
    """The devices torch can use here, e.g. ['cpu', 'cuda:0 (Tesla T4)', 'cuda:1 (Tesla T4)']."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


SPREAD = "spread"  # the one name for "split the model over every GPU" (transformers device_map="auto")


def resolve_device(spec=None, *, auto: str = "first") -> torch.device | str:
    """The device a notebook/`load_model` string means, checked to exist on this machine.

    None or "" -> default_device(). "auto" always picks ONE device, per `auto`: "first" =
    default_device() (cuda:0 or cpu), "last" = the last GPU or cpu (Kaggle 2xT4: the SAE beside a
    model on cuda:0). "spread" returns the string SPREAD: the model split over every GPU, which
    model.loading.load_model alone turns into transformers' device_map="auto". "cuda" is cuda:0. A device
    that does not exist here (cuda:1 on one GPU, cuda on a CPU-only machine) raises a one-line
    ValueError listing the devices that do.
    """
    if auto not in ("first", "last"):
        raise ValueError(f"auto={auto!r}; use 'first' or 'last'")
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return default_device()
    if isinstance(spec, str):
        spec = spec.strip().lower()
        if spec == SPREAD:
            return SPREAD
        if spec == "auto":
            if auto == "last" and torch.cuda.is_available():
                return torch.device("cuda", torch.cuda.device_count() - 1)
            return default_device()
    here = ", ".join(available_devices())
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {spec!r} is not a device name: use 'auto', 'spread', 'cpu' or 'cuda:N' "
                         f"(this machine has {here})") from None
    if dev.type == "cuda":
        dev = torch.device("cuda", dev.index or 0)
        ok = torch.cuda.is_available() and dev.index < torch.cuda.device_count()
    elif dev.type == "mps":
        ok = "mps" in available_devices()
    else:
        ok = dev.type == "cpu"
    if not ok:
        raise ValueError(f"device {str(dev)!r} does not exist: this machine has {here}; "
                         f"pick one of those or 'auto'")
    return dev


DTYPES = ("auto", "bfloat16", "float16", "float32")


def resolve_dtype(spec=None, device=None) -> torch.dtype:
    """The model dtype `spec` means on `device`: a torch dtype or one of DTYPES by name.

    None or "auto": bfloat16 on a GPU that runs it natively, float16 on older GPUs (the T4),
    float32 on CPU. `device` is what resolve_device returned (SPREAD counts as the GPUs, judged
    by cuda:0); None means default_device().
    """
    if isinstance(spec, torch.dtype):
        return spec
    if spec is not None and spec not in DTYPES:
        raise ValueError(f"dtype {spec!r}: use one of {', '.join(DTYPES)}")
    if spec not in (None, "auto"):
        return getattr(torch, spec)
    if device == SPREAD:
        device = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device) if device is not None else default_device()
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if bf16_supported(device) else torch.float16


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU) so a run repeats."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional here
        pass
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@contextmanager
def single_thread(when: bool = True):
    """Within the block, torch on one CPU thread (when `when`): tiny models and ops gain nothing from
    threads and lose a lot to their overhead on a busy CPU. The caller's setting comes back afterwards."""
    threads = torch.get_num_threads()
    if when:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cache_dir() -> Path:
    """Where derived artefacts (trained tiny models, ...) are cached: $SAE_LADDER_CACHE or ~/.cache/sae_ladder."""
    path = Path(os.environ.get("SAE_LADDER_CACHE") or Path.home() / ".cache" / "sae_ladder")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Secret(str):
    """A str that works wherever a token string does but whose repr is masked.

    `repr()` (and so notebook echo, containers, tracebacks) shows `Secret('***')`. The value is
    still the string itself, so `from_pretrained(token=secret)` works; `.reveal()` returns a plain
    str copy for code that wants one.
    """

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        return str.__str__(self)


def _colab_secret(name: str) -> tuple[str | None, str | None]:
    """(value, reason-missing) from Colab's userdata."""
    try:
        from google.colab import userdata  # type: ignore
    except ImportError:
        return None, None
    try:
        value = userdata.get(name)
    except Exception as e:  # SecretNotFoundError, NotebookAccessError, ...
        return None, f"Colab userdata: {type(e).__name__}"
    return (value or None), None


def _kaggle_secret(name: str) -> tuple[str | None, str | None]:
    """(value, reason-missing) from Kaggle's UserSecretsClient."""
    try:
        from kaggle_secrets import UserSecretsClient  # type: ignore
    except ImportError:
        return None, None
    try:
        value = UserSecretsClient().get_secret(name)
    except Exception as e:  # BackendError when missing or not attached
        return None, f"Kaggle secrets: {type(e).__name__}"
    return (value or None), None


def how_to_set(name: str) -> str:
    """One line: how to set secret `name` on this platform (Colab, Kaggle, locally)."""
    where = platform()
    if where == "colab":
        return (f"On Colab: click the key icon in the left sidebar, add a secret named {name}, "
                f"and switch on 'Notebook access' for it.")
    if where == "kaggle":
        return (f"On Kaggle: Add-ons -> Secrets, add a secret labelled {name} and tick it so it "
                f"is attached to this notebook.")
    return f"Locally: `export {name}=...` in the shell that starts Python or Jupyter."


def get_secret(name: str, required: bool = False) -> Secret | None:
    """Secret `name` from the environment, then Colab userdata, then Kaggle secrets.

    Returns a `Secret` (a str with a masked repr) or None. With required=True a missing secret
    raises RuntimeError saying how to set it on this platform; the message never holds a value.
    """
    value = os.environ.get(name) or None
    reasons = []
    for source in (_colab_secret, _kaggle_secret):
        if value:
            break
        value, reason = source(name)
        if reason:
            reasons.append(reason)
    if value:
        return Secret(value)
    if required:
        tried = "; ".join(["environment: not set"] + reasons)
        raise RuntimeError(f"Secret {name} is required but was not found ({tried}). {how_to_set(name)}")
    return None


class DriveUnavailable(RuntimeError):
    """Google Drive could not be mounted on Colab (declined, or the mount failed); str() is one line."""


def mount_drive(path: str = "/content/drive") -> Path | None:
    """Mount Google Drive on Colab and return its 'MyDrive' folder; None anywhere else. A refused or
    failed mount raises DriveUnavailable with the reason in one line."""
    if platform() != "colab":
        return None
    try:
        from google.colab import drive  # type: ignore

        drive.mount(path)
    except Exception as e:  # noqa: BLE001 - MessageError (declined), ValueError (mount failed), ...
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise DriveUnavailable(f"Google Drive could not be mounted ({reason})") from None
    return Path(path) / "MyDrive"


def hf_token(token: str | None = None, *, required: bool = False, why: str = "") -> Secret | None:
    """The Hugging Face token every module sends: `token` when given, else the HF_TOKEN secret.

    None when there is none, unless required=True: then a one-line RuntimeError that starts with
    `why` (what needs the token) and says how to set HF_TOKEN here; it never holds a value.
    """
    if token:
        return token if isinstance(token, Secret) else Secret(token)
    try:
        return get_secret("HF_TOKEN", required=required)
    except RuntimeError as e:
        raise RuntimeError(f"{why} {e}".strip()) from None


def require_package(spec: str, why: str) -> None:
    """Make the distribution `spec` names importable at a version `spec` allows, pip-installing it only when
    it is missing or too old: for the optional SDKs that only a chosen backend needs (the judge's anthropic
    and openai, installed when their key is set, never by the install cell). One-line RuntimeError when pip
    fails, or when an older copy was already imported (only a restart loads the new one)."""
    import importlib
    import importlib.metadata
    import subprocess

    from packaging.requirements import Requirement

    req = Requirement(spec)
    try:
        have = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        have = None
    if have is not None and req.specifier.contains(have, prereleases=True):
        return
    print(f"installing {spec} for {why}")
    try:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", spec])
    except (subprocess.CalledProcessError, OSError) as e:
        raise RuntimeError(f"could not install {spec} for {why} ({type(e).__name__}): install it yourself "
                           f"(pip install '{spec}') and run this cell again") from None
    importlib.invalidate_caches()
    if have is not None and req.name.lower().replace("-", "_") in sys.modules:
        raise RuntimeError(f"RESTART NEEDED: {req.name} {have} was already imported and pip installed {spec}: "
                           "restart the kernel, then run all cells again")
