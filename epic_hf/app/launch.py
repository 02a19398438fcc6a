"""Serving the page: gradio's launch with the settings an offline, always-answering app needs.

Why not ``blocks.launch()`` as it comes: by default gradio would take a web font theme and no upload
limit; here the theme names system fonts only (:func:`~epic_hf.app.offline.offline_theme`), uploads
above :data:`~epic_hf.app.views.MAX_UPLOAD_BYTES` are refused by the server itself, the examples'
folder is served, and a share link is made only when asked. ``host``/``port`` left as None fall back
to gradio's ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` (what a Space sets), then 127.0.0.1:7860.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .offline import import_gradio, offline_theme
from .page import build_app
from .views import MAX_UPLOAD_BYTES, AppExplainer

logger = logging.getLogger(__name__)


def launch_app(explainer: AppExplainer, *, host: str | None = None, port: int | None = None, share: bool = False,
               title: str | None = None, block: bool = True, audit: str | Path | None = None,
               **launch_kwargs: Any) -> Any:  # Any: a gradio.Blocks (gradio, an optional extra, is imported at run time)
    """Build and serve the app of ``explainer``; returns the running ``gradio.Blocks``.

    ``block=False`` returns as soon as the server answers (tests, notebooks); ``blocks.local_url``
    is its address and ``blocks.close()`` stops it. ``audit``: an audit's folder, shown in an Audit tab.
    Other keyword arguments go to gradio's ``launch``.
    """
    gr = import_gradio()
    started = time.perf_counter()
    blocks = build_app(explainer, title=title, audit=audit)
    allowed = [blocks.epic_examples_dir] if blocks.epic_examples_dir else []
    # Any: keyword arguments for gradio's launch
    options: dict[str, Any] = dict(server_name=host, server_port=port, share=share, theme=offline_theme(gr),
                                   max_file_size=MAX_UPLOAD_BYTES, allowed_paths=allowed, show_error=True,
                                   prevent_thread_lock=not block, quiet=not block)
    options.update(launch_kwargs)
    if not block:
        blocks.launch(**options)
        logger.info("the app serves %s (ready in %.2f s)", blocks.local_url, time.perf_counter() - started)
        return blocks
    logger.info("starting the app (Ctrl-C stops it)")
    blocks.launch(**options)
    return blocks
