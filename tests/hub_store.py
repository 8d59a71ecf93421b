"""A Hugging Face Hub on 127.0.0.1 that works: the real huggingface_hub client creates repos and commits
files to it, and a browser reads them back at `<repo>/resolve/main/<path>` with the CORS header the real
Hub sends, so a viewer page on another origin can fetch them. A private repo's files answer 401, as on
huggingface.co for a request without a token."""
from __future__ import annotations

import base64
import json
from http.server import BaseHTTPRequestHandler

from local_server import LocalServer


class StoreHub(LocalServer):
    """`with StoreHub() as hub:` -> hub.url (the HfApi endpoint), hub.files {(repo, path): bytes},
    hub.private {repo: bool}."""

    def __init__(self):
        self.files, self.private = {}, {}
        store = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body, ctype: str = "application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.split("?")[0]
                if "/resolve/main/" in path:
                    repo, name = path.lstrip("/").split("/resolve/main/", 1)
                    if store.private.get(repo):
                        return self._send(401, {"error": "Invalid credentials"})
                    if (repo, name) in store.files:
                        return self._send(200, store.files[repo, name], "application/json")
                    return self._send(404, {"error": "Entry not found"})
                repo = path.removeprefix("/api/models/")
                if path.startswith("/api/models/") and repo in store.private:
                    return self._send(200, {"id": repo, "private": store.private[repo], "sha": "0" * 40})
                return self._send(404, {"error": "Repository not found"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/api/repos/create"):
                    ask = json.loads(body)
                    repo = f"{ask['organization']}/{ask['name']}"
                    store.private[repo] = ask.get("visibility", "private") == "private" or bool(ask.get("private"))
                    return self._send(200, {"url": f"{store.url}/{repo}", "name": repo})
                if "/preupload/" in self.path:
                    asked = json.loads(body)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in asked]})
                if "/commit/" in self.path:
                    repo = self.path.removeprefix("/api/models/").split("/commit/")[0]
                    for line in body.splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            store.files[repo, item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    oid = "0" * 40
                    return self._send(200, {"commitUrl": f"{store.url}/{repo}/commit/{oid}", "commitOid": oid})
                return self._send(404, {"error": "not here"})

            def do_OPTIONS(self):
                self._send(204, b"")

        self._serve(Handler)
