"""Writing to the Hugging Face Hub: which repo a run uploads to (`hub_repo_id`: a bare name completed
with the user's), make sure a repo exists (private unless asked otherwise) and say in one line why a
Hub call failed (no network, token rejected, no write access, Hub error); `guarded_upload`, the one
guard every upload of a run's results goes through (asked for or skipped, one line when it cannot or
did not happen, never raising).

Used by the checkpoint store (fails at start) and the final uploads (warn, keep the local files).
Duck-typed on `exc.response.status_code` and exception class names, so it works with the httpx-
and the requests-based huggingface_hub alike. Messages never contain the token.
"""
from __future__ import annotations

from typing import Any

PROBE_TIMEOUT_S = 15.0  # the first call to the Hub: a hung connection fails here, not mid-run
HUB_URL = "https://huggingface.co"


class HubError(RuntimeError):
    """A Hub call failed; str() is one line saying why and what to do (never the token)."""


def status_code(exc: BaseException) -> int | None:
    """The HTTP status behind `exc` (or the exception it was raised from), else None."""
    for e in _chain(exc):
        code = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def failure_reason(exc: BaseException, repo_id: str | None = None, token: str | None = None) -> str:
    """Why a Hub call failed, in a few words a user can act on."""
    code = status_code(exc)
    where = repo_id or "the repo"
    if code == 401:
        return "HF_TOKEN was rejected (401): create a write token at https://huggingface.co/settings/tokens"
    if code == 403:
        return f"no write access to {where} (403): name a repo under your own account, or use a token with write access"
    if code == 404:
        return f"{where} was not found (404)"
    if code is not None:
        return f"the Hub answered {code}" + (" (a server error: try again later)" if code >= 500 else "")
    names = {c.__name__ for e in _chain(exc) for c in type(e).__mro__}
    if "OfflineModeIsEnabled" in names:
        return "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set), so nothing is uploaded"
    if any("Timeout" in n for n in names):
        return "no network or the Hub is unreachable (the connection timed out)"
    if names & {"ConnectError", "ConnectionError", "NetworkError", "ProxyError", "SSLError", "OSError"}:
        return "no network or the Hub is unreachable (could not connect)"
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    if token:
        text = text.replace(str.__str__(token), "***")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def ensure_repo(api: Any, repo_id: str, *, private: bool = True, token: str | None = None) -> tuple[bool | None, bool]:
    """(is the repo private, was it created now): look it up (with a timeout), create it private-by-default
    when missing. An existing repo keeps its visibility; the caller reports it."""
    try:
        info = api.repo_info(repo_id, repo_type="model", timeout=PROBE_TIMEOUT_S, token=token)
    except Exception as e:  # noqa: BLE001 - only "not found" means: create it
        if status_code(e) != 404:
            raise
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
        return private, True
    return getattr(info, "private", None), False


_WHOAMI: dict = {}  # (endpoint, token) -> whoami's answer, for check_write_access


def check_write_access(api: Any, repo_id: str, token: str | None = None) -> str:
    """The token's user name, once it is shown that the token may write to `repo_id`: its namespace is
    the token's user or one of its organisations (not read-only there), and the token is not a read
    token (nor a fine-grained one without repo.write there). HubError in one line otherwise; a
    rejected token raises the client's error (failure_reason: 401)."""
    key = (getattr(api, "endpoint", None), str.__str__(token) if token else None)
    if key not in _WHOAMI:  # the Hub rate-limits whoami: once per token and process
        _WHOAMI[key] = api.whoami(token=token)
    me = _WHOAMI[key]
    user = me.get("name")
    namespace = repo_id.split("/")[0]
    orgs = {o.get("name"): o for o in me.get("orgs") or [] if isinstance(o, dict)}
    if namespace != user and namespace not in orgs:
        raise HubError(f"{repo_id} is under {namespace}, not under HF_TOKEN's account {user} or one of its "
                       f"organisations: the Hub would refuse the writes. Set HF_USERNAME = \"{user}\" (or a repo "
                       f"under {user}), or use a token of {namespace}")
    if namespace in orgs and orgs[namespace].get("roleInOrg") == "read":
        raise HubError(f"HF_TOKEN's account {user} may only read in the organisation {namespace}: name a repo "
                       f"under {user}, or ask for the write role in {namespace}")
    access = ((me.get("auth") or {}).get("accessToken") or {})
    role = access.get("role")
    if role == "read":
        raise HubError(f"HF_TOKEN is a read-only token, so nothing can be written to {repo_id}: create a token "
                       "with the write role at https://huggingface.co/settings/tokens and set it as HF_TOKEN")
    if role == "fineGrained":
        scoped = (access.get("fineGrained") or {}).get("scoped") or []
        allowed = any("repo.write" in (entry.get("permissions") or [])
                      and (entry.get("entity") or {}).get("name") in (namespace, repo_id) for entry in scoped)
        if not allowed:
            raise HubError(f"HF_TOKEN is a fine-grained token without write access to repos of {namespace}: "
                           "give it \"Write access to contents/settings of all repos\" under that account, or "
                           "use a write token")
    return user


def repo_url(api: Any, repo_id: str) -> str:
    """The repo's web address on the endpoint `api` talks to."""
    endpoint = getattr(api, "endpoint", None)
    return f"{(endpoint if isinstance(endpoint, str) else HUB_URL).rstrip('/')}/{repo_id}"


def file_url(api: Any, repo_id: str, path: str) -> str:
    """Where a browser reads a file of the repo's main branch (the viewers' ?src=)."""
    from urllib.parse import quote

    return f"{repo_url(api, repo_id)}/resolve/main/{quote(path)}"


