"""Crash-safe checkpoint stores: a local folder (a mounted Google Drive is one) or a Hugging Face repo.

A checkpoint is a folder `step-<tokens:012d>` holding the tensors of a nested `state` dict in
safetensors shards, the rest of the state in `state.json`, and a `manifest.json` (sha256 and size
of every file) written last. It is built in a temp folder beside its final place, fsynced, then
renamed, so a run killed at any moment (SIGKILL included) never leaves a half-written checkpoint
under a final name. `latest()` returns the newest checkpoint whose manifest verifies and warns
about, then skips, any newer one that is partial or corrupt. Pruning keeps the newest `keep`
*verified* checkpoints and deletes a checkpoint only when a verified one with more tokens exists,
so damaged checkpoints never cost the last good one (see Store.prunable).

    store = open_store("/content/drive/MyDrive/run1")      # or "hf:<user>/<repo>[/<subfolder>]"
    store.save(tokens, {"sae": sae.state_dict(), "opt": opt.state_dict(), "rng": get_rng_state()})
    tokens, state = store.load_latest() or (0, None)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
import socket
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "sae-ladder-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
STATE_JSON = "state.json"
SHARD_BYTES = 1 << 30  # tensors are written in safetensors shards of about this size
_NAME_RE = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"


def checkpoint_name(tokens: int) -> str:
    return f"step-{int(tokens):012d}"


@dataclass
class CheckpointInfo:
    """One checkpoint folder: where it is, how many tokens it holds, whether its manifest exists."""

    name: str
    tokens: int
    path: str
    complete: bool


# ----------------------------------------------------------------------------------------------
# state <-> (json tree, tensors): exact round trip of nested dicts/lists/tuples, numbers, strings,
# bytes, None, tensors, numpy arrays, torch dtypes; int dict keys survive (optimizer state_dicts).

_TAGS = ("__tensor__", "__tuple__", "__bytes__", "__dict__", "__ndarray__", "__dtype__", "__float__")


def _encode(obj: Any, tensors: list, where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return {"__tensor__": f"t{len(tensors) - 1:06d}"}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return {"__float__": float(obj).hex()}  # hex keeps every bit, nan and inf included
    if isinstance(obj, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {"__dict__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}.{k}")]
                             for k, v in obj.items()]}
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {"__ndarray__": base64.b64encode(arr.tobytes()).decode("ascii"),
                "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors, where)
    raise TypeError(
        f"checkpoint state at {where!r} has type {type(obj).__name__}, which cannot be saved exactly; "
        "store tensors, numbers, strings, bytes, None, or lists/tuples/dicts of them "
        "(e.g. call .state_dict() on modules and optimizers)"
    )


def _decode(obj: Any, tensors: dict) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__float__" in obj:
        return float.fromhex(obj["__float__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    if "__dtype__" in obj:
        return getattr(torch, obj["__dtype__"])
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    if "__ndarray__" in obj:
        raw = base64.b64decode(obj["__ndarray__"])
        return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    return {k: _decode(v, tensors) for k, v in obj.items()}


# ----------------------------------------------------------------------------------------------
# RNG helpers: everything an exact resume needs.

def get_rng_state() -> dict:
    """Python, numpy, torch CPU and every CUDA device's RNG state, as checkpointable values."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    return state


