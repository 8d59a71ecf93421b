"""Checkpoint stores: exact round trip, keep-last-K, corrupt/partial checkpoints skipped, SIGKILL safety."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from shared.training import checkpoint as ck

ROOT = Path(__file__).resolve().parents[1]


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(7, 5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 7, generator=g)).pow(2).sum().backward()
        opt.step()
    return model, opt, {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "rng": ck.get_rng_state(),
        "bf16": torch.randn(3, 4, generator=g).to(torch.bfloat16),
        "long": torch.arange(5),
        "flag": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5),
        "view": torch.arange(12.0).reshape(3, 4)[:, 1],
        "empty": torch.zeros(0, 3),
        "meta": {"lr": 1e-3, "nan": float("nan"), "inf": -float("inf"), "tiny": 5e-324,
                 "name": "run", "blob": b"\x00\xffab", "none": None, "ok": True,
                 "tup": (1, 2.5, "x"), "ints": {3: "three", 7: [1, 2]}, "dtype": torch.bfloat16,
                 "np": np.arange(4, dtype=np.uint32), "big": 2**70},
    }


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float):
        return isinstance(b, float) and (a == b or (a != a and b != b))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_save_load_exact(tmp_path):
    _, _, state = _state()
    store = ck.LocalStore(tmp_path)
    path = store.save(1000, state, step=3)
    assert Path(path).name == "step-000000001000"
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    assert manifest["tokens"] == 1000 and manifest["step"] == 3 and manifest["version"] == ck.VERSION
    assert all(len(e["sha256"]) == 64 and e["bytes"] > 0 for e in manifest["files"].values())
    tokens, loaded = store.load_latest()
    assert tokens == 1000
    assert _equal(state, loaded)


def test_shards_and_resume_bitwise(tmp_path):
    """Optimizer + RNG state restored from a checkpoint continue exactly like an uninterrupted run."""
    def run(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            model(torch.randn(4, 7)).pow(2).sum().backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()], torch.rand(3), random.random()

    torch.manual_seed(0)
    random.seed(0)
    model, opt, _ = _state()
    store = ck.LocalStore(tmp_path, shard_bytes=64)  # many tiny shards
    store.save(10, {"model": model.state_dict(), "opt": opt.state_dict(), "rng": ck.get_rng_state()})
    ref = run(model, opt, 4)

    model2 = torch.nn.Linear(7, 5)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    tokens, state = store.load_latest()
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    ck.set_rng_state(state["rng"])
    got = run(model2, opt2, 4)
    assert all(torch.equal(a, b) for a, b in zip(ref[0], got[0]))
    assert torch.equal(ref[1], got[1]) and ref[2] == got[2]
    assert len(list(Path(store.latest().path).glob("tensors-*.safetensors"))) > 1


def test_keep_last_k_and_list(tmp_path):
    store = ck.LocalStore(tmp_path, keep=2)
    for t in (100, 200, 300, 400):
        store.save(t, {"x": torch.tensor([t])})
    names = [c.name for c in store.list()]
    assert names == ["step-000000000300", "step-000000000400"]
    assert store.latest().tokens == 400
    # saving the same tokens again replaces it atomically
    store.save(400, {"x": torch.tensor([401])})
    assert store.load_latest()[1]["x"].item() == 401
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _three(tmp_path):
    store = ck.LocalStore(tmp_path, keep=5)
    for t in (1, 2, 3):
        store.save(t, {"x": torch.full((100,), float(t)), "t": t})
    return store, Path(store.list()[-1].path)


def _damage(folder: Path, how: str) -> None:
    """Break a checkpoint the ways a disk or a killed sync does: a flipped byte, a cut file, a lost file."""
    shard = next(folder.glob("tensors-*.safetensors"))
    if how == "flip":
        data = bytearray(shard.read_bytes())
        data[-5] ^= 0x01
        shard.write_bytes(bytes(data))
    elif how == "truncate":
        shard.write_bytes(shard.read_bytes()[:-10])
    elif how == "no_manifest":
        (folder / "manifest.json").unlink()
    elif how == "missing_file":
        (folder / "state.json").unlink()
    else:
        (folder / "manifest.json").write_text("{not json")


@pytest.mark.parametrize("damage", ["flip", "truncate", "no_manifest", "missing_file", "bad_manifest"])
def test_corrupt_latest_is_skipped_with_warning(tmp_path, damage):
    store, latest = _three(tmp_path)
    _damage(latest, damage)
    with pytest.warns(RuntimeWarning, match="step-000000000003"):
        tokens, state = store.load_latest()
    assert tokens == 2 and state["t"] == 2 and torch.equal(state["x"], torch.full((100,), 2.0))
    with pytest.warns(RuntimeWarning, match="step-000000000003"):
        assert store.latest().tokens == 2


def test_partial_temp_dir_ignored_and_cleaned(tmp_path):
    store, _ = _three(tmp_path)
    stale = tmp_path / ".tmp-deadbeef-999999999-abcd-step-000000000009"
    stale.mkdir()
    (stale / "tensors-00000.safetensors").write_bytes(b"garbage")
    assert store.latest().tokens == 3  # no warning: temp folders are not checkpoints
    store.save(4, {"x": torch.zeros(1)})
    assert not stale.exists()


def test_empty_store_and_bad_state(tmp_path):
    store = ck.LocalStore(tmp_path / "nothing")
    assert store.load_latest() is None and store.latest() is None and store.list() == []
    with pytest.raises(TypeError, match="cannot be saved exactly"):
        store.save(1, {"obj": object()})
    with pytest.raises(ValueError, match="keep"):
        ck.LocalStore(tmp_path, keep=0)


_WRITER = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {root!r})
    from shared.training import checkpoint as ck
    store = ck.LocalStore({folder!r}, keep=10, shard_bytes=4 << 20)
    store.save(1, {{"w": torch.full((1000,), 1.0)}})
    big = {{f"w{{i}}": torch.randn(1 << 20) for i in range(24)}}  # 96 MB in 24 shards
    stop_at = {stop_at!r}
    fsync = ck._fsync_file
    def traced(path):  # tell the parent where the save is, then wait there to be killed
        fsync(path)
        if stop_at and path.name.startswith(stop_at):
            print("at", path.name, flush=True)
            time.sleep(30)
    ck._fsync_file = traced
    print("saving", flush=True)
    for t in range(2, 1000):
        store.save(t, big)
""")


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", ["tensors-00003", "manifest.json.part", None])
def test_sigkill_during_save_leaves_loadable_store(tmp_path, stop_at):
    """A real SIGKILL mid-save: with shards half written, before the manifest lands, or at a random time."""
    folder = tmp_path / "store"
    code = _WRITER.format(root=str(ROOT), folder=str(folder), stop_at=stop_at)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "saving"
        if stop_at:
            assert proc.stdout.readline().startswith("at " + stop_at)
        else:
            time.sleep(random.Random().uniform(0.05, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.stdout.close()
    if stop_at:
        assert [p for p in folder.iterdir() if p.name.startswith(".tmp-")], "killed mid-save"
    tokens, state = ck.LocalStore(folder).load_latest()  # no warning: nothing half-written has a final name
    assert tokens >= 1 and set(state) in ({"w"}, {f"w{i}" for i in range(24)})
    if stop_at:
        assert tokens == 1
    # the next save clears the killed writer's temp folder
    ck.LocalStore(folder, keep=10).save(5000, {"w": torch.zeros(1)})
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- Hugging Face store, offline

class _NotFound(Exception):
    """What the Hub answers for a missing repo: an error whose response has status 404."""

    response = SimpleNamespace(status_code=404)


class FakeHfApi:
    """The few HfApi methods HFStore uses, backed by a local folder (a 'repo')."""

    def __init__(self, root):
        self.root = Path(root)
        self.calls = []
        self.private = {}

    def whoami(self, token=None, *, cache=False):
        return {"name": "me", "orgs": [], "auth": {"accessToken": {"role": "write"}}}

    def repo_info(self, repo_id, *, repo_type=None, timeout=None, token=None):
        if not (self.root / repo_id).is_dir():
            raise _NotFound(repo_id)
        return SimpleNamespace(private=self.private.get(repo_id))

    def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None, token=None):
        self.calls.append(("create_repo", repo_id, private))
        self.private[repo_id] = private
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)

    def upload_folder(self, *, repo_id, folder_path, path_in_repo, token=None, repo_type=None,
                      commit_message=None):
        import shutil

        self.calls.append(("upload_folder", path_in_repo))
        shutil.copytree(folder_path, self.root / repo_id / path_in_repo, dirs_exist_ok=True)

    def list_repo_files(self, repo_id, *, repo_type=None, token=None):
        base = self.root / repo_id
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def hf_hub_download(self, *, repo_id, filename, local_dir, repo_type=None, token=None):
        import shutil

        src = self.root / repo_id / filename
        if not src.exists():
            raise FileNotFoundError(filename)
        dst = Path(local_dir) / filename
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return str(dst)

    def delete_folder(self, *, path_in_repo, repo_id, repo_type=None, token=None, commit_message=None):
        import shutil

        self.calls.append(("delete_folder", path_in_repo))
        shutil.rmtree(self.root / repo_id / path_in_repo)


