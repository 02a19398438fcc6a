import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# huggingface_hub reads these once, at import time: set them before anything imports it, so the whole
# session talks to the local test hub (see tests/conftest_hub.py, which starts it on this very port).
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_free_loopback_port()}"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from conftest_hub import hub_server  # noqa: E402,F401 - re-exported fixture