def set_rng_state(state: dict) -> None:
    """Restore what get_rng_state() returned (CUDA states only for devices that exist here)."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)


# ----------------------------------------------------------------------------------------------
# writing and verifying one checkpoint folder

def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some FUSE mounts (Drive) refuse to open folders; rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_state(folder: Path, state: dict, shard_bytes: int = SHARD_BYTES) -> list[str]:
    """Write `state` into `folder` (tensors -> safetensors shards, rest -> state.json); file names."""
    from safetensors.torch import save_file

    tensors: list[torch.Tensor] = []
    tree = _encode(state, tensors, "state")
    files, shard, size, seen = [], {}, 0, set()

    def flush():
        nonlocal shard, size, seen
        if shard:
            name = f"tensors-{len(files):05d}.safetensors"
            save_file(shard, str(folder / name))
            files.append(name)
        shard, size, seen = {}, 0, set()

    for i, t in enumerate(tensors):
        t = t.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.to("cpu").contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:  # safetensors refuses shared storage
            t = t.clone()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        shard[f"t{i:06d}"] = t
        size += t.numel() * t.element_size()
        if size >= shard_bytes:
            flush()
    flush()
    (folder / STATE_JSON).write_text(json.dumps({"tree": tree, "shards": files}))
    return files + [STATE_JSON]


def _read_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    doc = json.loads((folder / STATE_JSON).read_text())
    tensors = {}
    for name in doc["shards"]:
        tensors.update(load_file(str(folder / name)))
    return _decode(doc["tree"], tensors)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace a file's content all at once: write a temp file beside it, fsync, rename, fsync the
    folder. A crash at any moment leaves either the old content or the new, never a cut file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(text)
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _write_checkpoint(folder: Path, tokens: int, state: dict, step: int | None,
                      shard_bytes: int = SHARD_BYTES) -> dict:
    """Write state files, fsync them, then write manifest.json (last) and fsync it."""
    folder.mkdir(parents=True, exist_ok=True)
    files = _write_state(folder, state, shard_bytes)
    entries = {}
    for name in files:
        _fsync_file(folder / name)
        entries[name] = {"sha256": _sha256(folder / name), "bytes": (folder / name).stat().st_size}
    manifest = {"format": FORMAT, "version": VERSION, "tokens": int(tokens),
                "step": None if step is None else int(step), "time": time.time(), "files": entries}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def verify(folder: str | os.PathLike) -> dict:
    """Check a checkpoint folder against its manifest; return the manifest or raise ValueError why not."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise ValueError("no manifest.json (the write was interrupted)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"unreadable manifest.json ({e})") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise ValueError("manifest.json is not a sae-ladder checkpoint manifest")
    if manifest.get("version", 0) > VERSION:
        raise ValueError(f"checkpoint format version {manifest['version']} is newer than this code "
                         f"({VERSION}); update the shared package")
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"file {name} is missing")
        if path.stat().st_size != entry["bytes"]:
            raise ValueError(f"file {name} has {path.stat().st_size} bytes, manifest says {entry['bytes']}")
        if _sha256(path) != entry["sha256"]:
            raise ValueError(f"file {name} fails its sha256 checksum")
    return manifest


def load_checkpoint(folder: str | os.PathLike, check: bool = True) -> tuple[int, dict]:
    """(tokens, state) of one checkpoint folder, verified against its manifest unless check=False."""
    folder = Path(folder)
    manifest = verify(folder) if check else json.loads((folder / MANIFEST).read_text())
    return int(manifest["tokens"]), _read_state(folder)


# ----------------------------------------------------------------------------------------------
# stores

