"""runtime: platform detection, GPU info, secrets that never leak, Drive mount, seeding."""
import logging
import random
import sys
import types
from pathlib import Path

import pytest
import torch

from shared import runtime

SECRET_VALUE = "hf_SuPeRsEcReT_1234567890"


@pytest.fixture
def local(monkeypatch):
    """A plain local machine: no platform markers, no Colab/Kaggle modules, no token in the env."""
    for var in ("COLAB_RELEASE_TAG", "COLAB_GPU", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "MY_TOKEN",
                "SAE_LADDER_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    for mod in ("google.colab", "google.colab.userdata", "google.colab.drive", "kaggle_secrets"):
        monkeypatch.setitem(sys.modules, mod, None)  # None makes `import mod` raise ImportError
    monkeypatch.delitem(sys.modules, "google.colab")
    return monkeypatch


def _fake_colab(monkeypatch, secrets: dict, mounted: list | None = None):
    colab = types.ModuleType("google.colab")
    userdata = types.ModuleType("google.colab.userdata")

    class SecretNotFoundError(Exception):
        pass

    def get(name):
        if name not in secrets:
            raise SecretNotFoundError(name)
        return secrets[name]

    userdata.get = get
    drive = types.ModuleType("google.colab.drive")
    drive.mount = lambda path: mounted.append(path) if mounted is not None else None
    colab.userdata, colab.drive = userdata, drive
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)


def _fake_kaggle(monkeypatch, secrets: dict):
    mod = types.ModuleType("kaggle_secrets")

    class BackendError(Exception):
        pass

    class UserSecretsClient:
        def get_secret(self, name):
            if name not in secrets:
                raise BackendError("Unexpected response from the service.")
            return secrets[name]

    mod.UserSecretsClient = UserSecretsClient
    monkeypatch.setitem(sys.modules, "kaggle_secrets", mod)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")


def test_platform_detection(local):
    assert runtime.platform() == "local"
    local.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert runtime.platform() == "kaggle"
    local.setenv("COLAB_RELEASE_TAG", "release-colab_20250101")
    assert runtime.platform() == "colab"


def test_gpu_info_without_cuda(local):
    local.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.gpu_info() == []
    assert runtime.default_device() == torch.device("cpu")
    assert runtime.bf16_supported("cpu")


def test_gpu_info_reads_name_and_free_memory(local):
    local.setattr(torch.cuda, "is_available", lambda: True)
    local.setattr(torch.cuda, "device_count", lambda: 2)
    local.setattr(torch.cuda, "mem_get_info", lambda i: (10 * 2**30, 15 * 2**30) if i == 0 else (70 * 2**30, 80 * 2**30))
    local.setattr(torch.cuda, "get_device_capability", lambda i: (7, 5) if i == 0 else (9, 0))
    local.setattr(torch.cuda, "get_device_name", lambda i: ["Tesla T4", "NVIDIA H100"][i])
    info = runtime.gpu_info()
    assert [g.name for g in info] == ["Tesla T4", "NVIDIA H100"]
    assert info[0].free_gb == pytest.approx(10) and info[0].total_gb == pytest.approx(15)
    assert (info[0].bf16, info[1].bf16) == (False, True)
    assert runtime.default_device() == torch.device("cuda:0")


def test_default_device_env_override(local):
    local.setenv("SAE_LADDER_DEVICE", "cpu")
    assert runtime.default_device() == torch.device("cpu")


def test_secret_from_env_is_masked(local, caplog, capsys):
    local.setenv("MY_TOKEN", SECRET_VALUE)
    with caplog.at_level(logging.DEBUG):
        secret = runtime.get_secret("MY_TOKEN", required=True)
    assert secret == SECRET_VALUE and isinstance(secret, str)
    assert secret.reveal() == SECRET_VALUE and type(secret.reveal()) is str
    for shown in (repr(secret), repr([secret]), repr({"token": secret}), f"{secret!r}"):
        assert SECRET_VALUE not in shown and "***" in shown
    out = capsys.readouterr()
    assert SECRET_VALUE not in out.out + out.err + caplog.text


def test_missing_secret(local, caplog, capsys):
    assert runtime.get_secret("MY_TOKEN") is None
    with pytest.raises(RuntimeError, match=r"MY_TOKEN.*export MY_TOKEN="):
        runtime.get_secret("MY_TOKEN", required=True)


def test_secret_from_colab_userdata(local, caplog, capsys):
    _fake_colab(local, {"MY_TOKEN": SECRET_VALUE})
    assert runtime.platform() == "colab"
    with caplog.at_level(logging.DEBUG):
        secret = runtime.get_secret("MY_TOKEN")
    assert secret == SECRET_VALUE and SECRET_VALUE not in repr(secret)
    with pytest.raises(RuntimeError, match="key icon") as err:
        runtime.get_secret("OTHER_TOKEN", required=True)
    assert "SecretNotFoundError" in str(err.value)
    out = capsys.readouterr()
    assert SECRET_VALUE not in out.out + out.err + caplog.text + str(err.value)


