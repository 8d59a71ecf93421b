"""A scripted LLM API on 127.0.0.1 for the real `anthropic` and `openai` clients to talk to.

POST /v1/messages answers in the Anthropic Messages shape, POST /v1/chat/completions in the OpenAI
Chat Completions shape. Each request takes the next step of `script` ("401", "429", "500", "500-retry-now", "hang",
("text", answer)); when the script is used up, `responder(prompt)` writes the answer. It records
every request (path, headers, JSON body).
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

from local_server import LocalServer


class FakeLLM(LocalServer):
    """`with FakeLLM(responder, script=["429"]) as api:` -> api.url, api.requests."""

    def __init__(self, responder, script=(), hang_s: float = 5.0):
        self.responder, self.script, self.hang_s = responder, list(script), hang_s
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status, payload, headers=()):
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with api._lock:
                    api.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                    step = api.script.pop(0) if api.script else None
                if self.path not in ("/v1/messages", "/v1/chat/completions"):
                    return self._send(404, {"error": {"type": "not_found", "message": self.path}})
                if step == "hang":
                    api._stop.wait(api.hang_s)
                    return
                if step == "429":
                    return self._send(429, {"type": "error", "error": {"type": "rate_limit_error",
                                      "message": "slow down"}}, [("retry-after", "0")])
                if step == "401":
                    return self._send(401, {"type": "error", "error": {"type": "authentication_error",
                                      "message": "invalid x-api-key"}})
                if step in ("500", "500-retry-now"):  # the second says retry-after: 0 (no back-off wait)
                    return self._send(500, {"type": "error", "error": {"type": "api_error", "message": "boom"}},
                                      [("retry-after", "0")] if step == "500-retry-now" else ())
                prompt = body["messages"][-1]["content"]
                text = step[1] if isinstance(step, tuple) else api.responder(prompt)
                if self.path == "/v1/messages":
                    return self._send(200, {
                        "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
                        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                        "stop_sequence": None, "usage": {"input_tokens": len(prompt) // 4,
                                                         "output_tokens": len(text) // 4}})
                return self._send(200, {
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4,
                              "total_tokens": (len(prompt) + len(text)) // 4}})

        self._serve(Handler)