class Store:
    """Interface of a checkpoint store: save, list, latest, load_latest, prune.

    A store subclass says how to list and fetch one checkpoint (`_fetch`); which checkpoint to
    resume from and which to prune is decided here, once, for every store.
    """

    keep: int

    def save(self, tokens: int, state: dict, step: int | None = None) -> str:
        raise NotImplementedError

    def list(self) -> list[CheckpointInfo]:
        raise NotImplementedError

    def _fetch(self, c: CheckpointInfo) -> CheckpointInfo:
        """`c` verified now, with `.path` a local folder holding it; ValueError why when it is
        partial or corrupt (other errors: it could not be checked)."""
        raise NotImplementedError

    def _verified(self, c: CheckpointInfo) -> CheckpointInfo:
        """`_fetch(c)`, recording the verdict for `_problem`."""
        try:
            local = self._fetch(c)
        except ValueError as e:
            self._record(c, str(e))
            raise
        self._record(c, None)
        return local

    def _key(self, c: CheckpointInfo) -> Any:
        """What a recorded verdict on `c` depends on (LocalStore: its files' sizes and mtimes)."""
        return None

    @property
    def _checks(self) -> dict[str, tuple[Any, str | None]]:
        """name -> (key, problem) of the verdicts this store has made; created on first use."""
        return self.__dict__.setdefault("_checks_", {})

    def _record(self, c: CheckpointInfo, problem: str | None) -> None:
        self._checks[c.name] = (self._key(c), problem)

    def _problem(self, c: CheckpointInfo) -> str | None:
        """None when `c` verifies, else why not; a recorded verdict is reused while its key holds
        (the checkpoint this store just wrote is recorded as good, so a save re-hashes nothing)."""
        hit = self._checks.get(c.name)
        if hit is None or hit[0] != self._key(c):
            try:
                self._verified(c)
            except ValueError:
                pass
            hit = self._checks[c.name]
        return hit[1]

    def _newest_usable(self, load: bool):
        """The newest checkpoint that verifies (loaded when `load`), or None; one warning names
        every newer checkpoint skipped and why, and which one is used (or that none is)."""
        skipped = []
        for c in reversed(self.list()):
            try:
                local = self._verified(c)  # verified afresh: a resume trusts no recorded verdict
                found = load_checkpoint(local.path, check=False) if load else local
            except Exception as e:  # noqa: BLE001 - any failure means: not this one
                skipped.append(f"{c.path} ({e if isinstance(e, ValueError) else f'{type(e).__name__}: {e}'})")
                continue
            if skipped:
                warnings.warn(f"skipping incomplete or corrupt checkpoint(s) {'; '.join(skipped)}: resuming "
                              f"from {c.name} ({c.tokens:,} tokens)", RuntimeWarning, stacklevel=3)
            return found
        if skipped:
            warnings.warn(f"no usable checkpoint: starting from scratch (every checkpoint is incomplete or "
                          f"corrupt: {'; '.join(skipped)})", RuntimeWarning, stacklevel=3)
        return None

    def latest(self) -> CheckpointInfo | None:
        """Newest checkpoint that verifies (its `.path` local); newer damaged ones are skipped with a warning."""
        return self._newest_usable(load=False)

    def load_latest(self) -> tuple[int, dict] | None:
        """(tokens, state) of the newest good checkpoint, or None when there is none."""
        return self._newest_usable(load=True)

    def load(self, name: str) -> tuple[int, dict]:
        """(tokens, state) of the checkpoint called `name`, verified (ValueError if damaged or absent)."""
        for c in self.list():
            if c.name == name:
                return load_checkpoint(self._verified(c).path, check=False)
        raise ValueError(f"{self} holds no checkpoint {name}")

    def prunable(self, protect: str | None = None) -> list[CheckpointInfo]:
        """Checkpoints a save may delete: never one unless a *verified* checkpoint with more tokens exists.

        Only verified checkpoints count towards `keep`: walking from the most tokens down, the newest
        `keep` that verify are kept and everything older than the last of them goes; a damaged
        (partial or corrupt) checkpoint goes once a verified one with more tokens supersedes it.
        Damaged checkpoints with more tokens than every verified one stay (a resume skips them, and
        the resumed run replaces them as it saves under their names). `protect` (the checkpoint
        just saved) is never pruned; one that cannot be checked now (a network error) is kept and
        not counted. Only checkpoints newer than the `keep`-th verified one are checked, and
        verdicts are reused, so a save does not re-hash (or re-download) what it already checked.
        """
        out, verified = [], 0
        for c in reversed(self.list()):
            if verified >= self.keep and c.name != protect:
                out.append(c)
                continue
            try:
                problem = self._problem(c)
            except Exception:  # noqa: BLE001 - unknown: neither counted nor deleted
                continue
            if problem is None:
                verified += 1
            elif verified and c.name != protect:
                out.append(c)
        return out[::-1]


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStore(Store):
    """Checkpoints in a local folder (a mounted Google Drive folder works the same)."""

    def __init__(self, folder: str | os.PathLike, keep: int = 3, shard_bytes: int = SHARD_BYTES):
        if keep < 1:
            raise ValueError(f"keep={keep}: keep at least 1 checkpoint")
        self.root = Path(folder).expanduser()
        self.keep = keep
        self.shard_bytes = shard_bytes

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r}, keep={self.keep})"

    def list(self) -> list[CheckpointInfo]:
        """Checkpoint folders by increasing tokens (complete = has a manifest; not yet verified)."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            m = _NAME_RE.match(p.name)
            if m and p.is_dir():
                out.append(CheckpointInfo(p.name, int(m.group(1)), str(p), (p / MANIFEST).is_file()))
        return sorted(out, key=lambda c: c.tokens)

    def _key(self, c: CheckpointInfo) -> tuple:
        """Name, size and mtime of every file in the folder: a verdict holds while they do."""
        try:
            return tuple(sorted((f.name, st.st_size, st.st_mtime_ns)
                                for f in Path(c.path).iterdir() for st in [f.stat()]))
        except OSError:
            return ()

    def _fetch(self, c: CheckpointInfo) -> CheckpointInfo:
        verify(c.path)
        return c

    def _clean_stale(self) -> None:
        """Remove temp/trash folders left by killed saves (not those of a live process on this host)."""
        host = _host_tag()
        for p in self.root.iterdir():
            if not (p.name.startswith(_TMP_PREFIX) or p.name.startswith(_TRASH_PREFIX)):
                continue
            parts = p.name.split("-")  # .tmp-<host>-<pid>-<rand>-step-...
            try:
                mine = parts[1] == host and int(parts[2]) != os.getpid() and _pid_alive(int(parts[2]))
            except (IndexError, ValueError):
                mine = False
            if not mine:
                shutil.rmtree(p, ignore_errors=True)

    def _tmp_path(self, prefix: str, name: str) -> Path:
        return self.root / f"{prefix}{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}"

    def save(self, tokens: int, state: dict, step: int | None = None) -> str:
        """Write a checkpoint atomically, prune to the newest `keep`, return its path."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        if int(tokens) < 0:
            raise ValueError(f"tokens={tokens} must be >= 0")
        self.root.mkdir(parents=True, exist_ok=True)
        self._clean_stale()
        name = checkpoint_name(tokens)
        final = self.root / name
        tmp = self._tmp_path(_TMP_PREFIX, name)
        try:
            _write_checkpoint(tmp, tokens, state, step, self.shard_bytes)
            if final.exists():  # same tokens saved again: move the old one aside first
                trash = self._tmp_path(_TRASH_PREFIX, name)
                os.replace(final, trash)
                os.replace(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        info = CheckpointInfo(name, int(tokens), str(final), True)
        self._record(info, None)  # hashed as it was written: pruning need not hash it again
        self.prune(protect=name)
        return str(final)

    def prune(self, protect: str | None = None) -> None:
        """Delete what `prunable()` names: keep the newest `keep` verified checkpoints."""
        for c in self.prunable(protect):
            trash = self._tmp_path(_TRASH_PREFIX, c.name)
            os.replace(c.path, trash)  # rename first: a half-deleted folder never keeps its name
            shutil.rmtree(trash, ignore_errors=True)


def _hf_token(token: str | None) -> str:
    """The token to use: given, or HF_TOKEN from the platform's secrets (runtime.hf_token); clear error when missing."""
    from ..runtime import hf_token

    return hf_token(token, required=True, why=(
        "A Hugging Face checkpoint store needs a write token (role: write, from "
        "https://huggingface.co/settings/tokens) set as HF_TOKEN (Colab: Secrets, the key icon; Kaggle: "
        "Add-ons > Secrets), or use a local/Drive folder as the store."))


class HFStore(Store):
    """Checkpoints in a (private) Hugging Face model repo under `subfolder/step-<tokens>/`.

    Each checkpoint is written locally (same atomic format as LocalStore) and uploaded in one commit,
    which the hub applies all-or-nothing. Resume downloads the newest checkpoint and verifies it.
    `api` may be any object with HfApi's repo_info, create_repo, upload_folder, list_repo_files,
    hf_hub_download and delete_folder (tests pass a fake one).
    """

    def __init__(self, repo_id: str, token: str | None = None, subfolder: str = "checkpoints",
                 keep: int = 3, private: bool = True, cache_dir: str | os.PathLike | None = None,
                 api: Any = None, retries: int = 3):
        if keep < 1:
            raise ValueError(f"keep={keep}: keep at least 1 checkpoint")
        if retries < 1:
            raise ValueError(f"retries={retries}: try each Hub call at least once")
        if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo_id or ""):
            raise ValueError(f"repo_id {repo_id!r} must look like '<user>/<repo>'")
        self.repo_id, self.keep, self.retries = repo_id, keep, retries
        self.subfolder = subfolder.strip("/")
        self._token = _hf_token(token)
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=self._token)
        self.api = api
        self.cache = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="sae-ckpt-"))
        self._start(private)

    def _start(self, private: bool) -> None:
        """Probe the repo before any checkpoint is due: the repo exists (created private when missing)
        and the token may write there (hub.check_write_access: its account or organisation, a write
        token). Any failure is ONE line saying why and what to set instead, not the client's chained
        traceback: a run never starts training towards a store that would refuse its checkpoints."""
        from .. import hub

        for attempt in range(self.retries):
            try:
                # the repo first: its probe has a timeout (whoami has none), and creating it is refused
                # under another account anyway; then the token's right to write there
                is_private, created = hub.ensure_repo(self.api, self.repo_id, private=private, token=self._token)
                hub.check_write_access(self.api, self.repo_id, token=self._token)
                break
            except hub.HubError as e:
                reason = str(e)
            except Exception as e:  # noqa: BLE001 - only network faults and 5xx are worth a retry
                code = hub.status_code(e)
                if attempt < self.retries - 1 and (code is None or code >= 500):
                    time.sleep(2 * 4 ** attempt)
                    continue
                reason = hub.failure_reason(e, self.repo_id, self._token)
            raise hub.HubError(
                f"checkpoint store hf:{self.repo_id} cannot start: {reason}. Fix that, or checkpoint without "
                'the Hub: HF_USERNAME = "" and CHECKPOINT_DIR = "auto" (Drive on Colab, else a local folder) '
                "or a folder path.") from None
        print(f"checkpoints go to {hub.repo_url(self.api, self.repo_id)} {hub.visibility(is_private, private, created)}")

    def __repr__(self) -> str:  # never shows the token
        return f"HFStore({self.repo_id!r}, subfolder={self.subfolder!r}, keep={self.keep})"

    def _remote(self, name: str) -> str:
        return f"{self.subfolder}/{name}" if self.subfolder else name

    def _retry(self, fn, *args, **kwargs):
        """fn(*args, **kwargs), tried `retries` times with back-off; the last failure propagates."""
        for attempt in range(self.retries - 1):
            try:
                return fn(*args, **kwargs)
            except Exception:  # noqa: BLE001 - network errors of any kind are retried
                time.sleep(2 * 4 ** attempt)
        return fn(*args, **kwargs)

    def _files(self) -> list[str]:
        return list(self._retry(self.api.list_repo_files, self.repo_id, repo_type="model",
                                token=self._token))

    def list(self) -> list[CheckpointInfo]:
        prefix = self.subfolder + "/" if self.subfolder else ""
        found: dict[str, bool] = {}
        for f in self._files():
            if not f.startswith(prefix):
                continue
            parts = f[len(prefix):].split("/")
            if len(parts) == 2 and _NAME_RE.match(parts[0]):
                found[parts[0]] = found.get(parts[0], False) or parts[1] == MANIFEST
        out = [CheckpointInfo(n, int(_NAME_RE.match(n).group(1)), f"hf://{self.repo_id}/{self._remote(n)}", ok)
               for n, ok in found.items()]
        return sorted(out, key=lambda c: c.tokens)

    def save(self, tokens: int, state: dict, step: int | None = None) -> str:
        """Write locally, upload in one commit, prune remote to `keep`; returns the hf:// path.

        A failed upload (after retries) warns and keeps the local copy instead of stopping the run.
        """
        staging = LocalStore(self.cache / "staging", keep=1)
        local = staging.save(tokens, state, step)
        name = checkpoint_name(tokens)
        try:
            self._retry(self.api.upload_folder, repo_id=self.repo_id, folder_path=local,
                        path_in_repo=self._remote(name), repo_type="model", token=self._token,
                        commit_message=f"checkpoint {name}")
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"upload of checkpoint {name} to {self.repo_id} failed ({type(e).__name__}: "
                          f"{e}); a local copy stays at {local} and the next save uploads again",
                          RuntimeWarning, stacklevel=2)
            return local
        self._record(CheckpointInfo(name, int(tokens), local, True), None)  # verified locally, one commit
        self.prune(protect=name)
        return f"hf://{self.repo_id}/{self._remote(name)}"

    def prune(self, protect: str | None = None) -> None:
        """Delete what `prunable()` names from the repo: keep the newest `keep` verified checkpoints.
        A checkpoint this store neither wrote nor loaded is downloaded once to be verified."""
        for c in self.prunable(protect):
            try:
                self._retry(self.api.delete_folder, path_in_repo=self._remote(c.name),
                            repo_id=self.repo_id, repo_type="model", token=self._token,
                            commit_message=f"prune {c.name}")
            except Exception as e:  # noqa: BLE001 - a failed prune loses nothing
                warnings.warn(f"could not prune {c.name} from {self.repo_id}: {e}", RuntimeWarning)

    def _download(self, c: CheckpointInfo) -> Path:
        """Download one checkpoint into the cache (manifest first, then its files); local folder."""
        root = self.cache / "download"
        folder = root / self._remote(c.name)
        if folder.exists():
            shutil.rmtree(folder)

        def get(fname: str) -> None:
            self._retry(self.api.hf_hub_download, repo_id=self.repo_id,
                        filename=f"{self._remote(c.name)}/{fname}", repo_type="model",
                        local_dir=str(root), token=self._token)

        get(MANIFEST)
        manifest = json.loads((folder / MANIFEST).read_text())
        for fname in manifest.get("files", {}):
            get(fname)
        return folder

    def _fetch(self, c: CheckpointInfo) -> CheckpointInfo:
        """Download `c` into the cache and verify it; its local copy is `.path`."""
        if not c.complete:
            raise ValueError("no manifest.json (the upload was interrupted)")
        folder = self._download(c)
        verify(folder)
        return CheckpointInfo(c.name, c.tokens, str(folder), True)


def open_store(spec: str | os.PathLike | Store, *, keep: int = 3, token: str | None = None,
               **kwargs) -> Store:
    """A store from "hf:<user>/<repo>[/<subfolder>]" or a folder path (a Store passes through)."""
    if isinstance(spec, Store):
        return spec
    s = str(spec)
    if s.startswith("hf:"):
        parts = s[3:].strip("/").split("/")
        if len(parts) < 2 or not all(parts[:2]):
            raise ValueError(f"store spec {s!r}: use 'hf:<user>/<repo>' or 'hf:<user>/<repo>/<subfolder>'")
        sub = "/".join(parts[2:]) or kwargs.pop("subfolder", "checkpoints")
        return HFStore("/".join(parts[:2]), token=token, subfolder=sub, keep=keep, **kwargs)
    if not s:
        raise ValueError("empty store spec: give a folder path or 'hf:<user>/<repo>'")
    return LocalStore(s, keep=keep, **kwargs)
