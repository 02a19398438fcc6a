"""Gradio, imported only here and only when an app is asked for, set up to work with no network.

Why a module of its own: ``gradio`` is an optional extra (``pip install "epic_hf[app]"``), and it
reads some of its settings from the environment once, at import time. So the settings are put in
the environment first, then gradio is imported; a missing gradio becomes one line saying how to
install it.

What "offline" takes, and what this module sets (only where the user has not set it already):

* ``GRADIO_ANALYTICS_ENABLED=False``: no usage analytics and no check for a newer gradio;
* ``HF_HUB_DISABLE_TELEMETRY=1``: no telemetry pings from ``huggingface_hub``;
* fonts: gradio's themes name web fonts; :func:`offline_theme` names system fonts only, so the page
  asks no font server for anything;
* a share link (a tunnel through gradio's servers) is made only when ``share=True`` is passed.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from ..errors import EpicError

#: The environment an app runs with; :func:`import_gradio` sets each one that is not set yet.
OFFLINE_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}
INSTALL_HINT = 'the app needs gradio: pip install "epic_hf[app]"'
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Arial", "sans-serif")
SYSTEM_MONO = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")


class AppUnavailableError(EpicError, ImportError):
    """gradio is not installed: the message says how to install the ``app`` extra."""


def import_gradio() -> ModuleType:
    """The ``gradio`` module, imported with the offline environment in place."""
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    try:
        import gradio
    except ImportError as error:
        raise AppUnavailableError(f"{INSTALL_HINT} ({error})") from None
    return gradio


def offline_theme(gr: ModuleType) -> Any:  # Any: a gradio theme (gradio is imported at run time)
    """gradio's default theme with system fonts instead of web fonts: the page loads nothing from outside."""
    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(SYSTEM_MONO))
