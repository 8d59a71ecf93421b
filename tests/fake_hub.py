"""Local Hugging Face Hubs on 127.0.0.1 for the real huggingface_hub client to talk to: `FakeHub`
misbehaves (every request answers 401, 403 or 500, or hangs past the client's timeout), `LocalHub`
works (repos, owners, read and write tokens, uploads and downloads); `closed_port()` gives an
address that refuses connections. Both count the requests they see."""
from __future__ import annotations

import base64
import json
import socket
from http.server import BaseHTTPRequestHandler

from local_server import LocalServer

MODES = ("401", "403", "500", "hang")


class FakeHub(LocalServer):
    """`with FakeHub("500") as hub:` -> hub.url, hub.requests (a list of "METHOD path")."""

    def __init__(self, mode: str, hang_s: float = 10.0):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {MODES}")
        self.mode, self.hang_s, self.requests = mode, hang_s, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                hub.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if hub.mode == "hang":
                    hub._stop.wait(hub.hang_s)
                    return
                body = json.dumps({"error": f"fake hub answers {hub.mode}"}).encode()
                self.send_response(int(hub.mode))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

        self._serve(Handler)


def closed_port() -> str:
    """http://127.0.0.1:<port> where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class LocalHub(LocalServer):
    """A working Hub on 127.0.0.1 for the real huggingface_hub client (point HF_ENDPOINT at `url`):
    model repos held in memory, each owned by a user and private or public; tokens that map to a
    user and a role ("write" or "read"). It answers what checkpoint stores and uploads call:
    whoami, repo info, create, README metadata validation, preupload (every file "regular"), commit
    (ndjson, all-or-nothing), tree listing and file download. A repo the token's user cannot see answers 404 as the Hub
    does; a write by a read token or to another user's repo answers 403.

        with LocalHub({"hf_alice": ("alice", "write")}) as hub:
            ... HF_ENDPOINT=hub.url, HF_TOKEN=hf_alice ...
            hub.files("alice/run-checkpoints")  # {path: bytes}
    """

    def __init__(self, tokens: dict[str, tuple[str, str]]):
        import hashlib
        import re
        import threading
        from urllib.parse import parse_qs, unquote, urlsplit

        self.tokens, self.repos, self.requests = dict(tokens), {}, []
        self._lock = threading.Lock()
        hub = self

        def sha(*parts) -> str:
            return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, body=None, headers: dict | None = None, head: bool = False):
                data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
                self.send_response(code)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _error(self, code: int, message: str, error_code: str | None = None, head: bool = False):
                headers = {"X-Error-Message": message, **({"X-Error-Code": error_code} if error_code else {})}
                self._reply(code, {"error": message}, headers, head)

            def _user(self):
                auth = self.headers.get("authorization", "")
                token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else None
                if token is None:
                    return None, None
                if token not in hub.tokens:
                    return "invalid", None
                return hub.tokens[token]

            def _repo(self, repo_id: str, user, head: bool = False):
                """The repo when `user` may see it, else a 404 sent and None."""
                repo = hub.repos.get(repo_id)
                if repo is None or (repo["private"] and repo["owner"] != user):
                    self._error(404, f"Repository Not Found for url: {self.path}", "RepoNotFound", head)
                    return None
                return repo

            def _may_write(self, repo_id: str, user, role) -> bool:
                if hub.repos.get(repo_id, {}).get("owner") != user or role != "write":
                    self._error(403, f"You don't have the rights to write to {repo_id}")
                    return False
                return True

            def _answer(self, head: bool = False):
                with hub._lock:
                    self._handle(head)

            def _handle(self, head: bool):
                hub.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                path, query = unquote(parts.path), parse_qs(parts.query)
                user, role = self._user()
                if user == "invalid":
                    return self._error(401, "Invalid credentials in Authorization header", head=head)
                if path == "/api/whoami-v2":
                    if user is None:
                        return self._error(401, "Unauthorized", head=head)
                    return self._reply(200, {"type": "user", "name": user, "fullname": user, "orgs": [],
                                             "auth": {"type": "access_token",
                                                      "accessToken": {"displayName": "test", "role": role}}})
                if path == "/api/validate-yaml" and self.command == "POST":  # a README.md's metadata: accepted
                    return self._reply(200, {"errors": [], "warnings": []})
                if path == "/api/repos/create" and self.command == "POST":
                    if user is None:
                        return self._error(401, "Unauthorized")
                    req = json.loads(body or b"{}")
                    repo_id = f"{req.get('organization') or user}/{req['name']}"
                    if repo_id.split("/")[0] != user or role != "write":
                        return self._error(403, f"You don't have the rights to create a model under the namespace "
                                                f"{repo_id.split('/')[0]}")
                    if repo_id in hub.repos:
                        return self._reply(409, {"error": "You already created this model repo",
                                                 "url": f"{hub.url}/{repo_id}"})
                    private = req.get("private", req.get("visibility", "public") == "private")
                    hub.add_repo(repo_id, private=bool(private))
                    return self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path)
                if m and self.command in ("GET", "HEAD"):
                    repo = self._repo(m.group(1), user, head)
                    if repo is not None:
                        self._reply(200, {"id": m.group(1), "modelId": m.group(1), "author": repo["owner"],
                                          "sha": repo["sha"], "private": repo["private"],
                                          "siblings": [{"rfilename": p} for p in sorted(repo["files"])]},
                                    head=head)
                    return
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
                if m and self.command == "POST":
                    repo_id, what = m.group(1), m.group(2)
                    if self._repo(repo_id, user) is None or not self._may_write(repo_id, user, role):
                        return
                    if what == "preupload":
                        files = json.loads(body)["files"]
                        return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                            "shouldIgnore": False} for f in files]})
                    files = dict(hub.repos[repo_id]["files"])
                    for line in body.splitlines():
                        item = json.loads(line)
                        key, value = item["key"], item["value"]
                        if key == "file":
                            files[value["path"]] = base64.b64decode(value["content"])
                        elif key == "deletedFile":
                            files.pop(value["path"], None)
                        elif key == "deletedFolder":
                            prefix = value["path"].rstrip("/") + "/"
                            files = {p: c for p, c in files.items() if not p.startswith(prefix)}
                        elif key != "header":
                            return self._error(400, f"the local hub does not take {key!r} commit items")
                    repo = hub.repos[repo_id]
                    repo["files"], repo["sha"] = files, sha(repo["sha"], sorted(files))
                    return self._reply(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{repo['sha']}",
                                             "commitOid": repo["sha"], "success": True})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
                if m and self.command == "GET":
                    repo = self._repo(m.group(1), user)
                    if repo is None:
                        return
                    prefix = (m.group(3) or "").strip("/")
                    recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                    entries, folders = [], set()
                    for p, content in sorted(repo["files"].items()):
                        if prefix and not p.startswith(prefix + "/"):
                            continue
                        rest = p[len(prefix) + 1:] if prefix else p
                        dirs = rest.split("/")[:-1]
                        for i in range(len(dirs) if recursive else min(1, len(dirs))):
                            folder = "/".join(filter(None, [prefix, *dirs[:i + 1]]))
                            if folder not in folders:
                                folders.add(folder)
                                entries.append({"type": "directory", "path": folder, "oid": sha(folder)})
                        if recursive or not dirs:
                            entries.append({"type": "file", "path": p, "size": len(content),
                                            "oid": hashlib.sha1(content).hexdigest()})
                    return self._reply(200, entries)
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m and self.command in ("GET", "HEAD"):
                    repo = self._repo(m.group(1), user, head)
                    if repo is None:
                        return
                    content = repo["files"].get(m.group(3))
                    if content is None:
                        return self._error(404, "Entry not found", "EntryNotFound", head)
                    return self._reply(200, content, {"Content-Type": "application/octet-stream",
                                                      "X-Repo-Commit": repo["sha"],
                                                      "ETag": f'"{hashlib.sha1(content).hexdigest()}"'}, head)
                self._error(404, f"the local hub has no route {self.command} {path}", head=head)

            def do_GET(self):
                self._answer()

            def do_HEAD(self):
                self._answer(head=True)

            do_POST = do_PUT = do_DELETE = do_GET

        self._serve(Handler)

    def add_repo(self, repo_id: str, *, private: bool = True, files: dict[str, bytes] | None = None) -> None:
        """A repo owned by the user its namespace names (created now, as another user's would be)."""
        self.repos[repo_id] = {"owner": repo_id.split("/")[0], "private": private, "files": dict(files or {}),
                               "sha": "0" * 40}

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The files of `repo_id` as they stand ({} when there is no such repo)."""
        with self._lock:
            return dict(self.repos.get(repo_id, {}).get("files", {}))
