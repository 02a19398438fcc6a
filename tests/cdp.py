"""A headless Chromium driven over the DevTools protocol, with the standard library only.

Why: the app tests must load the real page, upload a file through its real file input and read
what the page then shows. ``--dump-dom`` (the atlas tests) cannot upload; the DevTools protocol
can (``DOM.setFileInputFiles``). Its transport is one websocket on loopback, so a minimal
client (RFC 6455 framing: masked text frames out, plain frames in) is all that is needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: CI installs it (apt-get install chromium, see .ci/run)")
    pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")


class WebSocket:
    def __init__(self, url: str, timeout: float = 60.0) -> None:
        assert url.startswith("ws://"), url
        host_port, _, path = url[len("ws://"):].partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the browser closed the connection")
            data += chunk
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        length = len(payload)
        header = bytes([0x81])
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", length)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(length)
            if first & 0x0F == 0x9:  # ping: ignore (Chromium does not expect pongs from DevTools clients)
                continue
            message += payload
            if first & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class Browser:
    """One headless Chromium with one page; ``call`` sends a DevTools command and returns its result."""

    def __init__(self, profile_root: Path, width: int = 1280, height: int = 2200) -> None:
        self.profile = Path(tempfile.mkdtemp(dir=profile_root))
        self.process = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "--hide-scrollbars", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and self.process.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        page = next(t for t in targets if t["type"] == "page")
        self.ws = WebSocket(page["webSocketDebuggerUrl"])
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"the page never showed: {expression}")

    def close(self) -> None:
        self.ws.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)


def explain_upload(browser: Browser, url: str, image: Path) -> str:
    """Open the app at ``url``, upload ``image`` through its file input, click Explain; the decomposition's text.

    Shared by the app's browser test and ``scripts/app_screenshot.py``, so the README's picture is
    the page the test checks.
    """
    browser.call("Network.enable")
    browser.call("Page.enable")
    browser.call("Page.navigate", url=url)
    browser.wait_for("!!document.querySelector('#upload input[type=file]')")
    root = browser.call("DOM.getDocument", depth=-1, pierce=True)["root"]["nodeId"]
    node = browser.call("DOM.querySelector", nodeId=root, selector="#upload input[type=file]")["nodeId"]
    browser.call("DOM.setFileInputFiles", files=[str(image)], nodeId=node)
    browser.wait_for("!!document.querySelector('#upload img')")  # the upload arrived and is shown
    browser.evaluate("document.querySelector('#explain').click()")
    text = browser.wait_for("(() => { const d = document.querySelector('#decomposition');"
                            " return d && d.innerText.includes('logit') ? d.innerText : ''; })()")
    browser.wait_for("(() => { const i = document.querySelector('#sheet img');"
                     " return i && i.complete && i.naturalWidth > 0; })()")
    return text


def page_screenshot(browser: Browser, max_height: int = 2200) -> bytes:
    """A PNG of the page from its top to just below the sheet, 1280 pixels wide."""
    height = browser.evaluate("Math.ceil(document.querySelector('#sheet').getBoundingClientRect().bottom) + 24")
    shot = browser.call("Page.captureScreenshot", format="png",
                        clip={"x": 0, "y": 0, "width": 1280, "height": min(int(height), max_height), "scale": 1})
    return base64.b64decode(shot["data"])