def visibility(is_private: bool | None, wanted: bool, created: bool) -> str:
    """How the repo will be seen, truthfully: '(private)', '(public)', or a note when an existing repo
    differs from what was asked (its visibility is never changed here)."""
    if is_private is None:
        return "(visibility unknown)"
    seen = "private" if is_private else "public"
    if created or is_private == wanted:
        return f"({seen})"
    return (f"({seen}: the repo already exists as {seen}; HF_PRIVATE={wanted} does not change an existing "
            f"repo, change it in the repo's settings)")


UPLOAD_SKIPPED = ('upload skipped: HF_REPO is empty (set HF_REPO = "<user>/<name>" to upload to a private '
                  "Hugging Face repo)")


def guarded_upload(repo_id: str | None, pushes: dict, *, token: str | None = None) -> dict[str, dict]:
    """The one guard every upload of a run's results goes through (an SAE export, a catalog, a trace):
    uploads happen only when asked and never raise, so a finished run keeps its files whatever the Hub does.

    pushes: key -> (the local path the files stay at, push(token) -> the entry's fields, e.g. {"url": ...}).
    Returns key -> {"ok": True, "repo", **fields} or {"ok": False, "repo", "error"}; {} when repo_id is
    empty (one line says so; nothing is contacted). No HF_TOKEN, or a repo without its user part: one line
    and every entry says why. A Hub fault: one line per push that failed, its entry says why (failure_reason).
    Messages never hold the token."""
    import os
    import sys

    from . import runtime

    if not repo_id:
        print(UPLOAD_SKIPPED)
        return {}
    token = runtime.hf_token(token)
    kept = os.path.commonpath([str(path) for path, _ in pushes.values()]) if pushes else "."
    if not token:
        error = "HF_TOKEN not found"
        print(f"upload to {repo_id} skipped: HF_REPO is set but HF_TOKEN (a Hugging Face write token) was not found. "
              f"{runtime.how_to_set('HF_TOKEN')} The files are kept at {kept}", file=sys.stderr)
    elif "/" not in repo_id:
        error = f'HF_REPO has no user part: set HF_REPO = "<user>/{repo_id}"'
        print(f"upload to {repo_id} skipped: {error}. The files are kept at {kept}", file=sys.stderr)
    else:
        error = None
    out = {}
    for key, (path, push) in pushes.items():
        entry: dict = {"ok": False, "repo": repo_id}
        if error:
            entry["error"] = error
        else:
            try:
                fields = push(token)
                entry["ok"] = True
                entry.update(fields)
            except Exception as e:  # noqa: BLE001 - a Hub fault must not cost the finished run
                entry["error"] = failure_reason(e, repo_id, token)
                print(f"upload to {repo_id} failed: {entry['error']}; the files are kept at {path}", file=sys.stderr)
        out[key] = entry
    return out


def upload_files(files, repo_id: str | None, *, private: bool = True, token: str | None = None,
                 path_in_repo: str = "", api: Any = None) -> dict:
    """Upload a run's result files (a feature catalog, a trace, its HTML) to `repo_id`/`path_in_repo`
    in one commit behind the upload guard (guarded_upload: never raises): {"ok": True, "repo", "url",
    "files", "private", "file_urls" (what a browser reads)} or {"ok": False, "repo", "error"}; {} when
    repo_id is empty (uploads happen only when asked). A missing repo is created private unless
    private=False."""
    from pathlib import Path

    files = [Path(f) for f in files]
    dest = path_in_repo.strip("/")

    def push(token: str) -> dict:
        from huggingface_hub import CommitOperationAdd, HfApi

        hub_api = api if api is not None else HfApi(token=token)
        is_private, created = ensure_repo(hub_api, repo_id, private=private, token=token)
        print(f"uploading {len(files)} files to {repo_url(hub_api, repo_id)} {visibility(is_private, private, created)}")
        ops = [CommitOperationAdd(path_in_repo=f"{dest}/{f.name}" if dest else f.name, path_or_fileobj=str(f))
               for f in files]
        hub_api.create_commit(repo_id=repo_id, operations=ops, repo_type="model", token=token,
                              commit_message=f"Upload {', '.join(f.name for f in files)}")
        url = repo_url(hub_api, repo_id) + (f"/tree/main/{dest}" if dest else "")
        print(f"uploaded to {url}")
        return {"url": url, "files": [op.path_in_repo for op in ops], "private": is_private,
                "file_urls": [file_url(hub_api, repo_id, op.path_in_repo) for op in ops]}

    kept = files[0].parent if files else Path(".")
    return guarded_upload(repo_id, {"files": (kept, push)}, token=token).get("files", {})


def hub_repo_id(repo: str | None, token: str | None = None) -> str | None:
    """The repo the user asked to upload to: None when `repo` is empty (nothing is uploaded unasked);
    "user/name" as given; a bare "name" completed with the HF_USERNAME secret or the token's account.

    When the user cannot be looked up (no token, offline) the bare name is returned and
    the upload guard (guarded_upload) reports it instead of uploading.
    """
    repo = (repo or "").strip().strip("/")
    if not repo or "/" in repo:
        return repo or None
    from . import runtime

    user = runtime.get_secret("HF_USERNAME")
    if not user:
        token = runtime.hf_token(token)
        if not token:
            return repo
        try:
            from huggingface_hub import HfApi

            user = HfApi(token=str(token)).whoami()["name"]
        except Exception:  # noqa: BLE001 - offline, revoked token, ...: guarded_upload reports it
            return repo
    return f"{user}/{repo}"
