"""The `hub_server` pytest fixture: one local Hub for the whole test session, wired into `huggingface_hub`.

Why a session fixture: the Hub client keeps process-wide state (the endpoint read from ``HF_ENDPOINT`` at import
time, a pooled HTTP session), so one server for the whole session is both the fastest and the least surprising.
Tests isolate themselves by using their own repo names.

``tests/conftest.py`` sets ``HF_ENDPOINT`` to a free loopback port *before* anything imports ``huggingface_hub``,
and this fixture starts the server on that port. When that is not possible (the port got taken meanwhile, or
``huggingface_hub`` was imported with another endpoint), `point_huggingface_hub_at` patches the copies the client
made of the endpoint at import time, so the fixture works either way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from hub_server import DEFAULT_TOKEN, LOOPBACK_HOST, HubServer


def port_reserved_by_conftest() -> int:
    """The port `tests/conftest.py` put in ``HF_ENDPOINT``, or 0 (any free port) when it points elsewhere."""
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", ""))
    if endpoint.hostname == LOOPBACK_HOST and endpoint.port:
        return endpoint.port
    return 0


def start_hub_server(token: str = DEFAULT_TOKEN) -> HubServer:
    """Start on the reserved port if still free, else on any free port (the client gets re-pointed anyway)."""
    try:
        return HubServer(port_reserved_by_conftest(), token=token).start()
    except OSError:
        return HubServer(0, token=token).start()


def point_huggingface_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, *, token: str, cache_dir: str) -> None:
    """Route every Hub call of this process (and of subprocesses) to `endpoint`, with `token` and `cache_dir`.

    Environment variables cover subprocesses and a not-yet-imported client. For an already-imported client we
    also patch what it computed at import time: `constants` (endpoint, URL template, known hosts, Xet/offline/
    telemetry flags, cache dir), the trusted-origin set used for redirects, `HfApi` instances that copied
    the old endpoint (``huggingface_hub.hf_api.api`` behind the module-level functions, ``transformers``'s
    shared instance) and ``datasets.config``'s own endpoint copies. ``datasets``' cache folder is left alone:
    pass ``cache_dir=`` to ``load_dataset`` for isolation.
    """
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")  # the local hub speaks LFS, not Xet
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HF_HUB_CACHE", cache_dir)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the local hub is reachable even without internet
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    from huggingface_hub import constants
    from huggingface_hub.hf_api import HfApi
    from huggingface_hub.utils import _http

    previous_endpoint = constants.ENDPOINT
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {LOOPBACK_HOST})
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache_dir)
    monkeypatch.setattr(constants, "HUGGINGFACE_HUB_CACHE", cache_dir)
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(endpoint)})

    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:  # `datasets` keeps its own copies of the endpoint and offline flag
        monkeypatch.setattr(datasets_config, "HF_ENDPOINT", endpoint)
        resolve_template = datasets_config.HUB_DATASETS_URL.removeprefix(previous_endpoint)
        monkeypatch.setattr(datasets_config, "HUB_DATASETS_URL", endpoint + resolve_template)
        monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets_config, "HF_DATASETS_OFFLINE", False)

    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(("huggingface_hub", "transformers", "datasets")):
            continue
        for attribute, value in list(vars(module).items()):
            if isinstance(value, HfApi) and value.endpoint == previous_endpoint:
                monkeypatch.setattr(value, "endpoint", endpoint)
            elif attribute == "ENDPOINT" and value == previous_endpoint:
                monkeypatch.setattr(module, attribute, endpoint)


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A running local Hub the real `huggingface_hub`/`transformers` clients talk to, for the whole session.

    Yields the `HubServer`: ``.url`` (the endpoint), ``.token`` (also exported as ``HF_TOKEN``), ``.repos`` and
    ``.request_log``. ``HF_HUB_CACHE`` points at a fresh temporary folder. Everything is undone and the server
    stopped at the end of the session.
    """
    server = start_hub_server()
    cache_dir = str(tmp_path_factory.mktemp("hf_hub_cache"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        point_huggingface_hub_at(monkeypatch, server.url, token=server.token, cache_dir=cache_dir)
        try:
            yield server
        finally:
            from huggingface_hub.utils import close_session

            close_session()  # drop pooled keep-alive connections to the server before it goes away
            server.stop()
