"""Prototype class consistency: do a channel's prototypes come from one class?

For channel c with prototypes ``x_1 .. x_N`` and labels ``y(x_i)``, consistency is the share of
them that carry the channel's most common label, ``max_y |{i : y(x_i) = y}| / N``, averaged over
channels. It is the label-level counterpart of purity, in the spirit of the class-consistency
checks of prototype networks (ProtoPNet and its evaluations): a channel whose prototypes span
classes is a concept shared between classes, or no concept. Labels are read by sample key from
the dataset's label column (its ``label`` ClassLabel by default) by the data layer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch

from ..data import ImageSource


def lookup_labels(source: ImageSource, keys: Iterable[int]) -> dict[int, Any]:
    """The label of each sample key (:meth:`ImageSource.labels`, the data layer's one reader of labels)."""
    if source.label_column is None:
        raise ValueError("class consistency needs a label column")
    return source.labels(keys)


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
