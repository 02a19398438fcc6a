"""Purity of sets of (channel, prototype) pairs, in one pass over their images, and a check of the bank's.

Purity is the EPIC paper's, scored by the loop the fit reports with
(``epic_hf.disentangle.purity_of_pairs``). Every pair set (the bank's own prototypes, and the top-N mined on the
evaluated data under U and under the identity) is scored in the same pass over the union of
their images, one batch of feature maps in memory at a time: a stream is read once, not once
per set or per chunk.

The bank names its prototypes by sample key, which means something only in the dataset the bank
was fit on. So each bank prototype image, as the model sees it, is compared with the bank's own
thumbnail of it (by the bank's one rule, :meth:`PrototypeBank.matching_key`); a dataset whose
images do not match is not used for the bank's numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ..backbone import FrozenClassifier
from ..bank import PrototypeBank
from ..data import ImageSource
from ..disentangle import purity_of_pairs
from ..progress import progress_bar

_PAIR_BYTES = 2**27  # feature maps gathered per purity call


@dataclass
class PairSet:
    """(channel, prototype) pairs: ``keys`` (D, n) of channel c's prototypes, scored under ``U``."""

    name: str
    keys: torch.Tensor
    U: torch.Tensor
    orthogonal: bool


@dataclass
class PassResult:
    """Mean purity per set (None when it has no pairs), which bank images match their thumbnails, keys not found."""

    purity: dict[str, float | None] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)
    thumbnail_matches: dict[int, bool] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)


def prototype_pass(classifier: FrozenClassifier, source: ImageSource, sets: list[PairSet], batch_size: int,
                   bank: PrototypeBank | None = None) -> PassResult:
    """Score every set's pairs; with ``bank``, also measure how far its prototype images are from its thumbnails."""
    wanted: dict[int, list[tuple[int, int]]] = {}
    for index, pair_set in enumerate(sets):
        for channel, row in enumerate(pair_set.keys.tolist()):
            for key in row:
                wanted.setdefault(int(key), []).append((index, channel))
    bank_keys = set(bank.sample_keys.reshape(-1).tolist()) if bank is not None else set()
    result = PassResult()
    keys = sorted(wanted)
    if not source.streaming and source.key_column is None:  # rows out of range are not in this dataset
        result.missing = {k for k in keys if not 0 <= k < len(source)}
        keys = [k for k in keys if k not in result.missing]
    sums, counts = [0.0] * len(sets), [0] * len(sets)
    batch: list[tuple[int, Image.Image]] = []
    bar = progress_bar(total=len(keys), desc="EPIC evaluation: prototypes", unit="img")
    for key, image in _found(source, keys, result.missing):
        batch.append((key, image))
        if len(batch) == batch_size:
            _score(classifier, batch, wanted, sets, sums, counts, result, bank, bank_keys)
            bar.update(len(batch))
            batch = []
    if batch:
        _score(classifier, batch, wanted, sets, sums, counts, result, bank, bank_keys)
        bar.update(len(batch))
    bar.close()
    for index, pair_set in enumerate(sets):
        result.purity[pair_set.name] = sums[index] / counts[index] if counts[index] else None
        result.pairs[pair_set.name] = counts[index]
    return result


def _found(source: ImageSource, keys: list[int], missing: set[int]) -> Iterator[tuple[int, Image.Image]]:
    """The images of ``keys``; keys a stream turns out not to hold go to ``missing``."""
    seen: set[int] = set()
    try:
        for key, image in source.iter_images(keys):
            seen.add(key)
            yield key, image
    except KeyError:
        missing.update(set(keys) - seen)


def _score(classifier: FrozenClassifier, batch: list[tuple[int, Image.Image]],
           wanted: dict[int, list[tuple[int, int]]], sets: list[PairSet], sums: list[float], counts: list[int],
           result: PassResult, bank: PrototypeBank | None, bank_keys: set[int]) -> None:
    pixel_values = classifier.preprocess([image for _, image in batch])
    fmap = classifier.feature_map(pixel_values)
    per_set: list[tuple[list[int], list[int]]] = [([], []) for _ in sets]
    for position, (key, _) in enumerate(batch):
        for index, channel in wanted[key]:
            per_set[index][0].append(position)
            per_set[index][1].append(channel)
        if bank is not None and key in bank_keys:
            picture = classifier.to_image(pixel_values[position])
            result.thumbnail_matches[key] = bank.matching_key(picture, [key]) == key
    chunk = max(1, _PAIR_BYTES // (fmap[0].numel() * fmap.element_size()))
    for index, (positions, channels) in enumerate(per_set):
        purity, _ = purity_of_pairs(lambda rows: fmap[rows], positions, channels, sets[index].U, sets[index].orthogonal,
                                    chunk)
        sums[index] += float(purity.double().sum())
        counts[index] += len(positions)


def bank_matches(result: PassResult, bank: PrototypeBank, source: ImageSource | None = None) -> tuple[bool, str]:
    """Whether the dataset holds the bank's prototype images under the bank's keys, and why not.

    When some keys are missing, the reason says what the others matched by: without a key
    column a map-style dataset's keys are its row indices, so a smaller dataset "holds" every key
    below its length whatever images those rows are. Saying only "62 of 68 keys are not in this
    dataset" hid that the other 6 matched by row index alone, and how many of those images look
    like the bank's thumbnails of them.
    """
    keys = set(bank.sample_keys.reshape(-1).tolist())
    absent = keys & result.missing
    if absent:
        by_row = source is not None and not source.streaming and source.key_column is None
        if by_row and source is not None:
            why = (f"{len(absent)} of the bank's {len(keys)} prototype keys are not rows of this dataset (without "
                   f"key_column a key is a row index, and it has {len(source)} rows)")
        else:
            why = f"{len(absent)} of the bank's {len(keys)} prototype keys are not found in this dataset by key"
        found = keys - absent
        if found:
            alike = sum(result.thumbnail_matches.get(key, False) for key in found)
            why += (f"; {len(found)} matched by {'row index' if by_row else 'key'} only, and {alike} of those images "
                    "look like the bank's thumbnails of them")
        return False, why
    far = [k for k in keys if not result.thumbnail_matches.get(k, False)]
    if far:
        return False, (f"{len(far)} of the bank's {len(keys)} prototype images differ from the bank's thumbnails "
                       "of them: this is not the dataset the bank was fit on")
    return True, ""


def describe(result: PassResult) -> dict[str, Any]:
    matches = list(result.thumbnail_matches.values())
    return {"thumbnails_checked": len(matches), "thumbnails_matched": sum(matches)}