def test_secret_from_kaggle(local, caplog, capsys):
    _fake_kaggle(local, {"MY_TOKEN": SECRET_VALUE})
    assert runtime.platform() == "kaggle"
    assert runtime.get_secret("MY_TOKEN") == SECRET_VALUE
    with pytest.raises(RuntimeError, match="Add-ons -> Secrets") as err:
        runtime.get_secret("OTHER_TOKEN", required=True)
    out = capsys.readouterr()
    assert SECRET_VALUE not in out.out + out.err + caplog.text + str(err.value)


def test_env_wins_over_platform_store(local):
    _fake_colab(local, {"MY_TOKEN": "from-colab"})
    local.setenv("MY_TOKEN", "from-env")
    assert runtime.get_secret("MY_TOKEN") == "from-env"


def test_mount_drive(local):
    assert runtime.mount_drive() is None
    mounted = []
    _fake_colab(local, {}, mounted)
    assert runtime.mount_drive("/content/drive") == Path("/content/drive/MyDrive")
    assert mounted == ["/content/drive"]


def test_seed_everything_repeats():
    runtime.seed_everything(123)
    a = (random.random(), torch.rand(3))
    runtime.seed_everything(123)
    b = (random.random(), torch.rand(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SAE_LADDER_CACHE", str(tmp_path / "c"))
    assert runtime.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_resolve_device_on_a_cpu_machine(local):
    local.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("auto") == torch.device("cpu")
    assert runtime.resolve_device("auto", auto="last") == torch.device("cpu")
    assert runtime.resolve_device("") == runtime.resolve_device(None) == torch.device("cpu")
    assert runtime.resolve_device("spread") == runtime.SPREAD == "spread"
    for bad in ("cuda:0", "cuda", "gpu0"):
        with pytest.raises(ValueError) as e:
            runtime.resolve_device(bad)
        assert "\n" not in str(e.value) and "this machine has cpu" in str(e.value)


def test_resolve_device_with_two_gpus(local):
    local.setattr(torch.cuda, "is_available", lambda: True)
    local.setattr(torch.cuda, "device_count", lambda: 2)
    local.setattr(torch.cuda, "get_device_name", lambda i: "Tesla T4")
    assert runtime.resolve_device("auto") == torch.device("cuda:0")
    assert runtime.resolve_device("auto", auto="last") == torch.device("cuda:1")
    assert runtime.resolve_device("cuda") == torch.device("cuda:0")
    assert runtime.resolve_device("CUDA:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"'cuda:2' does not exist: this machine has cpu, cuda:0 \(Tesla T4\), cuda:1 \(Tesla T4\)"):
        runtime.resolve_device("cuda:2")


def test_resolve_dtype_one_policy(local):
    local.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert runtime.resolve_dtype(None, runtime.SPREAD) == torch.float32  # spread without GPUs: the CPU
    assert runtime.resolve_dtype("bfloat16", "cpu") == torch.bfloat16 and runtime.resolve_dtype(torch.float16) == torch.float16
    local.setattr(runtime, "bf16_supported", lambda device=None: False)  # a T4
    assert runtime.resolve_dtype("auto", torch.device("cuda:0")) == torch.float16
    local.setattr(runtime, "bf16_supported", lambda device=None: True)
    assert runtime.resolve_dtype(None, torch.device("cuda:1")) == torch.bfloat16
    with pytest.raises(ValueError, match="use one of auto, bfloat16, float16, float32") as e:
        runtime.resolve_dtype("fp8")
    assert "\n" not in str(e.value)


def test_hf_token_is_the_one_source(local, capsys):
    local.delenv("HF_TOKEN", raising=False)
    assert runtime.hf_token() is None
    with pytest.raises(RuntimeError, match="^Uploading needs it. Secret HF_TOKEN is required") as e:
        runtime.hf_token(required=True, why="Uploading needs it.")
    assert "\n" not in str(e.value)
    local.setenv("HF_TOKEN", "hf_from_env")
    token = runtime.hf_token()
    assert token == "hf_from_env" and isinstance(token, runtime.Secret) and "hf_from_env" not in repr(token)
    given = runtime.hf_token("hf_given")
    assert given == "hf_given" and "hf_given" not in repr(given)
    assert "hf_" not in capsys.readouterr().out


def test_single_thread_sets_one_thread_and_restores():
    import torch

    before = torch.get_num_threads()
    with runtime.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with runtime.single_thread(False):
        assert torch.get_num_threads() == before
    try:
        with runtime.single_thread():
            raise KeyError("x")
    except KeyError:
        pass
    assert torch.get_num_threads() == before


def test_require_package_installs_only_what_is_missing_or_too_old(monkeypatch, capsys):
    """runtime.require_package: nothing when the installed version fits; pip with the spec otherwise; a
    one-line error naming the spec when pip fails."""
    import subprocess

    from shared import runtime

    calls = []

    def fake_pip(cmd, *a, **k):
        calls.append(cmd[-1])
        if "fails" in cmd[-1]:
            raise subprocess.CalledProcessError(1, cmd)
        return 0

    monkeypatch.setattr(subprocess, "check_call", fake_pip)
    runtime.require_package("packaging>=1", why="a test")
    assert calls == []
    runtime.require_package("surely-not-installed-xyz>=1", why="a test")
    assert calls == ["surely-not-installed-xyz>=1"] and "installing surely-not-installed-xyz>=1 for a test" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match=r"could not install fails-xyz>=1 for a test") as e:
        runtime.require_package("fails-xyz>=1", why="a test")
    assert "\n" not in str(e.value)
