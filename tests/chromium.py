"""Headless Chromium driven over the DevTools protocol, for tests that look at a page as a visitor would.

Chromium runs with --remote-debugging-pipe: JSON messages, each ended by a NUL byte, written to its fd 3
and read from its fd 4; so no websocket client and no port are needed. `Browser.open` loads a page and
returns a `Page` that evaluates JavaScript in it, takes screenshots, and records every console message
and uncaught exception (`page.problems`). `executable()` is None when no chromium is installed.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path


def executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


SKIP_REASON = "no chromium on PATH: install it with `apt-get install chromium` (.ci/run does so before the tests)"


class BrowserError(RuntimeError):
    """The browser failed, timed out, or a page's script threw where the test expected a value."""


class Browser:
    """One headless Chromium process; use as a context manager."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900, timeout: float = 60.0):
        self.timeout, self._next, self._buf, self._events = timeout, 0, b"", []
        import fcntl

        to_chrome, self._w = os.pipe()
        self._r, from_chrome = os.pipe()
        # the child's ends moved above fd 10 first, so putting them on 3 and 4 cannot overwrite one another
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome, from_chrome)]
        for fd in (to_chrome, from_chrome):
            os.close(fd)

        def fds():  # in the child: fd 3 is what chromium reads, fd 4 what it writes
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [executable(), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in high:
            os.close(fd)
        self.width, self.height = width, height

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=10)
            except (BrowserError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass

    # ------------------------------------------------------------------ protocol
    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise BrowserError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium exited (code {self.proc.poll()})")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, ev in enumerate(self._events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return self._events.pop(i)
            self._events.append(self._read(deadline))

    def open(self, url: str) -> "Page":
        """A new tab showing `url`, after its load event."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False}, session)
        page.goto(url)
        return page


class Page:
    """A tab: evaluate script, wait for a condition, screenshot; `problems` lists console errors and
    uncaught exceptions seen so far (and `console` every console message)."""

    def __init__(self, browser: Browser, target: str, session: str):
        self.browser, self.target, self.session = browser, target, session

    def _drain(self) -> None:
        self.browser.call("Runtime.evaluate", {"expression": "0"}, self.session)  # flushes pending events

    def _mine(self, method: str) -> list[dict]:
        return [e for e in self.browser._events if e.get("sessionId") == self.session and e.get("method") == method]

    @property
    def console(self) -> list[str]:
        self._drain()
        return [" ".join(str(a.get("value", a.get("description", ""))) for a in e["params"]["args"])
                for e in self._mine("Runtime.consoleAPICalled")]

    @property
    def problems(self) -> list[str]:
        self._drain()
        out = [e["params"]["exceptionDetails"].get("exception", {}).get("description")
               or e["params"]["exceptionDetails"].get("text", "exception")
               for e in self._mine("Runtime.exceptionThrown")]
        out += [f"console.{e['params']['type']}: " + " ".join(str(a.get("value", a.get("description", "")))
                                                              for a in e["params"]["args"])
                for e in self._mine("Runtime.consoleAPICalled") if e["params"]["type"] in ("error", "assert")]
        out += [f"log {e['params']['entry']['level']}: {e['params']['entry']['text']}"
                for e in self._mine("Log.entryAdded") if e["params"]["entry"]["level"] == "error"]
        return out

    def goto(self, url: str) -> None:
        self.browser._events = [e for e in self.browser._events if e.get("sessionId") != self.session]
        self.browser.call("Page.navigate", {"url": url}, self.session)
        self.browser.wait_event("Page.loadEventFired", self.session)

    def eval(self, expression: str, await_promise: bool = True):
        """The value of a JavaScript expression (JSON-serialisable), or BrowserError naming what it threw."""
        res = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                     "awaitPromise": await_promise}, self.session)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise BrowserError(d.get("exception", {}).get("description") or d.get("text"))
        return res["result"].get("value")

    def texts(self, selector: str) -> list[str]:
        """textContent of every element matching the CSS selector, in document order."""
        return self.eval(f"Array.from(document.querySelectorAll({json.dumps(selector)})).map(e => e.textContent)")

    def count(self, selector: str) -> int:
        return self.eval(f"document.querySelectorAll({json.dumps(selector)}).length")

    def wait_for(self, expression: str, timeout: float = 20.0):
        """Poll until the expression is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for: {expression}")
            time.sleep(0.05)

    def accessible_text(self, selector: str) -> str:
        """The text a screen reader reads for the first element matching selector, CSS-generated content
        (counters) included, which the DOM does not hold."""
        found = self.browser.call("Runtime.evaluate", {"expression": f"document.querySelector({json.dumps(selector)})"},
                                  self.session)["result"]
        if "objectId" not in found:
            raise BrowserError(f"no element matches {selector}")
        self.browser.call("Accessibility.enable", session=self.session)
        nodes = self.browser.call("Accessibility.getPartialAXTree",
                                  {"objectId": found["objectId"], "fetchRelatives": True}, self.session)["nodes"]
        by_id = {n["nodeId"]: n for n in nodes}

        def text(node) -> str:  # StaticText below node, through ignored wrappers such as ::before
            if node.get("role", {}).get("value") == "StaticText":
                return node.get("name", {}).get("value", "")
            return "".join(text(by_id[c]) for c in node.get("childIds", []) if c in by_id)

        return text(nodes[0])

    def screenshot(self, path: Path, full_page: bool = True, max_height: int = 12000) -> Path:
        """A PNG of the viewport, or of the whole page down to max_height pixels."""
        params = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            w, h = self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": max(w, 1), "height": min(max(h, 1), max_height), "scale": 1}
        data = self.browser.call("Page.captureScreenshot", params, self.session)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})
