"""A Gradio app for a prototype bank, and the Hub Space that serves one (docs/app.md).

* :func:`launch_app` (``EpicExplainer.launch``, ``epic-hf app``): a local page that explains any
  uploaded image with the bank, exactly, offline;
* :func:`push_space` (``EpicExplainer.push_to_hub(..., space=...)``, ``epic-hf space``): a Gradio
  Space on the Hub whose ``app.py`` loads the bank from its model repo at a pinned commit.

One job per module: ``offline`` (importing gradio with no network needs), ``views`` (what is shown,
as plain values), ``page`` (the components), ``launch`` (serving), ``space`` (the Space's files and
the push). ``gradio`` is an optional extra, imported only when an app is built: importing this
package needs nothing beyond the core.
"""

from .launch import launch_app
from .offline import INSTALL_HINT, OFFLINE_ENVIRONMENT, AppUnavailableError, import_gradio, offline_theme
from .page import build_app
from .space import push_space, space_files

__all__ = [
    "INSTALL_HINT",
    "OFFLINE_ENVIRONMENT",
    "AppUnavailableError",
    "build_app",
    "import_gradio",
    "launch_app",
    "offline_theme",
    "push_space",
    "space_files",
]
