import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from clean_checkout import changes, git_status  # noqa: E402


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

# -- the suite writes only into temporary folders (tests/clean_checkout.py) ---------------------------
_ROOT = Path(__file__).resolve().parent.parent
_CHECKOUT = pytest.StashKey["frozenset[str] | None"]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_CHECKOUT] = git_status(_ROOT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if it changed ``git status``: a test wrote into the checkout instead of a tmp_path."""
    changed = changes(session.config.stash.get(_CHECKOUT, None), git_status(_ROOT))
    if not changed:
        return
    message = ("the test run changed the checkout (tests must write only into temporary folders; or the checkout "
               "was edited while the tests ran):\n" + "\n".join(changed))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "checkout changed", red=True)
        reporter.write_line(message)
    else:
        sys.stderr.write(message + "\n")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
