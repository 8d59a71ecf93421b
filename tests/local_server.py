"""The threaded 127.0.0.1 server under the tests' fake services (fake_hub, fake_llm): a free port,
quiet, started by `with`, stopped (and any hanging handler released) on exit."""
from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class LocalServer:
    """Subclasses build their request handler class and call `_serve(Handler)` in __init__."""

    def _serve(self, handler) -> None:
        self._stop = threading.Event()  # set on exit: a handler told to hang waits on it
        handler.log_message = lambda *args: None  # quiet
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @classmethod
    def for_handler(cls, handler) -> "LocalServer":
        """A server for a handler class written in a test: `with LocalServer.for_handler(H) as s: s.url`."""
        server = cls()
        server._serve(handler)
        return server

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
