"""Waiting for an app served by another process (``epic-hf app``, a Space's ``app.py``) to answer."""

from __future__ import annotations

import subprocess
import time


def wait_for_client(process: subprocess.Popen, url: str, seconds: float, what: str = "the app"):
    """A ``gradio_client.Client`` of ``url`` once it answers; fails with the process's output if it died first."""
    from gradio_client import Client

    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, process.stdout.read() if process.stdout else "the process exited"
        try:
            return Client(url, verbose=False)
        except Exception:
            assert time.monotonic() < deadline, f"{what} never answered"
            time.sleep(0.5)
