"""The package's few type aliases: where a value is JSON, and where a library gives no type.

``JSONValue`` is what ``json`` reads and writes. ``JSONDict`` is a JSON object as the package
passes it around (settings, reports, model cards, atlas data, checkpoint and lock records): its
values are ``JSONValue``\\ s, but it is ``dict[str, Any]``, because the readers index nested values
directly (``values["dataset"]["split"]``) and build these dicts from ``dataclasses.asdict`` and
``json.loads``, whose results are ``Any`` already; a recursive union would force a ``cast`` at
every read and check nothing more. ``ImageProcessor`` is ``Any``: the package calls processors of
every family and reads their family's own settings (``size``, ``crop_size``, ``do_rescale``, timm's
``data_config``), which no common base class declares with the types each family gives them.
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: A JSON value, as ``json.loads`` returns it and ``json.dumps`` takes it.
JSONValue: TypeAlias = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]

#: A JSON object. Any: its values are JSONValues that readers index without narrowing (see above).
JSONDict: TypeAlias = dict[str, Any]

#: A transformers image processor of any family. Any: no base declares the settings read from it.
ImageProcessor: TypeAlias = Any

__all__ = ["ImageProcessor", "JSONDict", "JSONValue"]
