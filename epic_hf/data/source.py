"""An image dataset read in key order: (sample key, RGB image) batches out, the unreadable ones skipped.

Images are read undecoded (``Image(decode=False)``) and decoded here, so that one corrupt
file is counted and skipped instead of killing a long run.

Sample keys name the same example whatever the number of processes: the row index of a
map-style dataset; for a stream, the example's position in the unshuffled stream, or the
value of ``key_column`` when one is given.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image

from ..aliases import JSONDict
from ..errors import UnreadableImageError
from ..images import to_rgb

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

#: Rows of the label column read at a time from a stream or a keyed table.
_LABEL_BLOCK = 4096


@dataclass
class SkippedSamples:
    """Samples that could not be decoded: counted, logged by key, reported in the FitReport."""

    keys: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, key: int, reason: str) -> None:
        self.keys.append(int(key))
        self.reasons.append(reason)
        logger.warning("skipping sample %s: %s", key, reason)

    def __len__(self) -> int:
        return len(self.keys)

    def decode(self, key: int, record: object) -> Image.Image | None:
        """The decoded image, or None after counting ``key`` as skipped with the reason."""
        try:
            return to_rgb(record, key)
        except UnreadableImageError as error:
            self.add(key, error.reason)
            return None


class Batch(NamedTuple):
    """Decoded images with their sample keys, and how many records had been read when it was full."""

    keys: list[int]
    images: list[Image.Image]
    consumed: int


@dataclass
class ImageSource:
    """A dataset with a known image column, readable in key order by any process."""

    dataset: datasets.Dataset | datasets.IterableDataset
    image_column: str
    key_column: str | None = None
    label_column: str | None = None
    name: str | None = None
    split: str | None = None
    revision: str | None = None
    #: Where relative paths in the image column are found (a CSV or JSON-lines file's folder).
    path_root: Path | None = None

    @property
    def streaming(self) -> bool:
        import datasets

        return isinstance(self.dataset, datasets.IterableDataset)

    def __len__(self) -> int:
        if self.streaming:
            raise TypeError("a streaming dataset has no length")
        return len(self.dataset)

    def describe(self) -> JSONDict:
        return {k: v for k, v in {"name": self.name, "split": self.split, "revision": self.revision,
                                  "image_column": self.image_column, "key_column": self.key_column,
                                  "streaming": self.streaming}.items() if v is not None}

    def fingerprint(self) -> str:
        """Identifies the data for checkpoints: the arrow fingerprint, or what names a stream.

        A stream has no fingerprint of its own: it is its name with its split and revision (a Hub
        dataset's commit, see ``resolve._load_hub``), so that the same Hub id at another commit, or
        another split, is other data, and a checkpoint of one is not resumed on the other.
        """
        arrow = getattr(self.dataset, "_fingerprint", None)
        return str(arrow) if arrow else repr(self.describe())

    # -- reading ---------------------------------------------------------------------------
    def _columns(self) -> list[str]:
        return [self.image_column] + ([self.key_column] if self.key_column else [])

    def records(self, rank: int = 0, world_size: int = 1) -> Iterator[tuple[int, object]]:
        """(key, undecoded image record) for this process's disjoint share of the data."""
        if not self.streaming:
            count = len(self.dataset)
            start, stop = count * rank // world_size, count * (rank + 1) // world_size
            rows = self.dataset.select_columns(self._columns()).select(range(start, stop))
            position = start
            for block in rows.iter(batch_size=256):  # columnar reads: far faster than row by row
                for offset, record in enumerate(block[self.image_column]):
                    example = {name: block[name][offset] for name in block}
                    yield self._key(example, position), self._record(record)
                    position += 1
            return
        if self.key_column is not None:
            from datasets.distributed import split_dataset_by_node

            # Keys come from the data, so each process may read whole shards of its own.
            stream = self.dataset
            if world_size > 1:
                stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
            for example in stream.select_columns(self._columns()):
                yield self._key(example, None), self._record(example[self.image_column])
            return
        # Positions must be global: every process walks the stream, keeping every k-th example.
        stream = self.dataset.select_columns(self._columns())
        for position, example in itertools.islice(enumerate(stream), rank, None, world_size):
            yield position, self._record(example[self.image_column])

    def _record(self, record: object) -> object:
        """An image record as the decoder reads it: a path or raw bytes becomes a ``{"path", "bytes"}`` record,
        a relative path found under :attr:`path_root`."""
        if isinstance(record, (bytes, bytearray)):
            return {"bytes": bytes(record), "path": None}
        if isinstance(record, str):
            path = Path(record).expanduser()
            if not path.is_absolute() and self.path_root is not None:
                path = self.path_root / path
            return {"bytes": None, "path": str(path)}
        return record

    def _key(self, example: dict, position: int | None) -> int:
        if self.key_column is None:
            return int(position)  # type: ignore[arg-type]
        value = example[self.key_column]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(
                f"key_column {self.key_column!r} must hold integers (sample keys are int64), got "
                f"{type(value).__name__} {value!r}"
            )
        return value

    def batches(self, batch_size: int, skipped: SkippedSamples, rank: int = 0, world_size: int = 1,
                start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Decoded batches of this process's share of records ``start:stop``; the unreadable go to ``skipped``.

        The one batch loop of the fit and the evaluation. Records before ``start`` are not decoded
        (a resumed evaluation skips what it has seen). A batch is yielded when it holds
        ``batch_size`` images, and once more at the end if any record was read since the last
        one, even if all of them were unreadable (then ``keys`` is empty), so that
        :attr:`Batch.consumed` always reaches the number of records read.
        """
        keys: list[int] = []
        images: list[Image.Image] = []
        position = yielded = start
        for key, record in itertools.islice(self.records(rank, world_size), start, stop):
            position += 1
            image = skipped.decode(key, record)
            if image is None:
                continue
            keys.append(key)
            images.append(image)
            if len(keys) == batch_size:
                yield Batch(keys, images, position)
                keys, images, yielded = [], [], position
        if keys or position > yielded:
            yield Batch(keys, images, position)

    def iter_named_images(self, keys: Iterable[int]) -> Iterator[tuple[int, Image.Image, str | None]]:
        """(key, decoded image, display name) for the given keys, one at a time, in dataset order.

        Random access for map-style data; one pass (stopping after the last key) for streams
        and key columns. Callers batch as they go, so memory holds a batch, not every image.
        The name is the image's file name (with its label, when there is a label column), else
        the label, else None.
        """
        wanted = sorted(set(int(k) for k in keys))
        for key, example in self._examples(wanted):
            record = self._record(example[self.image_column])
            yield key, to_rgb(record, key), self._name(record, example, key)

    def iter_images(self, keys: Iterable[int]) -> Iterator[tuple[int, Image.Image]]:
        """(key, decoded image) for the given keys (see :meth:`iter_named_images`)."""
        for key, image, _ in self.iter_named_images(keys):
            yield key, image

    def _name(self, record: object, example: dict, key: int) -> str | None:
        """The file name (with the label), else the label and the key: what a caption should say."""
        path = record.get("path") if isinstance(record, dict) else None
        label = self._label_name(example.get(self.label_column)) if self.label_column else None
        if path:
            return Path(str(path)).name if label is None else f"{Path(str(path)).name} ({label})"
        return None if label is None else f"{label} #{key}"

    def _label_name(self, value: object) -> str | None:
        if value is None:
            return None
        feature = (self.dataset.features or {}).get(self.label_column)
        if isinstance(value, int) and feature is not None and hasattr(feature, "int2str"):
            return str(feature.int2str(value))
        return str(value)

    def _examples(self, wanted: list[int]) -> Iterator[tuple[int, dict]]:
        """(key, example with the image and label columns) for sorted ``wanted`` keys."""
        if not wanted:
            return
        columns = [self.image_column] + ([self.label_column] if self.label_column else [])
        if not self.streaming and self.key_column is None:
            rows = self.dataset.select_columns(columns).select(wanted)
            position = 0
            for block in rows.iter(batch_size=256):  # columnar reads: far faster than row by row
                for offset in range(len(block[self.image_column])):
                    yield wanted[position], {name: block[name][offset] for name in block}
                    position += 1
            return
        remaining = set(wanted)
        stream = self.dataset.select_columns(columns + ([self.key_column] if self.key_column else []))
        for position, example in enumerate(stream):
            key = self._key(example, position)
            if key in remaining:
                yield key, example
                remaining.discard(key)
                if not remaining:
                    return
        raise KeyError(f"{len(remaining)} sample keys were not found in the dataset, e.g. {sorted(remaining)[:5]}")

    def labels(self, keys: Iterable[int]) -> dict[int, object]:
        """The label column's value for each sample key (:meth:`column`); keys not in the data are left out."""
        if self.label_column is None:
            raise ValueError("reading labels needs a label column (pass label_column=...)")
        return self.column(self.label_column, keys)

    def column(self, column: str, keys: Iterable[int] | None = None) -> dict[int, object]:
        """``column``'s value for each sample key (for every sample when ``keys`` is None), reading only that column:
        random access for a table, one pass over the column(s) for a stream or a key column. Keys not in the
        data are left out."""
        wanted = None if keys is None else sorted({int(k) for k in keys})
        if wanted is not None and not wanted:
            return {}
        if not self.streaming and self.key_column is None:
            rows = len(self.dataset)
            present = list(range(rows)) if wanted is None else [k for k in wanted if 0 <= k < rows]
            return dict(zip(present, self.dataset.select_columns([column]).select(present)[column]))
        columns = [column] + ([self.key_column] if self.key_column else [])
        remaining, found, position = set(wanted or ()), {}, 0
        for block in self.dataset.select_columns(columns).iter(batch_size=_LABEL_BLOCK):
            values = block[column]
            names = block[self.key_column] if self.key_column else range(position, position + len(values))
            position += len(values)
            for key, value in zip(names, values):
                if wanted is None or key in remaining:
                    found[int(key)] = value
                    remaining.discard(key)
            if wanted is not None and not remaining:
                break
        return found

    def fetch(self, keys: Iterable[int]) -> dict[int, Image.Image]:
        """Decoded images of the given keys, all at once (for a few images)."""
        return dict(self.iter_images(keys))