def test_hf_store_through_fake_api(tmp_path):
    api = FakeHfApi(tmp_path / "hub")
    store = ck.HFStore("me/run", token="hf_fake", subfolder="ckpt", keep=2, api=api,
                       cache_dir=tmp_path / "cache")
    assert api.calls[0] == ("create_repo", "me/run", True)
    assert store.load_latest() is None
    _, _, state = _state()
    for t in (10, 20, 30):
        path = store.save(t, {**state, "t": t})
    assert path == "hf://me/run/ckpt/step-000000000030"
    assert [c.name for c in store.list()] == ["step-000000000020", "step-000000000030"]
    assert ("delete_folder", "ckpt/step-000000000010") in api.calls
    tokens, loaded = store.load_latest()
    assert tokens == 30 and _equal({**state, "t": 30}, loaded)
    # a corrupt newest remote checkpoint is skipped with a warning, the previous one is used
    shard = next((tmp_path / "hub/me/run/ckpt/step-000000000030").glob("tensors-*"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="step-000000000030"):
        tokens, loaded = store.load_latest()
    assert tokens == 20 and loaded["t"] == 20
    # a fresh process (new store object, new cache) resumes from the hub alone
    other = ck.HFStore("me/run", token="hf_fake", subfolder="ckpt", api=api)
    (tmp_path / "hub/me/run/ckpt/step-000000000030/manifest.json").unlink()
    with pytest.warns(RuntimeWarning, match="incomplete"):
        assert other.load_latest()[0] == 20
    assert "hf_fake" not in repr(store)


def test_hf_upload_failure_warns_and_keeps_local(tmp_path):
    class Broken(FakeHfApi):
        def upload_folder(self, **kw):
            raise ConnectionError("hub down")

    store = ck.HFStore("me/run", token="x", api=Broken(tmp_path / "hub"), retries=1,
                       cache_dir=tmp_path / "cache")
    with pytest.warns(RuntimeWarning, match="hub down"):
        path = store.save(5, {"x": torch.ones(2)})
    assert ck.load_checkpoint(path)[0] == 5


def test_missing_token_says_how_to_set_it(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="HF_TOKEN") as e:
        ck.HFStore("me/run", api=FakeHfApi(tmp_path))
    assert "Secrets" in str(e.value)
    with pytest.raises(RuntimeError, match="HF_TOKEN"):
        ck.open_store("hf:me/run", api=FakeHfApi(tmp_path))


def test_open_store(tmp_path, monkeypatch):
    assert isinstance(ck.open_store(tmp_path / "a"), ck.LocalStore)
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    s = ck.open_store("hf:me/run/sub/dir", keep=4, api=FakeHfApi(tmp_path))
    assert isinstance(s, ck.HFStore) and s.subfolder == "sub/dir" and s.keep == 4
    assert ck.open_store(s) is s
    with pytest.raises(ValueError, match="hf:<user>/<repo>"):
        ck.open_store("hf:onlyuser")


def test_calls_match_the_real_hfapi_signatures(tmp_path):
    """Every call HFStore makes binds to huggingface_hub.HfApi's real method signature."""
    import inspect

    from huggingface_hub import HfApi

    calls = []

    class Recording(FakeHfApi):
        def __getattribute__(self, name):
            attr = object.__getattribute__(self, name)
            if callable(attr) and hasattr(HfApi, name) and not name.startswith("_"):
                def wrapped(*a, **kw):
                    calls.append((name, a, kw))
                    return attr(*a, **kw)
                return wrapped
            return attr

    store = ck.HFStore("me/run", token="t", keep=1, api=Recording(tmp_path / "hub"), cache_dir=tmp_path / "c")
    store.save(1, {"x": torch.ones(1)})
    store.save(2, {"x": torch.ones(1)})
    assert store.load_latest()[0] == 2
    assert {c[0] for c in calls} == {"repo_info", "create_repo", "whoami", "upload_folder", "list_repo_files",
                                     "hf_hub_download", "delete_folder"}
    for name, a, kw in calls:
        inspect.signature(getattr(HfApi, name)).bind(None, *a, **kw)


# ---------------------------------------------------------------- Hugging Face store, Hub faults

@pytest.mark.parametrize("mode", ["refused", "401", "403", "500", "hang"])
def test_hf_store_fails_at_start_in_one_line(mode, tmp_path, monkeypatch, hub_online):
    """The real client against a failing local Hub: one HubError line saying why and what to set
    instead, no chained traceback, no token; 401/403 are not retried (a retry cannot fix them)."""
    from huggingface_hub import HfApi

    from fake_hub import FakeHub, closed_port
    from shared import hub

    monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(ck.time, "sleep", lambda s: None)  # the retry back-off, not the client's timeout
    token = "hf_fakeTokenThatMustNeverBePrinted"
    server = None if mode == "refused" else FakeHub(mode).__enter__()
    try:
        api = HfApi(endpoint=closed_port() if server is None else server.url, token=token)
        start = time.monotonic()
        with pytest.raises(hub.HubError) as e:
            ck.HFStore("someone/ckpts", token=token, api=api, retries=2, cache_dir=tmp_path)
        assert time.monotonic() - start < 8
    finally:
        if server is not None:
            server.__exit__()
    msg = str(e.value)
    assert "\n" not in msg and token not in msg
    assert msg.startswith("checkpoint store hf:someone/ckpts cannot start: ")
    assert 'CHECKPOINT_DIR = "auto"' in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__
    expected = {"refused": "no network", "hang": "no network", "401": "HF_TOKEN was rejected",
                "403": "no write access to someone/ckpts", "500": "the Hub answered 500"}[mode]
    assert expected in msg
    if server is not None:
        assert len(server.requests) == (1 if mode in ("401", "403") else 2)


# ---------------------------------------------------------------- pruning around damaged checkpoints

@pytest.mark.parametrize("how", ["flip", "truncate", "no_manifest", "missing_file"])
def test_damaged_newer_checkpoints_never_cost_the_last_good_one(tmp_path, how):
    """keep=2; 300 and 400 damaged; the run resumes from 200 and writes 250: neither 250 nor 200 may go."""
    store = ck.LocalStore(tmp_path, keep=2)
    for t in (100, 200, 300, 400):
        store.save(t, {"t": torch.tensor([t])})
    assert [c.tokens for c in store.list()] == [300, 400]
    store.save(200, {"t": torch.tensor([200])})  # still there: 200 300 400 -> keep-2 prunes nothing new
    names = {c.tokens: Path(c.path) for c in store.list()}
    for t in (300, 400):
        _damage(names[t], how)
    fresh = ck.LocalStore(tmp_path, keep=2)  # a new session
    with pytest.warns(RuntimeWarning, match=r"step-000000000400.*step-000000000300.*resuming from step-000000000200"):
        tokens, state = fresh.load_latest()
    assert tokens == 200 and state["t"].item() == 200
    fresh.save(250, {"t": torch.tensor([250])})
    # only verified checkpoints count towards keep: 200 and 250 both stay; the damaged ones are newer
    # than every verified one, so nothing supersedes them yet and they stay too
    assert [c.tokens for c in fresh.list()] == [200, 250, 300, 400]
    again = ck.LocalStore(tmp_path, keep=2)
    with pytest.warns(RuntimeWarning, match="resuming from step-000000000250"):
        assert again.load_latest()[0] == 250
    # the resumed run rewrites 300 under the damaged one's name: 200 drops out of keep-2,
    # and the damaged 400 is still ahead of every verified checkpoint
    again.save(300, {"t": torch.tensor([300])})
    assert [c.tokens for c in again.list()] == [250, 300, 400]
    # 500 supersedes the damaged 400, which goes; keep-2 of the verified ones remain
    again.save(500, {"t": torch.tensor([500])})
    assert [c.tokens for c in again.list()] == [300, 500]
    assert ck.LocalStore(tmp_path).load_latest()[0] == 500


def test_damaged_checkpoint_between_good_ones_does_not_count_towards_keep(tmp_path):
    store = ck.LocalStore(tmp_path, keep=2)
    for t in (100, 200, 300):
        store.save(t, {"t": torch.tensor([t])})
    _damage(Path(store.list()[-1].path), "flip")  # 300
    store = ck.LocalStore(tmp_path, keep=2)
    store.save(250, {"t": torch.tensor([250])})
    assert [c.tokens for c in store.list()] == [200, 250, 300]  # 300 does not push 200 out
    store.save(400, {"t": torch.tensor([400])})  # supersedes the damaged 300
    assert [c.tokens for c in store.list()] == [250, 400]


def test_no_usable_checkpoint_says_starting_from_scratch(tmp_path):
    store = ck.LocalStore(tmp_path, keep=3)
    for t in (1, 2):
        store.save(t, {"t": torch.tensor([t])})
    for c in store.list():
        _damage(Path(c.path), "truncate")
    with pytest.warns(RuntimeWarning) as record:
        assert store.load_latest() is None
    messages = [str(w.message) for w in record]
    assert len(messages) == 1, messages
    assert messages[0].startswith("no usable checkpoint: starting from scratch")
    assert "step-000000000001" in messages[0] and "step-000000000002" in messages[0]
    assert "bytes" in messages[0] and "using the previous one" not in messages[0]
    # a new good checkpoint at fewer tokens than the damaged ones survives pruning
    store = ck.LocalStore(tmp_path, keep=1)
    store.save(0, {"t": torch.tensor([0])})
    assert [c.tokens for c in store.list()] == [0, 1, 2]
    with pytest.warns(RuntimeWarning, match="resuming from step-000000000000"):
        assert ck.LocalStore(tmp_path).load_latest()[0] == 0


def test_pruning_reuses_verdicts_until_a_folder_changes(tmp_path, monkeypatch):
    """A save re-hashes no checkpoint already checked (the new one was hashed as it was written);
    a checkpoint whose files changed is checked again; a resume always verifies afresh."""
    store = ck.LocalStore(tmp_path, keep=2)
    for t in (1, 2, 3):
        store.save(t, {"x": torch.full((100,), float(t))})
    hashed = []
    real = ck._sha256
    monkeypatch.setattr(ck, "_sha256", lambda p: hashed.append(Path(p).parent.name) or real(p))
    store.save(4, {"x": torch.zeros(100)})
    assert hashed and all(n.startswith(".tmp-") for n in hashed), hashed  # only the new one, as written
    _damage(Path(store.list()[-1].path), "truncate")  # 4
    hashed.clear()
    store.save(5, {"x": torch.ones(100)})
    # 4 was checked again (its size no longer matches), found damaged and superseded by 5; the
    # recorded verdict on 3 was reused without hashing, and 3 counts towards keep=2
    assert [c.tokens for c in store.list()] == [3, 5]
    assert all(n.startswith(".tmp-") for n in hashed), hashed
    hashed.clear()
    assert store.load_latest()[0] == 5 and "step-000000000005" in hashed


def test_hf_store_prunes_by_the_same_rule(tmp_path):
    api = FakeHfApi(tmp_path / "hub")
    hub = tmp_path / "hub/me/run/ckpt"

    def session(n):  # a new process: a new store with an empty cache
        return ck.HFStore("me/run", token="hf_fake", subfolder="ckpt", keep=1, api=api, cache_dir=tmp_path / f"c{n}")

    first = session(1)
    for t in (10, 20):
        first.save(t, {"t": torch.tensor([t])})
    assert [c.tokens for c in first.list()] == [20]
    _damage(hub / "step-000000000020", "flip")
    second = session(2)
    with pytest.warns(RuntimeWarning, match="no usable checkpoint: starting from scratch.*step-000000000020"):
        assert second.load_latest() is None
    second.save(5, {"t": torch.tensor([5])})  # fewer tokens than the damaged one: it stays, 5 stays
    assert [c.tokens for c in second.list()] == [5, 20]
    third = session(3)
    with pytest.warns(RuntimeWarning, match="resuming from step-000000000005"):
        assert third.load_latest()[0] == 5
    third.save(15, {"t": torch.tensor([15])})  # keep=1: 5 goes, the damaged 20 is still ahead
    assert [c.tokens for c in third.list()] == [15, 20]
    third.save(25, {"t": torch.tensor([25])})  # supersedes the damaged 20
    assert [c.tokens for c in third.list()] == [25]
    assert session(4).load_latest()[0] == 25


def test_hf_staging_keeps_a_checkpoint_saved_below_an_earlier_one(tmp_path):
    """The local staging copy (keep=1) must not prune the checkpoint it is about to upload."""
    store = ck.HFStore("me/run", token="hf_fake", keep=2, api=FakeHfApi(tmp_path / "hub"), cache_dir=tmp_path / "c")
    store.save(30, {"t": torch.tensor([30])})
    assert store.save(20, {"t": torch.tensor([20])}).startswith("hf://")  # uploaded, not a local fallback
    assert [c.tokens for c in store.list()] == [20, 30]
