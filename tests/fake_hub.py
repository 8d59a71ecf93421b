"""A misbehaving Hugging Face Hub on 127.0.0.1 for the real huggingface_hub client to talk to:
every request answers 401, 403 or 500, or hangs past the client's timeout; `closed_port()` gives
an address that refuses connections. It counts the requests it sees."""
from __future__ import annotations

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
