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
    column = source.label_column
    if column is None:
        raise ValueError("class consistency needs a label column")
    wanted = sorted({int(k) for k in keys})
    if not wanted:
        return {}
    dataset = source.dataset
    if not source.streaming and source.key_column is None:
        present = [k for k in wanted if 0 <= k < len(dataset)]
        return dict(zip(present, dataset.select_columns([column]).select(present)[column]))
    columns = [column] + ([source.key_column] if source.key_column else [])
    remaining, labels, position = set(wanted), {}, 0
    for block in dataset.select_columns(columns).iter(batch_size=_BLOCK):
        values = block[column]
        names = block[source.key_column] if source.key_column else range(position, position + len(values))
        position += len(values)
        for key, label in zip(names, values):
            if key in remaining:
                labels[int(key)] = label
                remaining.discard(key)
        if not remaining:
            break
    return labels


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
