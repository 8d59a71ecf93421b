"""Hub faults in one line: the real huggingface_hub client against a local server that refuses,
answers 401/403/500 or hangs; each failure is classified, bounded in time, and never shows the token."""
from __future__ import annotations

import time

import pytest

from fake_hub import FakeHub, closed_port
from shared import hub

pytestmark = pytest.mark.usefixtures("hub_online")

TOKEN = "hf_fakeTokenThatMustNeverBePrinted"
REASONS = {
    "401": "HF_TOKEN was rejected",
    "403": "no write access to someone/sae",
    "500": "the Hub answered 500",
    "hang": "no network or the Hub is unreachable (the connection timed out)",
    "refused": "no network or the Hub is unreachable (could not connect)",
}


@pytest.fixture
def endpoint(request, monkeypatch, hub_online):
    """(url, FakeHub or None) for the mode in request.param; the probe timeout cut to 1 s."""
    monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 1.0)
    if request.param == "refused":
        yield closed_port(), None
        return
    with FakeHub(request.param) as server:
        yield server.url, server


@pytest.mark.parametrize("endpoint", list(REASONS), indirect=True)
def test_each_fault_has_its_reason(endpoint, request):
    from huggingface_hub import HfApi

    url, server = endpoint
    mode = request.node.callspec.params["endpoint"]
    api = HfApi(endpoint=url, token=TOKEN)
    start = time.monotonic()
    with pytest.raises(Exception) as e:
        hub.ensure_repo(api, "someone/sae", token=TOKEN)
    assert time.monotonic() - start < 5
    reason = hub.failure_reason(e.value, "someone/sae", TOKEN)
    assert reason.startswith(REASONS[mode]), reason
    assert "\n" not in reason and TOKEN not in reason
    if server is not None:
        assert server.requests and all(r.startswith("GET /api/models/someone/sae") for r in server.requests)


def test_visibility_is_told_truthfully():
    assert hub.visibility(True, True, created=True) == "(private)"
    assert hub.visibility(False, False, created=True) == "(public)"
    note = hub.visibility(False, True, created=False)  # asked private, the repo exists public
    assert note.startswith("(public: the repo already exists as public") and "HF_PRIVATE=True" in note


@pytest.mark.parametrize("endpoint", ["403", "refused"], indirect=True)
def test_upload_files_records_a_fault(endpoint, tmp_path, capsys):
    from huggingface_hub import HfApi

    url, _ = endpoint
    f = tmp_path / "trace.json"
    f.write_text("{}")
    entry = hub.upload_files([f], "someone/sae", token=TOKEN, api=HfApi(endpoint=url, token=TOKEN))
    assert entry["ok"] is False and entry["repo"] == "someone/sae"
    assert entry["error"].startswith(REASONS[endpoint_mode(url, _)])
    assert TOKEN not in capsys.readouterr().err + str(entry)
    assert hub.upload_files([f], "") == {}


def endpoint_mode(url, server):
    return "refused" if server is None else server.mode


def test_both_upload_paths_print_the_same_guard_lines(tmp_path, monkeypatch, capsys):
    """An SAE export (saes.export.upload_export) and a run's result files (hub.upload_files) go through one
    guard: nothing asked, no token, a repo without its user part and a Hub fault each print the same one
    line on both paths and record the same entry; neither raises."""
    from huggingface_hub import HfApi

    from shared.saes import export

    monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 1.0)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    folder = tmp_path / "blocks.3.hook_resid_post"
    folder.mkdir()
    (folder / "cfg.json").write_text("{}")  # an export folder, as far as the upload is concerned
    cases = {"nothing asked": ("", TOKEN), "no token": ("someone/sae", None), "no user part": ("sae", TOKEN),
             "Hub fault": ("someone/sae", TOKEN)}
    seen = {}
    with FakeHub("500") as server:
        api = HfApi(endpoint=server.url)
        for case, (repo, token) in cases.items():
            before = len(server.requests)
            sae_entry = export.upload_export({3: folder}, repo, token=token, api=api).get("3", {})
            sae_out = capsys.readouterr()
            file_entry = hub.upload_files([folder / "cfg.json"], repo, token=token, api=api)
            file_out = capsys.readouterr()
            assert (sae_out.out, sae_out.err) == (file_out.out, file_out.err), case
            assert len((sae_out.out + sae_out.err).strip().splitlines()) == 1, (case, sae_out)
            assert sae_entry == file_entry, case
            assert TOKEN not in sae_out.out + sae_out.err + str(sae_entry), case
            seen[case] = (sae_out.out + sae_out.err).strip()
            assert (len(server.requests) > before) == (case == "Hub fault"), case  # only a fault got as far as the Hub
    assert seen["nothing asked"].startswith("upload skipped: HF_REPO is empty")
    assert seen["no token"].startswith("upload to someone/sae skipped: HF_REPO is set but HF_TOKEN")
    assert seen["no user part"].startswith('upload to sae skipped: HF_REPO has no user part: set HF_REPO = "<user>/sae"')
    assert seen["Hub fault"] == f"upload to someone/sae failed: the Hub answered 500 (a server error: try again later); " \
                               f"the files are kept at {folder}"
