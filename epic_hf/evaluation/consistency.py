"""Prototype class consistency: do a channel's prototypes come from one class?

For channel c with prototypes ``x_1 .. x_N`` and labels ``y(x_i)``, consistency is the share of
them that carry the channel's most common label, ``max_y |{i : y(x_i) = y}| / N``, averaged over
channels. It is the label-level counterpart of purity, in the spirit of the class-consistency
checks of prototype networks (ProtoPNet and its evaluations): a channel whose prototypes span
classes is a concept shared between classes, or no concept. Labels are read by sample key from
the dataset's label column (its ``label`` ClassLabel by default), reading only that column.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch

from ..data import ImageSource

_BLOCK = 4096


def lookup_labels(source: ImageSource, keys: Iterable[int]) -> dict[int, Any]:
    """The label of each sample key: random access for a table, one pass over the column(s) for a stream."""
    if source.label_column is None:
        raise ValueError("class consistency needs a label column")
    return lookup_column(source, source.label_column, keys)


def lookup_column(source: ImageSource, column: str, keys: Iterable[int] | None) -> dict[int, Any]:
    """The value of ``column`` for each sample key (for every key when ``keys`` is None), reading only that column.

    Random access for a table; one pass over the column(s) for a stream or a key column.
    """
    dataset = source.dataset
    wanted = None if keys is None else sorted({int(k) for k in keys})
    if wanted is not None and not wanted:
        return {}
    if not source.streaming and source.key_column is None:
        present = list(range(len(dataset))) if wanted is None else [k for k in wanted if 0 <= k < len(dataset)]
        return dict(zip(present, dataset.select_columns([column]).select(present)[column]))
    columns = [column] + ([source.key_column] if source.key_column else [])
    remaining, values, position = set(wanted or ()), {}, 0
    for block in dataset.select_columns(columns).iter(batch_size=_BLOCK):
        found = block[column]
        names = block[source.key_column] if source.key_column else range(position, position + len(found))
        position += len(found)
        for key, value in zip(names, found):
            if wanted is None or key in remaining:
                values[int(key)] = value
                remaining.discard(key)
        if wanted is not None and not remaining:
            break
    return values


def class_consistency(keys: torch.Tensor, labels: dict[int, Any]) -> dict[str, Any]:
    """Mean over channels of the share of a channel's labelled prototypes in its most common class."""
    shares = []
    for row in keys.tolist():
        found = [_hashable(labels[k]) for k in row if labels.get(k) is not None]
        if found:
            shares.append(Counter(found).most_common(1)[0][1] / len(found))
    return {"class_consistency": sum(shares) / len(shares) if shares else None, "channels": len(shares),
            "prototypes_per_channel": keys.shape[1] if keys.ndim == 2 else 0}


def _hashable(label: Any) -> Any:
    """A multi-label list counts as one label (its tuple)."""
    return tuple(label) if isinstance(label, list) else label
